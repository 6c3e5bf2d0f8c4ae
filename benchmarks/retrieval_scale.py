"""Vector retrieval at scale: single-query latency p50/p99 and recall@10 against exact search, at 10k, 100k and
1M chunks, without and with an ACL filter that allows 10% of the chunks, for Groundwork's index
(IndexIDMap2(IndexFlatIP), the ACL inside the search via an IDSelectorBatch, as IndexReader.search does) and for
the approximate alternatives HNSW (IndexHNSWFlat, M=32) and IVF (IndexIVFFlat, nlist ~ 4*sqrt(N)), each with the
same selector. Also build time and memory per index type. One query at a time, 1 FAISS thread.

    python benchmarks/retrieval_scale.py --index IDX --qa ../shared/data/python-docs/qa.jsonl [--quick]
        [--sizes 10000,100000,1000000] [--ef-search 64,256] [--nprobe 16,64] [--approx-max N] [--noise 0.03]

With --milvus-sizes, the same vectors also go into a Milvus Lite collection made by ingest/milvus_store.py
(FLAT/IP, the schema Groundwork's Milvus store writes: every query filtered by generation, the ACL as
`acl in [group-set ids]`) and, for comparison, the same ACL as `array_contains_any(groups, [...])`. Milvus Lite
runs its server in threads of this process, so its CPU column is process CPU time.

IDX is a real index of the Python docs, built with `groundwork ingest ../shared/data/python-docs/html --index IDX`
(12,005 MiniLM chunks). Its vectors are read through ingest.reader.IndexReader (chunk_ids, vectors_for). Sizes
above the real count are the real vectors plus copies with Gaussian noise (--noise, per dimension), re-normalised.
The queries are the real questions of qa.jsonl, embedded with the project's Embedder.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import faiss
import numpy as np

K = 10


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def index_mb(index: faiss.Index) -> float:
    """What the index holds in memory (and writes to disk): vectors, ids, graph links or centroids. The
    IndexIDMap2 reverse map (a hash map, rebuilt on load, ~40-60 bytes per id) is not counted."""
    size = 0
    if isinstance(index, faiss.IndexIDMap2):
        size += index.id_map.size() * 8
        index = faiss.downcast_index(index.index)
    size += index.ntotal * index.d * 4
    if isinstance(index, faiss.IndexHNSW):
        hnsw = index.hnsw
        size += hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4
    elif isinstance(index, faiss.IndexIVF):
        size += index.ntotal * 8 + index.nlist * index.d * 4  # ids in the lists, centroids
    return size / 2**20


def ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def real_vectors(index_dir: Path) -> np.ndarray:
    from ingest.reader import IndexReader

    reader = IndexReader(index_dir)
    try:
        ids = sorted(reader.chunk_ids())  # every published chunk, in id order
        if not ids:
            sys.exit(f"{index_dir}: the index holds no chunks")
        vectors = reader.vectors_for(ids)
    finally:
        reader.close()
    return np.ascontiguousarray(vectors, dtype=np.float32)


def query_vectors(qa: Path) -> tuple[np.ndarray, float]:
    import torch

    from ingest.embedding import Embedder

    torch.set_num_threads(1)
    questions = [json.loads(line)["question"] for line in qa.read_text().splitlines() if line.strip()]
    started = time.perf_counter()
    vectors = Embedder(device="cpu").encode(questions)
    return vectors, time.perf_counter() - started


def dataset(real: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    """n unit vectors: a random subset of the real ones if n <= len(real), else all of them plus noisy copies."""
    rng = np.random.default_rng(seed)
    if n <= len(real):
        return np.ascontiguousarray(real[np.sort(rng.choice(len(real), n, replace=False))])
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    out[: len(real)] = real
    for start in range(len(real), n, 100_000):  # in blocks: no second full-size temporary
        stop = min(n, start + 100_000)
        block = real[rng.integers(0, len(real), stop - start)]
        block += noise * rng.standard_normal(block.shape, dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    hits = [len(set(f[f >= 0]) & set(e[e >= 0])) / max(1, min(K, int((e >= 0).sum()))) for f, e in zip(found, exact)]
    return float(np.mean(hits))


def time_queries(index, queries: np.ndarray, runs: int, warmup: int, params) -> tuple[list[float], list[float]]:
    """Wall-clock and this thread's CPU ms per single query (CPU time does not count waiting for a busy core)."""
    for i in range(warmup):
        index.search(queries[i % len(queries)][None], K, params=params)
    wall, cpu = [], []
    for i in range(runs):
        q = queries[i % len(queries)][None]
        started, cpu_started = time.perf_counter(), time.thread_time()
        index.search(q, K, params=params)
        cpu.append((time.thread_time() - cpu_started) * 1000)
        wall.append((time.perf_counter() - started) * 1000)
    return wall, cpu


