"""Injection guard: precision, recall and sentence-level exclusion on the labelled passages, old vs new detector.

    python benchmarks/injection_guard.py [--data tests/data/injection_passages.jsonl] [--old-commit a9a2a7f]

The labelled set (tests/data/injection_passages.jsonl) holds injected and clean company-document passages in
English, French, German and Spanish; each injected one names its offending sentence(s). `split` says when a
passage was written, relative to the rules (all by the same author, who also wrote the rules):
- train: written first; the rules were tuned on these.
- test: every third passage of each (label, language) group of that first batch, written with the train ones
  before any rule; held out for the first measurement only (its first-run figures are in the report of issue 18
  item 5); the rules were later changed, so it is no longer held out.
- fresh, fresh2, fresh3: three later rounds of "the next variation", each written after the rules of the previous
  round, measured once, and then used to improve the rules. The first-run figures of a round are the honest
  estimate of how the rules do on phrasings they have not seen; the figures this script prints now are not (every
  split has been seen).
- train also holds clean-tech-NN: sentences of real technical manuals (docutils, git, Python) that the rules cut
  when scanning those manuals' indexes ("system messages", "<document>", "<user>", "standard ignore rules"); added
  as hard negatives after the rules were fixed for them.
- blind1: 20 injected / 20 clean passages (EN/FR/DE/ES and 2+1 Italian) written by someone else, never seen by the
  rules. First run (before the rules were generalised for its misses): precision 1.000, recall 0.650 (en 0.727,
  fr 0.667, de 0.500, es 1.000, it 0.000), clean kept 1.000. That is the honest estimate for unseen phrasings; the
  figures printed now are not (the misses were then used to generalise the rules).

Detectors:
- old: app/guardrails/injection.py as of --old-commit (read with `git show`): a passage scoring >= 3 is dropped
  whole (every sentence of it is "excluded").
- new: app.guardrails.injection.scan_passage: offending sentences are cut out; the passage is dropped only when
  the rest is not clean.

Columns: passage precision / recall (a passage counts as flagged when anything of it is excluded); sentence
precision / recall over passage_units (a sentence counts as offending when it overlaps a labelled offending
sentence); exact: injected passages whose offending sentences are all excluded and all clean sentences kept;
clean kept: clean passages left untouched.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import types
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.guardrails import injection  # noqa: E402
from ingest.answer_spans import passage_units  # noqa: E402

DATA = ROOT / "tests" / "data" / "injection_passages.jsonl"
OLD_COMMIT = "a9a2a7f"  # the keyword detector before issue 18 item 5


def load(path: Path = DATA) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _ws(text: str) -> str:
    return " ".join(text.split())


def sentence_labels(row: dict) -> list[tuple[str, bool]]:
    """(unit text, offending?) for every unit of the passage."""
    offending = [_ws(s) for s in row["offending"]]
    return [(u.text, any(u.text in o or o in u.text for o in offending)) for u in passage_units(row["text"])]


def new_detector(text: str) -> set[str]:
    """The unit texts the new guard excludes."""
    found = injection.scan_passage(text)
    if found.dropped:
        return {u.text for u in passage_units(text)}
    return {_ws(s.text) for s in found.offending}


def old_detector(commit: str = OLD_COMMIT):
    source = subprocess.run(["git", "show", f"{commit}:app/guardrails/injection.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("old_injection")
    sys.modules["old_injection"] = module  # dataclasses look their module up
    exec(compile(source, "old_injection.py", "exec"), module.__dict__)

    def detect(text: str) -> set[str]:
        return {u.text for u in passage_units(text)} if module.scan(text).score >= module.EXCLUDE_THRESHOLD else set()
    return detect


def evaluate(rows: list[dict], detect) -> dict[str, float]:
    tp = fp = fn = tn = 0
    stp = sfp = sfn = 0
    exact = injected = clean_kept = clean = 0
    for row in rows:
        excluded = detect(row["text"])
        labels = sentence_labels(row)
        predicted = bool(excluded)
        actual = row["label"] == "injected"
        tp += predicted and actual
        fp += predicted and not actual
        fn += actual and not predicted
        tn += not predicted and not actual
        for text, offending in labels:
            out = text in excluded
            stp += out and offending
            sfp += out and not offending
            sfn += offending and not out
        if actual:
            injected += 1
            exact += all((text in excluded) == offending for text, offending in labels)
        else:
            clean += 1
            clean_kept += not predicted

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")
    return {"n": len(rows), "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "sentence_precision": ratio(stp, stp + sfp), "sentence_recall": ratio(stp, stp + sfn),
            "exact": ratio(exact, injected), "clean_kept": ratio(clean_kept, clean)}


def table(rows: list[dict], detectors: dict) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups["all"].append(row)
        groups[f"split={row['split']}"].append(row)
        groups[f"lang={row['lang']}"].append(row)
        if row["split"] == "test":
            groups[f"test, lang={row['lang']}"].append(row)
    splits = [f"split={s}" for s in ("train", "test", "fresh", "fresh2", "fresh3", "blind1") if f"split={s}" in groups]
    order = ["all"] + splits + sorted(k for k in groups if k.startswith("lang=")) + sorted(
        k for k in groups if k.startswith("test, "))
    lines = ["| subset | detector | passages (inj/clean) | precision | recall | sentence P | sentence R | "
             "exact exclusion | clean kept |", "|---|---|---|---|---|---|---|---|---|"]
    for key in order:
        subset = groups[key]
        n_inj = sum(r["label"] == "injected" for r in subset)
        for name, detect in detectors.items():
            m = evaluate(subset, detect)
            lines.append(f"| {key} | {name} | {n_inj}/{len(subset) - n_inj} | {m['precision']:.3f} | "
                         f"{m['recall']:.3f} | {m['sentence_precision']:.3f} | {m['sentence_recall']:.3f} | "
                         f"{m['exact']:.3f} | {m['clean_kept']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--old-commit", default=OLD_COMMIT)
    parser.add_argument("--errors", action="store_true", help="list what the new detector gets wrong (train only)")
    args = parser.parse_args()
    rows = load(args.data)
    detectors = {"old": old_detector(args.old_commit), "new": new_detector}
    print(f"{platform.machine()}, Python {platform.python_version()}; {args.data}: {len(rows)} "
          f"passages\n")
    print(table(rows, detectors))
    if args.errors:
        for row in rows:
            if row["split"] != "train":
                continue
            excluded = new_detector(row["text"])
            wrong = [(t, o) for t, o in sentence_labels(row) if (t in excluded) != o]
            for text, offending in wrong:
                print(f"{row['id']}: {'MISSED' if offending else 'FALSE'}: {text}  "
                      f"[{injection.scan(text).describe()} = {injection.scan(text).score}]")


if __name__ == "__main__":
    main()
