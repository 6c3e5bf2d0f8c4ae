"""A QA set with unanswerable questions for a corpus: its own questions plus every question of another corpus,
marked unanswerable (the documents of the first cannot answer the second's questions).

    python benchmarks/cross_corpus_unanswerable.py QA OTHER_QA OUT [--label asked-of-NAME]

Ids of the added questions are "<label>-<their id>", so the train / validation / test split of the result is
decided per question as for any QA set (`finetune.splits.split_of`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("qa", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--label", default=None, help="id prefix (default: asked-of-<qa's folder>)")
    args = parser.parse_args()
    label = args.label or f"asked-of-{args.qa.resolve().parent.name}"
    own = [json.loads(line) for line in args.qa.read_text(encoding="utf-8").splitlines() if line.strip()]
    other = [json.loads(line) for line in args.other.read_text(encoding="utf-8").splitlines() if line.strip()]
    added = [{"id": f"{label}-{item['id']}", "question": item["question"], "answerable": False} for item in other]
    args.out.write_text("".join(json.dumps(item) + "\n" for item in own + added), encoding="utf-8")
    print(f"{args.out}: {len(own)} questions of {args.qa} + {len(added)} unanswerable ones from {args.other}")


if __name__ == "__main__":
    main()
