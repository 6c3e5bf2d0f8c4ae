"""Retrieval quality: dense vs BM25 vs hybrid (RRF) on a QA set with gold sources, same index, same run.

    python benchmarks/retrieval_quality.py --index DIR --qa FILE [--user-groups everyone]

Prints hit@1/5/10 and MRR of the gold source file, and of the gold file#anchor where the QA set has anchors.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ingest.retrieval import RetrievalOptions, Retriever
from ingest.embedding import Embedder
from ingest.vector_store import open_vector_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--qa", type=Path, required=True)
    parser.add_argument("--groups", default="everyone,hr,finance", help="groups to search as")
    parser.add_argument("--quick", action="store_true", help="first 50 questions only")
    args = parser.parse_args()

    questions = [json.loads(line) for line in args.qa.read_text().splitlines() if line.strip()]
    questions = [q for q in questions if q.get("answerable", True) and q.get("gold_source")]
    if args.quick:
        questions = questions[:50]
    reader = open_vector_store(args.index)  # the index's own store: FAISS or Milvus
    retriever = Retriever(reader, Embedder(reader.embedder))
    groups = set(args.groups.split(","))
    retriever.retrieve("warm up", groups)

    print(f"# Retrieval quality on {args.qa} ({len(questions)} answerable questions, {reader.stats().chunks} chunks)")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; faiss {version('faiss-cpu')}, "
          f"bm25s {version('bm25s')}, sentence-transformers {version('sentence-transformers')}")
    print()
    print("| mode | hit@1 file | hit@5 file | hit@10 file | MRR file | hit@5 file#anchor | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("dense", "bm25", "hybrid"):
        options = RetrievalOptions(mode=mode, top_k=10, min_score=-1.0)
        ranks, anchor_hits, latencies = [], 0, []
        for q in questions:
            gold_file, _, gold_anchor = q["gold_source"].partition("#")
            started = time.perf_counter()
            passages = retriever.retrieve(q["question"], groups, options)
            latencies.append((time.perf_counter() - started) * 1000)
            files = [p.chunk.source for p in passages]
            ranks.append(files.index(gold_file) + 1 if gold_file in files else None)
            anchor_hits += any(p.chunk.source == gold_file and p.chunk.anchor == gold_anchor
                               for p in passages[:5]) if gold_anchor else 0
        n = len(questions)
        hit = lambda k: sum(1 for r in ranks if r and r <= k) / n
        mrr = sum(1 / r for r in ranks if r) / n
        anchored = sum(1 for q in questions if "#" in q["gold_source"])
        anchor = f"{anchor_hits / anchored:.3f}" if anchored else "n/a"
        latencies.sort()
        print(f"| {mode} | {hit(1):.3f} | {hit(5):.3f} | {hit(10):.3f} | {mrr:.3f} | {anchor} | "
              f"{statistics.median(latencies):.1f} | {latencies[int(0.95 * (len(latencies) - 1))]:.1f} |")


if __name__ == "__main__":
    main()
