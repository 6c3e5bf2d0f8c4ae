"""What a canary adds to each answer: `CanaryFile.assign` (before answering) and `CanaryFile.check` (after the
audit record), with an audit log that already holds many records of the canary.

    python benchmarks/canary_cost.py [--records 10000] [--answers 300] [--workdir DIR]

It builds a registry (acme v1 promoted, v2 the candidate; tiny LoRA files), starts a 10% canary with three guard
rules (refusal rate, error rate, 👎 rate: the last one makes each check read the feedback too), writes
--records audit records of both arms (10% candidate) and --rated rated turns, then measures:

- assign: per call, for a route naming the adapter ("acme") and for the default route (None: the registry's
  default is looked up), over 2,000 simulated users;
- check, cold: the first check of a process (it reads every record of the canary once);
- check, per answer: one more audit record written, then check (the incremental read), over --answers answers;
  the audit write itself is timed apart and not included;
- check with a fresh CanaryFile (another process, e.g. the CLI): a full read;
- report (the CLI's --status / the admin tab): every figure with its intervals (the bootstrap included).
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_registry(root: Path):
    import torch
    from safetensors.torch import save_file

    from finetune.adapters import AdapterRegistry

    staging = root / "staging"
    staging.mkdir(parents=True)
    save_file({"base_model.model.layers.0.q_proj.lora_A.weight": torch.zeros(2, 4)},
              str(staging / "adapter_model.safetensors"))
    (staging / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    registry = AdapterRegistry(root / "adapters")
    for _ in range(2):
        registry.add("acme", staging, {"base": {"model": "smollm2-135m-instruct"}})
    registry.promote("acme@v1")
    return registry


def answer(user: str, arm: str, i: int):
    from app.engine import Answer

    refused = i % 7 == 0
    return Answer(question=f"question {i}", answer="" if refused else "An answer [1].", refused=refused,
                  refusal_reason="model found no answer in the passages" if refused else None, citations=[],
                  retrieved=[], flags=[], timings={"total": 1.0 + (i % 17) / 10, "first_token": 0.3}, user=user,
                  adapter="acme@v2" if arm == "candidate" else "acme@v1", arm=arm)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--answers", type=int, default=300)
    parser.add_argument("--rated", type=int, default=1000, help="Rated turns in the conversation store.")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="canary-cost-"))
    root.mkdir(parents=True, exist_ok=True)

    from app.audit import AuditLog
    from app.conversations.store import ConversationStore
    from app.production.canary import CanaryFile
    from app.users import User

    registry = make_registry(root)
    canary = CanaryFile(root / "canary.json", registry)
    canary.start("acme@v2", 10, rules=["refusal_rate+10@50", "error_rate>2%@50", "thumbs_down_rate+15@30"])
    audit = AuditLog(root / "audit.sqlite")
    store = ConversationStore(root / "conversations.sqlite")
    users = [User(f"user{i:05d}") for i in range(2000)]

    started = time.perf_counter()
    for i in range(args.records):
        user = users[i % len(users)]
        arm = "candidate" if i % 10 == 0 else "control"
        audit.record(answer(user.name, arm, i), user, "web")
    conversation = store.create("rater", "benchmark")
    for i in range(args.rated):
        turn = store.add_turn("rater", conversation, f"question {i}",
                              answer("rater", "candidate" if i % 10 == 0 else "control", i + 1))
        store.set_feedback("rater", turn, 1 if i % 3 else -1)
    fill_s = time.perf_counter() - started

    rows = []
    for label, adapter in (("assign (route names acme)", "acme"), ("assign (default route, None)", None)):
        started = time.perf_counter()
        for user in users:
            canary.assign(user, adapter)
        rows.append((label, (time.perf_counter() - started) / len(users), len(users)))

    started = time.perf_counter()
    canary.check(audit, store)
    rows.append((f"check, cold (reads {args.records:,} records)", time.perf_counter() - started, 1))

    checks, writes = [], []
    for i in range(args.answers):
        user = users[i % len(users)]
        t0 = time.perf_counter()
        audit.record(answer(user.name, "candidate" if i % 10 == 0 else "control", args.records + i), user, "web")
        t1 = time.perf_counter()
        canary.check(audit, store)
        t2 = time.perf_counter()
        writes.append(t1 - t0)
        checks.append(t2 - t1)
    assert canary.current().status == "running", canary.events()[-1]
    rows.append(("check per answer (incremental), median", statistics.median(checks), len(checks)))
    rows.append(("check per answer (incremental), p95", sorted(checks)[int(0.95 * len(checks)) - 1], len(checks)))
    rows.append(("(the audit record itself, median)", statistics.median(writes), len(writes)))

    started = time.perf_counter()
    CanaryFile(root / "canary.json", registry).check(audit, store)
    rows.append(("check, fresh instance (full read)", time.perf_counter() - started, 1))
    started = time.perf_counter()
    report = canary.report(audit, store)
    rows.append(("report (--status, with bootstrap intervals)", time.perf_counter() - started, 1))

    print(f"canary cost: {args.records:,} audit records ({report.candidate.answers:,} candidate, "
          f"{report.control.answers:,} control) and {args.rated:,} rated turns (written in {fill_s:.1f} s), "
          f"{os.cpu_count()} cores, "
          f"Python {platform.python_version()}\n")
    print("| step | ms | calls |\n|---|---|---|")
    for label, seconds, calls in rows:
        print(f"| {label} | {ms(seconds)} | {calls} |")


if __name__ == "__main__":
    main()