def build(kind: str, xb: np.ndarray, args) -> tuple[faiss.Index, float, float, str]:
    """Build one index type over xb (ids 0..n-1); returns (index, build seconds, index MB, description)."""
    n, d = xb.shape
    ids = np.arange(n, dtype=np.int64)
    started = time.perf_counter()
    if kind == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))  # what ingest.store writes
        index.add_with_ids(xb, ids)
        desc = "IDMap2(FlatIP)"
    elif kind == "hnsw":
        inner = faiss.IndexHNSWFlat(d, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = args.ef_construction
        index = faiss.IndexIDMap2(inner)  # HNSW has no ids of its own
        index.add_with_ids(xb, ids)
        desc = f"IDMap2(HNSWFlat M={args.hnsw_m}, efC={args.ef_construction})"
    else:
        nlist = max(1, int(round(4 * math.sqrt(n))))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = min(n, args.ivf_train_per_list * nlist)
        train = xb if sample == n else xb[np.sort(np.random.default_rng(1).choice(n, sample, replace=False))]
        index.train(train)
        del train
        index.add_with_ids(xb, ids)
        desc = f"IVFFlat nlist={nlist} (trained on {sample:,})"
    seconds = time.perf_counter() - started
    return index, seconds, index_mb(index), desc


def search_params(kind: str, value: int | None, sel):
    if kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=value, sel=sel) if sel else faiss.SearchParametersHNSW(efSearch=value)
    if kind == "ivf":
        return faiss.SearchParametersIVF(nprobe=value, sel=sel) if sel else faiss.SearchParametersIVF(nprobe=value)
    return faiss.SearchParameters(sel=sel) if sel else None


