"""Engine latency on this machine: retrieval p50/p95 per index, and time to first token / tokens per second
for the default model in 4-bit vs bf16, with quoted vs free decoding, 5 retrieved passages in the prompt
(same questions, same run).

    python benchmarks/engine_latency.py --index DIR [--index DIR2] --qa FILE [--threads 1] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from app.engine import AnswerOptions, Engine, EngineConfig
from app.generator import GenerationOptions
from ingest.retrieval import RetrievalOptions
from app.users import User

USER = User("bench", "employee", ("everyone", "hr", "finance"))


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, action="append", required=True)
    parser.add_argument("--qa", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    questions = [json.loads(line)["question"] for line in args.qa.read_text().splitlines() if line.strip()]
    print(f"# {os.cpu_count()} cores, torch threads {args.threads}; torch {version('torch')}, "
          f"transformers {version('transformers')}, bitsandbytes {version('bitsandbytes')}, faiss {version('faiss-cpu')}")

    print("\n| index | chunks | retrieval p50 ms | p95 ms | runs |\n|---|---|---|---|---|")
    for index in args.index:
        engine = Engine(EngineConfig(index_dir=index))
        retriever = engine.retriever
        for q in questions[:5]:
            retriever.retrieve(q, set(USER.groups))  # warm-up, builds BM25
        runs = questions[: 40 if args.quick else 150]
        timings = []
        for q in runs:
            started = time.perf_counter()
            retriever.retrieve(q, set(USER.groups))
            timings.append((time.perf_counter() - started) * 1000)
        print(f"| {index} | {engine.reader.stats().chunks} | {statistics.median(timings):.1f} | "
              f"{percentile(timings, 0.95):.1f} | {len(runs)} |")

    print("\n| model | decoding | load s | first token s (p50) | tokens/s (p50) | min-max tokens/s | questions |\n"
          "|---|---|---|---|---|---|---|")
    gen_questions = questions[:3 if args.quick else 6]
    medians = {}
    for quantize, decoding in ((True, "quote"), (True, "free"), (False, "quote"), (False, "free")):
        # every question reaches the model: no relevance cut-offs, and the base model may not refuse
        options = AnswerOptions(retrieval=RetrievalOptions(top_k=5, min_score=-1.0), decoding=decoding,
                                min_quote_similarity=-1.0, quote_refusal_threshold=1.1,
                                generation=GenerationOptions(max_new_tokens=64), require_support=False)
        engine = Engine(EngineConfig(index_dir=args.index[0], quantize=quantize))
        started = time.perf_counter()
        generator = engine.generator
        load = time.perf_counter() - started
        list(engine.stream(questions[0], USER, options))  # warm-up
        first, rates = [], []
        for q in gen_questions:
            began = time.perf_counter()
            first_token = None
            pieces = []
            for item in engine.stream(q, USER, options):
                if isinstance(item, str):
                    first_token = first_token or time.perf_counter()
                    pieces.append(item)
                    end = time.perf_counter()  # last streamed piece: citation checks afterwards are not counted
            retrieved = item.retrieved
            tokens = generator.count_tokens(pieces[-1]) if pieces else 0
            first.append(first_token - began)
            rates.append(tokens / max(end - first_token, 1e-6))
        name = "4-bit NF4" if quantize else "bf16"
        medians[name, decoding] = (statistics.median(first), statistics.median(rates))
        print(f"| {name} | {decoding} | {load:.1f} | {statistics.median(first):.2f} | {statistics.median(rates):.1f} | "
              f"{min(rates):.1f}-{max(rates):.1f} | {len(gen_questions)} ({len(retrieved)} passages) |")
        from finetune.models import clear_model_cache

        if decoding == "free":
            clear_model_cache()
    for decoding in ("free", "quote"):
        (q_first, q_rate), (b_first, b_rate) = medians["4-bit NF4", decoding], medians["bf16", decoding]
        print(f"{decoding}: 4-bit / bf16: first token x{q_first / b_first:.2f}, tokens/s x{q_rate / b_rate:.2f}")
    for name in ("4-bit NF4", "bf16"):
        (q_first, q_rate), (f_first, f_rate) = medians[name, "quote"], medians[name, "free"]
        print(f"{name}: quote / free: first token x{q_first / f_first:.2f}, tokens/s x{q_rate / f_rate:.2f}")


if __name__ == "__main__":
    main()
