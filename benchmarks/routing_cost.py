"""What the routing gate adds to each answer: Router.choose() time over many questions.

    python benchmarks/routing_cost.py [--questions 1000] [--threads 1]

Three set-ups, each timed over the same questions (examples/acme/qa.jsonl and followups*.jsonl, numbered to make
each one distinct, cycled to --questions):
- no routes file (every answer takes the default route: one stat() of routes.json);
- group routes only (no intent: the question is never embedded);
- 3 intents x 5 example questions, with a route per intent after a group route the asker is not in (the question
  is embedded once with the engine's embedder, all-MiniLM-L6-v2, and compared with the 15 examples).
For scale, the same embedder's time for one question (retrieval embeds every question once anyway), and the
cost as served: the chat's LockedEmbedder remembers recent question vectors, so retrieval reuses the router's.
Torch threads default to 1, as `groundwork serve --threads 1`. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

INTENTS = {
    "it-support": ["How do I reset my password?", "My laptop cannot connect to the VPN.",
                   "The printer on my floor does not work.", "How do I install software on my laptop?",
                   "My email account is locked."],
    "expenses": ["When must expense claims be submitted?", "What is the meal allowance?",
                 "How do I get reimbursed for a hotel?", "Can I expense a taxi to the airport?",
                 "Who approves my travel expenses?"],
    "leave": ["How many days of annual leave do I get?", "Can unused leave carry over to next year?",
              "How do I report a sick day?", "What is the parental leave policy?",
              "Do public holidays count as leave?"],
}


def questions(count: int) -> list[str]:
    texts = []
    for name in ("qa.jsonl", "followups.jsonl", "followups_blind.jsonl"):
        for line in (REPO / "examples" / "acme" / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(json.loads(line)["question"])
    return [f"{texts[i % len(texts)]} ({i})" for i in range(count)]


def timed(router, user, asked: list[str]) -> list[float]:
    router.choose(user, asked[0])  # warm-up: loads the file, embeds the examples
    out = []
    for question in asked:
        started = time.perf_counter()
        router.choose(user, question)
        out.append((time.perf_counter() - started) * 1000)
    return out


def row(label: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[int(0.95 * (len(ms) - 1))]
    return f"| {label} | {statistics.median(ms):.3f} | {p95:.3f} | {statistics.mean(ms):.3f} | {len(ms)} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from app.production.routes import Intent, Route, Router, RoutesConfig, RoutesFile
    from app.users import User
    from finetune.adapters import AdapterRegistry
    from ingest.embedding import Embedder

    embedder = Embedder()
    embedder.encode(["warm-up"])
    asked = questions(args.questions)
    bob = User("bob", "employee", ("everyone",))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        registry = AdapterRegistry(root / "adapters")  # routes use "base": no adapter needs to exist
        set_ups = {
            "no routes file": None,
            "group routes only (2 routes)": RoutesConfig(0, (Route("hr", "base", ("hr",)),
                                                             Route("finance", "base", ("finance",)))),
            "3 intents x 5 examples (4 routes)": RoutesConfig(
                0, (Route("hr", "base", ("hr",)), *(Route(n, "base", (), n) for n in INTENTS)),
                tuple(Intent(n, tuple(e), 0.5) for n, e in INTENTS.items())),
        }
        lines = [f"Router.choose() per question, {args.questions} questions, torch threads {args.threads}, "
                 f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python "
                 f"{platform.python_version()}, torch {torch.__version__}", "",
                 "| set-up | p50 ms | p95 ms | mean ms | questions |", "|---|---|---|---|---|"]
        for n, (label, config) in enumerate(set_ups.items()):
            users_file = root / str(n) / "users.json"
            if config is not None:
                RoutesFile(users_file.parent / "routes.json").save(config, registry)
            router = Router.beside(users_file, registry, embedder)
            lines.append(row(label, timed(router, bob, asked)))
            if n == 2:
                matched = sum(router.classify(q).intent is not None for q in asked[:200])
        embed = []
        for question in asked:
            started = time.perf_counter()
            embedder.encode([question])
            embed.append((time.perf_counter() - started) * 1000)
        lines.append(row("(for scale: one question embedding)", embed))
        # As served: the chat's LockedEmbedder remembers the question's vector, so retrieval's own embedding of
        # the question (which every answer pays) reuses the router's. Added cost = (choose + retrieval's
        # embedding) - (retrieval's embedding alone), per question, on distinct questions for each.
        from app.ui import LockedEmbedder

        served = LockedEmbedder()
        served.__dict__["model"] = embedder.model
        router = Router.beside(root / "2" / "users.json", registry, served)
        router.choose(bob, asked[0])
        both, alone, hits = [], [], []
        for question in asked:  # interleaved, so load from other processes hits both sides alike
            started = time.perf_counter()
            router.choose(bob, question)
            chosen = time.perf_counter()
            served.encode([question])  # what retrieval does next: the remembered vector
            both.append((time.perf_counter() - started) * 1000)
            hits.append((time.perf_counter() - chosen) * 1000)
            started = time.perf_counter()
            served.encode([f"{question} (alone)"])  # a question retrieval embeds without routing
            alone.append((time.perf_counter() - started) * 1000)
        lines.append(row("as served (LockedEmbedder): choose + retrieval's embedding", both))
        lines.append(row("as served: retrieval's embedding alone (no routing)", alone))
        lines.append(row("as served: retrieval's embedding after choose (remembered)", hits))
        lines.append(row("**added by intent routing, as served** (per question: choose + retrieval's embedding "
                         "minus retrieval's embedding alone)", [b - a for b, a in zip(both, alone)]))
    print("\n".join(lines))
    print(f"\n{matched} of the first 200 questions had an intent at threshold 0.5.")


if __name__ == "__main__":
    main()
