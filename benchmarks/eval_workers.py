"""Evaluation throughput: 1 vs 2 workers (and torch threads) on the same questions, same process, warm model.

    python benchmarks/eval_workers.py --index DIR --qa FILE [--users FILE] [--split test] [-n 6]

Each configuration answers the same first N questions of the split in RAG mode into a fresh folder; prints a
markdown table of wall seconds and questions per minute. Generation dominates, so this measures how well two
generations share the machine's cores.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from eval.runner import EvalConfig, run_eval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--qa", type=Path, required=True)
    parser.add_argument("--users", type=Path, default=None)
    parser.add_argument("--split", default="test")
    parser.add_argument("-n", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=200)
    args = parser.parse_args()

    configs = [(1, 2), (1, 1), (2, 1)]  # (workers, torch threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        def run(workers: int, threads: int, out: str, limit: int) -> float:
            torch.set_num_threads(threads)
            config = EvalConfig(qa_file=args.qa, index_dir=args.index, out_dir=Path(tmp) / out, split=args.split,
                                users_file=args.users, workers=workers, limit=limit, progress=False,
                                max_new_tokens=args.max_new_tokens)
            started = time.perf_counter()
            run_eval(config)
            return time.perf_counter() - started

        run(1, 2, "warmup", 1)  # loads the model and the embedder once
        for workers, threads in configs:
            seconds = run(workers, threads, f"w{workers}t{threads}", args.n)
            rows.append((workers, threads, seconds))
            print(f"workers={workers} threads={threads}: {seconds:.1f}s", flush=True)
    load = os.getloadavg()
    print(f"\n{args.n} questions of {args.qa} ({args.split}), RAG, max_new_tokens={args.max_new_tokens}; "
          f"{os.cpu_count()} cores, load average at the end {load[0]:.1f}\n")
    print("| workers | torch threads each | wall s | questions/min |")
    print("|---|---|---|---|")
    for workers, threads, seconds in rows:
        print(f"| {workers} | {threads} | {seconds:.1f} | {60 * args.n / seconds:.1f} |")


if __name__ == "__main__":
    main()