def milvus_rows(n: int, xb: np.ndarray, allowed: np.ndarray, queries: np.ndarray, exact: dict[bool, np.ndarray],
                flat_p50: dict[bool, float], runs: int, warmup: int, array_runs: int,
                folder: Path) -> tuple[list, tuple]:
    """Rows of the latency table for Milvus Lite over xb (chunk ids 0..n-1), and (n, desc, build s, MB, MB)."""
    from tqdm import tqdm

    from ingest.milvus_store import MilvusVectors, acl_id, connect

    folder.mkdir(parents=True, exist_ok=True)
    db = folder / f"bench-{n}.db"
    for old in folder.glob(f"bench-{n}.db*"):
        import shutil

        shutil.rmtree(old) if old.is_dir() else old.unlink()
    store = MilvusVectors(connect(f"milvus://{db}"), "bench", folder)
    store.create(xb.shape[1])
    mask = np.zeros(n, dtype=bool)
    mask[allowed] = True
    ids = np.arange(n, dtype=np.int64)
    started = time.perf_counter()
    for start in tqdm(range(0, n, 20_000), desc=f"Milvus Lite insert {n:,}", leave=False):
        stop = min(n, start + 20_000)
        store.insert(ids[start:stop], xb[start:stop], [("allowed",) if m else ("other",) for m in mask[start:stop]], 1)
    store.client.flush("bench")
    store.client.load_collection("bench")
    build_s = time.perf_counter() - started
    files = list(db.rglob("*")) if db.is_dir() else [db]
    mb = sum(f.stat().st_size for f in files if f.is_file()) / 2**20

    def one(q: np.ndarray, filtered: bool, expression: str | None) -> list[int]:
        if expression is None:
            hits = store.search(q[None], K, 1, [acl_id(("allowed",))] if filtered else None)[0]
            return [h.chunk_id for h in hits]
        rows = store.client.search("bench", data=[q.tolist()], limit=K, filter=expression, output_fields=["chunk"],
                                   search_params={"metric_type": "IP"})[0]
        return [int(h["entity"]["chunk"]) for h in rows]

    rows = []
    variants = [(False, None, "Milvus Lite FLAT"), (True, None, "Milvus Lite FLAT, acl in [ids] (partition key)")]
    if array_runs:
        variants.append((True, 'gen_from <= 1 and gen_to > 1 and array_contains_any(groups, ["allowed"])',
                         "Milvus Lite FLAT, array_contains_any"))
    unfiltered_p50 = None
    for filtered, expression, name in variants:
        count = runs if expression is None else min(runs, array_runs)
        for i in range(min(warmup, count if expression is None else 1)):  # one warm-up for the slow filter
            one(queries[i % len(queries)], filtered, expression)
        wall, cpu, found = [], [], []
        for i in range(count):
            q = queries[i % len(queries)]
            started, cpu_started = time.perf_counter(), time.process_time()
            got = one(q, filtered, expression)
            cpu.append((time.process_time() - cpu_started) * 1000)
            wall.append((time.perf_counter() - started) * 1000)
            if i < len(queries):
                found.append(got + [-1] * (K - len(got)))
        p50 = statistics.median(wall)
        if not filtered:
            unfiltered_p50 = p50
        rec = recall(np.array(found), exact[filtered][:len(found)])
        rows.append((n, name, f"{len(allowed) / n:.0%}" if filtered else "all", p50, percentile(wall, 0.99),
                     percentile(wall, 0.10), percentile(wall, 0.90), statistics.median(cpu), p50 / flat_p50[filtered],
                     p50 / unfiltered_p50 if filtered else None, rec, count))
        print(f"# {n:,} {name}: p50 {p50:.1f} ms, recall {rec:.3f}", file=sys.stderr, flush=True)
    store.client.drop_collection("bench")
    store.close()
    return rows, (n, "Milvus Lite FLAT (insert + flush + load)", build_s, xb.nbytes / 2**20, mb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="a Groundwork index of the Python docs")
    parser.add_argument("--qa", type=Path, required=True, help="qa.jsonl: its questions are the queries")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--allow", type=float, default=0.10, help="fraction of ids the ACL filter allows")
    parser.add_argument("--noise", type=float, default=0.03, help="std of the Gaussian noise per dimension on copies")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument("--ef-search", default="64,256", help="HNSW efSearch values, comma-separated")
    parser.add_argument("--nprobe", default="16,64", help="IVF nprobe values, comma-separated")
    parser.add_argument("--ivf-train-per-list", type=int, default=64, help="k-means sample = this x nlist")
    parser.add_argument("--approx-max", type=int, default=None,
                        help="largest size at which HNSW and IVF are built (default: all; 100000 with --quick)")
    parser.add_argument("--runs", type=int, default=None, help="timed queries per cell up to 100k (default 348)")
    parser.add_argument("--runs-1m", type=int, default=None, help="timed queries per cell above 100k (default 174)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="200/100 timed queries; HNSW and IVF only up to 100k")
    parser.add_argument("--milvus-sizes", default="", help="sizes (of --sizes) also measured in Milvus Lite")
    parser.add_argument("--milvus-dir", type=Path, default=Path("/tmp/groundwork-milvus-bench"),
                        help="where the Milvus Lite files go (deleted and rebuilt per size)")
    parser.add_argument("--milvus-array-runs", type=int, default=10,
                        help="timed queries for the slow array_contains_any filter")
    parser.add_argument("--milvus-array-max", type=int, default=100_000,
                        help="largest size at which the array_contains_any filter is timed (~14 s a query at 100k)")
    args = parser.parse_args()
    runs = args.runs or (200 if args.quick else 348)
    runs_big = args.runs_1m or (100 if args.quick else 174)
    approx_max = args.approx_max or (100_000 if args.quick else 10**12)
    faiss.omp_set_num_threads(1)
    total_started = time.perf_counter()
    load_start = os.getloadavg()[0]

    real = real_vectors(args.index)
    queries, embed_s = query_vectors(args.qa)
    sample = dataset(real, min(len(real), 2000), 0.0, args.seed)
    near = faiss.knn(sample, real, 2, metric=faiss.METRIC_INNER_PRODUCT)[0][:, 1]
    copy = sample + args.noise * np.random.default_rng(args.seed).standard_normal(sample.shape, dtype=np.float32)
    copy /= np.linalg.norm(copy, axis=1, keepdims=True)
    copy_cos = float(np.median((copy * sample).sum(1)))
    affinity = len(os.sched_getaffinity(0))
    print(f"# {os.cpu_count()} cores ({affinity} usable by this process), faiss threads 1; faiss {faiss.__version__}, "
          f"numpy {np.__version__}, torch {version('torch')}, sentence-transformers {version('sentence-transformers')}")
    print(f"# {args.index}: {len(real):,} real chunks, {real.shape[1]}-dim; {len(queries)} queries = the questions of "
          f"{args.qa.name} embedded with the project's Embedder (all-MiniLM-L6-v2, 1 thread: {embed_s:.1f} s)")
    print(f"# above {len(real):,}: the real vectors plus copies + N(0, {args.noise}^2) per dimension, re-normalised "
          f"(cosine copy-source median {copy_cos:.2f}; real chunk to its nearest real neighbour {np.median(near):.2f})")
    print(f"# ACL: a random {args.allow:.0%} of ids allowed (seed {args.seed}), applied inside the search with "
          f"IDSelectorBatch; recall@{K} is against exact flat search with the same filter")
    print(f"# timed single queries per cell: {runs} up to 100k, {runs_big} above (questions cycled), "
          f"after {args.warmup} warm-up; k={K}")
    if approx_max < max(ints(args.sizes)):
        print(f"# HNSW and IVF built only up to {approx_max:,} chunks (--quick or --approx-max): their single-thread "
              f"build at 1M takes minutes (see the full run)")
    del sample, copy

    rows, builds, selectors = [], [], []
    for n in ints(args.sizes):
        xb = dataset(real, n, args.noise, args.seed)
        allowed = np.sort(np.random.default_rng(args.seed + 1).choice(n, max(1, int(n * args.allow)), replace=False))
        allowed = allowed.astype(np.int64)
        # the selector, built as IndexReader.search builds it (it caches only the allowed id array)
        build_ms, build_cpu_ms = [], []
        for _ in range(10):
            started, cpu_started = time.perf_counter(), time.thread_time()
            faiss.IDSelectorBatch(allowed)
            build_cpu_ms.append((time.thread_time() - cpu_started) * 1000)
            build_ms.append((time.perf_counter() - started) * 1000)
        bitmap_ms = []
        for _ in range(10):
            started = time.perf_counter()
            mask = np.zeros(n, dtype=bool)
            mask[allowed] = True
            bits = np.packbits(mask, bitorder="little")
            faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
            bitmap_ms.append((time.perf_counter() - started) * 1000)
        sel = faiss.IDSelectorBatch(allowed)
        n_runs = runs if n <= 100_000 else runs_big

        kinds = ["flat"] + (["hnsw", "ivf"] if n <= approx_max else [])
        exact: dict[bool, np.ndarray] = {}
        flat_p50: dict[bool, float] = {}
        for kind in kinds:
            index, seconds, memory, desc = build(kind, xb, args)
            builds.append((n, desc, seconds, xb.nbytes / 2**20, memory))
            print(f"# {n:,} {desc}: built in {seconds:.0f} s", file=sys.stderr, flush=True)  # progress
            values = {"flat": [None], "hnsw": ints(args.ef_search), "ivf": ints(args.nprobe)}[kind]
            for value in values:
                unfiltered_p50 = None
                for filtered in (False, True):
                    params = search_params(kind, value, sel if filtered else None)
                    found = index.search(queries, K, params=params)[1]  # all questions, for recall
                    if kind == "flat":
                        exact[filtered] = found
                    timings, cpu = time_queries(index, queries, n_runs, args.warmup, params)
                    p50 = statistics.median(timings)
                    if kind == "flat":
                        flat_p50[filtered] = p50
                    if not filtered:
                        unfiltered_p50 = p50
                    name = {"flat": "flat (Groundwork)", "hnsw": f"HNSW efSearch={value}",
                            "ivf": f"IVF nprobe={value}"}[kind]
                    rows.append((n, name, f"{args.allow:.0%}" if filtered else "all", p50, percentile(timings, 0.99),
                                 percentile(timings, 0.10), percentile(timings, 0.90), statistics.median(cpu),
                                 p50 / flat_p50[filtered], p50 / unfiltered_p50 if filtered else None,
                                 recall(found, exact[filtered]), n_runs))
                    print(f"# {n:,} {name} {'filtered' if filtered else 'all'}: p50 {p50:.2f} ms, CPU "
                          f"{statistics.median(cpu):.2f} ms, recall {rows[-1][10]:.3f}", file=sys.stderr, flush=True)
            del index
        if n in ints(args.milvus_sizes):
            more, built = milvus_rows(n, xb, allowed, queries, exact, flat_p50, n_runs, args.warmup,
                                      args.milvus_array_runs if n <= args.milvus_array_max else 0, args.milvus_dir)
            rows += more
            builds.append(built)
        selectors.append((n, len(allowed), statistics.median(build_ms), statistics.median(build_cpu_ms),
                          statistics.median(bitmap_ms), flat_p50[True]))
        del xb, sel

    print(f"\n| chunks | index | ACL | p50 ms | p99 ms | p10-p90 ms | CPU p50 ms | p50 / flat p50 | "
          f"filtered / all p50 | recall@{K} | queries |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for n, name, acl, p50, p99, p10, p90, cpu50, vs_flat, vs_all, rec, count in rows:
        print(f"| {n:,} | {name} | {acl} | {p50:.2f} | {p99:.2f} | {p10:.2f}-{p90:.2f} | {cpu50:.2f} | {vs_flat:.3f} | "
              f"{'' if vs_all is None else f'{vs_all:.2f}'} | {rec:.3f} | {count} |")

    print("\n| chunks | index | build s (1 thread) | vectors MB | index MB (vectors + ids + graph/centroids) | "
          "index / vectors |"
          "\n|---|---|---|---|---|---|")
    for n, desc, seconds, vec_mb, mem_mb in builds:
        print(f"| {n:,} | {desc} | {seconds:.1f} | {vec_mb:.0f} | {mem_mb:.0f} | {mem_mb / vec_mb:.2f} |")

    print("\n| chunks | allowed ids | IDSelectorBatch build ms (p50) | CPU ms | / flat filtered search p50 | "
          "IDSelectorBitmap build ms (p50) |\n|---|---|---|---|---|---|")
    for n, count, batch_ms, batch_cpu, bitmap_ms, search_ms in selectors:
        print(f"| {n:,} | {count:,} | {batch_ms:.2f} | {batch_cpu:.2f} | {batch_ms / search_ms:.2f} | {bitmap_ms:.2f} |")
    print("# IndexReader.search builds an IDSelectorBatch on every filtered query (it caches only the id array)")
    import resource

    print(f"\n# total {time.perf_counter() - total_started:.0f} s, peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GB; load average at start "
          f"{load_start:.2f}, at end {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
