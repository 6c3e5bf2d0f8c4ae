"""Calibrate the correctness threshold against hand labels.

    python -m eval.calibrate sample RUN_DIR... --per-run 8 --out eval/calibration.jsonl   # draw answers to label
    python -m eval.calibrate check [eval/calibration.jsonl]                               # agreement

`sample` takes answered questions from run folders (a fixed seed; for RAG runs whose answers were withdrawn,
the model's raw text before the citation check), scores each against its gold answer and gold passage
(token F1, embedding similarity: the better of the two golds for each) and writes them with `"label": null`.
A person then reads every answer and sets `label` to true (it answers the question correctly: the facts the
gold answer gives, no wrong fact that matters) or false, with a short `why`.

`check` prints the agreement of the documented rule (correctness_score >= CORRECT_THRESHOLD and numbers_agree)
with the labels, its confusion counts, and the best threshold for the rule, for the mean score without the
number check, for F1 alone and for similarity alone.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from eval.metrics import (
    CORRECT_THRESHOLD,
    agreement,
    correctness_score,
    numbers_agree,
    strip_citations,
    token_f1,
)

DEFAULT_FILE = Path(__file__).with_name("calibration.jsonl")


def sample(run_dirs: list[Path], per_run: int, out: Path, seed: int = 7) -> int:
    from eval.runner import RESULTS, read_results
    from ingest.embedding import Embedder

    embedder = Embedder()
    rows = []
    for run_dir in run_dirs:
        records = [r for r in read_results(Path(run_dir) / RESULTS) if r["answerable"]]
        candidates = [r for r in records if not r["refused"] or (r.get("raw_answer") or "").strip()]
        random.Random(seed).shuffle(candidates)
        for record in candidates[:per_run]:
            text = record["answer"] if not record["refused"] else record["raw_answer"]
            answer = strip_citations(text)
            golds = [g for g in (record.get("gold_answer"), record.get("gold_passage")) if g]
            vectors = embedder.encode([answer, *golds])
            rows.append({"run": Path(run_dir).name, "id": record["id"], "question": record["question"],
                         "gold_answer": record.get("gold_answer"), "answer": answer,
                         "kind": "final" if not record["refused"] else "raw (withdrawn)",
                         "f1": round(max(token_f1(answer, g) for g in golds), 4),
                         "similarity": round(max(max(0.0, float(vectors[0] @ v)) for v in vectors[1:]), 4),
                         "label": None, "why": ""})
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def _best(scores: list[float], labels: list[bool]) -> tuple[float, float]:
    candidates = sorted(set(scores)) + [1.01]
    best = max(candidates, key=lambda t: (agreement(scores, labels, t).rate, -abs(t - 0.5)))
    return best, agreement(scores, labels, best).rate


def check(path: Path, threshold: float = CORRECT_THRESHOLD) -> str:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("label") is not None]
    if not rows:
        raise SystemExit(f"{path}: no labelled rows")
    labels = [bool(r["label"]) for r in rows]
    mean = [correctness_score(r["f1"], r["similarity"]) for r in rows]
    gate = [numbers_agree(r["answer"], r.get("gold_answer")) for r in rows]
    gated = [s if ok else 0.0 for s, ok in zip(mean, gate)]  # the documented rule: score >= T and numbers agree
    result = agreement(gated, labels, threshold)
    tp = sum(1 for s, y in zip(gated, labels) if s >= threshold and y)
    fp = sum(1 for s, y in zip(gated, labels) if s >= threshold and not y)
    fn = sum(1 for s, y in zip(gated, labels) if s < threshold and y)
    tn = result.n - tp - fp - fn
    lines = [f"{path}: {result.n} hand-labelled answers ({sum(labels)} correct)",
             (f"rule: (token F1 + similarity) / 2 >= {threshold} and the gold answer's numbers agree: agreement "
              f"{result.agree}/{result.n} = {result.rate:.1%} (true positives {tp}, false positives {fp}, "
              f"false negatives {fn}, true negatives {tn})")]
    for name, values in (("the rule", gated), ("the mean score without the number check", mean),
                         ("token F1 alone", [r["f1"] for r in rows]),
                         ("similarity alone", [r["similarity"] for r in rows])):
        best, rate = _best(values, labels)
        low = max((v for v in values if v < best), default=0.0)
        lines.append(f"best threshold for {name}: {best:.3f} (agreement {rate:.1%}; any value in "
                     f"({low:.3f}, {best:.3f}] agrees as well)")
    for r, s, y in zip(rows, gated, labels):
        if (s >= threshold) != y:
            lines.append(f"  disagrees: {r['run']}/{r['id']} score {s:.3f} labelled {y}: {r['answer'][:90]!r}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    draw = sub.add_parser("sample", help="draw answers to label")
    draw.add_argument("runs", nargs="+", type=Path)
    draw.add_argument("--per-run", type=int, default=8)
    draw.add_argument("--out", type=Path, default=DEFAULT_FILE)
    agree = sub.add_parser("check", help="agreement with the labels")
    agree.add_argument("file", nargs="?", type=Path, default=DEFAULT_FILE)
    agree.add_argument("--threshold", type=float, default=CORRECT_THRESHOLD)
    args = parser.parse_args(argv)
    if args.command == "sample":
        print(f"wrote {sample(args.runs, args.per_run, args.out)} answers to label into {args.out}")
    else:
        print(check(args.file, args.threshold))


if __name__ == "__main__":
    main(sys.argv[1:])
