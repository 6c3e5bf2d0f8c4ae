"""What answer selection costs: time to the first visible answer text and to the finished answer, per question,
for the default `quote` (selected quote, the model scoring the best candidates) against `constrained` (the
previous default: the model writes the quote token by token) and selection without the model, on the same
questions, model and threads, in the same run.

    python benchmarks/answer_latency.py --index DIR --qa FILE [--adapter REF] [--threads 1] [--questions 8]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from app.engine import AnswerOptions, Engine, EngineConfig
from app.users import User

USER = User("bench", "employee", ("everyone", "hr", "finance"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--qa", type=Path, required=True)
    parser.add_argument("--adapter", default=None, help="adapter reference (default: the promoted one)")
    parser.add_argument("--adapters", type=Path, default=Path("groundwork-data/adapters"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--questions", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    items = [json.loads(line) for line in args.qa.read_text().splitlines() if line.strip()]
    questions = [i["question"] for i in items if i.get("answerable", True)][: args.questions]
    engine = Engine(EngineConfig(index_dir=args.index, adapter=args.adapter, adapters_dir=args.adapters))
    started = time.perf_counter()
    label = engine.generator_for(args.adapter)[1]
    print(f"# torch threads {args.threads}, {os.cpu_count()} cores; model loaded in {time.perf_counter() - started:.1f} s;"
          f" adapter {label or 'none'}; {len(questions)} questions from {args.qa}")
    modes = {"quote (selection; the model only if the weights use it)": AnswerOptions(decoding="quote"),
             "constrained (model writes the quote)": AnswerOptions(decoding="constrained")}
    rows = {}
    for name, options in modes.items():
        engine.answer(questions[0], USER, options)  # warm-up
        first, total, select = [], [], []
        for q in questions:
            answer = engine.answer(q, USER, options)
            total.append(answer.timings["total"])
            first.append(answer.timings.get("first_token", answer.timings["total"]))
            if "select" in answer.timings:
                select.append(answer.timings["select"])
        rows[name] = (statistics.median(first), statistics.median(total),
                      statistics.median(select) if select else None)
    print("\n| answer stage | first answer text p50 s | finished answer p50 s | selection p50 s |\n|---|---|---|---|")
    for name, (first, total, select) in rows.items():
        print(f"| {name} | {first:.2f} | {total:.2f} | {select:.2f} |" if select is not None else
              f"| {name} | {first:.2f} | {total:.2f} | - |")
    (sf, st, _), (cf, ct, _) = rows.values()
    print(f"\nselection / constrained: first text x{sf / cf:.2f}, finished answer x{st / ct:.2f}")


if __name__ == "__main__":
    main()
