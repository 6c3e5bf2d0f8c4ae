"""A password-guessing attack against the sign-in, and what it does to everyone else's requests.

    python benchmarks/login_attack.py [--attackers 12] [--seconds 8] [--repo PATH] [--no-throttle]

Starts a server the way `groundwork serve` does (app.ui.launch_app: Gradio, its login, and in this version
app/ui/login_guard.py) around a one-button Blocks (no model: what is measured is the sign-in's cost), in a
subprocess with the code of --repo (default: this checkout; pass an older checkout to measure it the same way).
It times a trivial request (GET /gradio_api/app_id) every 20 ms for --seconds with no attack, then again while
--attackers clients POST wrong passwords for 'admin' to /login as fast as they can, and prints both.
--no-throttle turns the per-user and per-client backoff off (where the version has one), to see the cost of the
password checks themselves: with the throttle on, a single address is refused after 20 failures without a check.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SERVER = r"""
import sys, time
from types import SimpleNamespace
import gradio as gr
from app.users import UserStore
from app.ui import launch_app
users_file, port, no_throttle = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
users = UserStore(users_file)
users.add("admin", "admin-password", role="admin", replace=True)
users.add("alice", "alice-password", replace=True)
with gr.Blocks() as app:
    gr.Button().click(lambda: "hi", None, gr.Textbox())
app.queue()
kwargs = {}
if no_throttle:
    try:
        from app.ui.login_guard import LoginPolicy
        from app.ui.throttle import Backoff, ThrottlePolicy
        never = Backoff(free=10**9, base_s=0, max_s=0)
        kwargs["login"] = LoginPolicy(throttle=ThrottlePolicy(user=never, client=never))
    except ImportError:
        pass
launch_app(app, SimpleNamespace(users=users), port=port, block=False, quiet=True, **kwargs)
print("READY", flush=True)
while True:
    time.sleep(3600)
"""


def probe(url: str, seconds: float) -> list[float]:
    latencies = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=30) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            client.get("/gradio_api/app_id").raise_for_status()
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
    return latencies


def attack(url: str, stop: threading.Event, statuses: Counter, lock: threading.Lock) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                status = client.post("/login", data={"username": "admin", "password": f"guess-{i}"}).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            with lock:
                statuses[status] += 1


def summary(latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    return (f"median {statistics.median(ms):.1f} ms, p95 {ms[round(0.95 * (len(ms) - 1))]:.1f} ms, "
            f"max {ms[-1]:.0f} ms ({len(ms)} requests)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attackers", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repo", type=Path, default=ROOT, help="The checkout whose server is measured.")
    parser.add_argument("--no-throttle", action="store_true")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="login-attack-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(args.repo.resolve()), "HF_HUB_OFFLINE": "1",
               "GRADIO_ANALYTICS_ENABLED": "False"}
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(Path(tmp) / "users.json"), str(port),
                                   "1" if args.no_throttle else "0"], cwd=args.repo, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            if server.stdout.readline().strip() != "READY":
                sys.exit("the server did not start")
            probe(url, 1.0)  # warm up
            quiet = probe(url, args.seconds)
            stop, statuses, lock = threading.Event(), Counter(), threading.Lock()
            attackers = [threading.Thread(target=attack, args=(url, stop, statuses, lock), daemon=True)
                         for _ in range(args.attackers)]
            for thread in attackers:
                thread.start()
            time.sleep(0.5)
            started = time.monotonic()
            loud = probe(url, args.seconds)
            elapsed = time.monotonic() - started
            stop.set()
            for thread in attackers:
                thread.join(timeout=70)
        finally:
            server.terminate()
            server.wait(10)
    print(f"# {args.repo} ({'throttle off' if args.no_throttle else 'default policy'}), {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"GET /gradio_api/app_id, no attack:                 {summary(quiet)}")
    print(f"GET /gradio_api/app_id, {args.attackers} clients guessing:      {summary(loud)}")
    print(f"ratio of medians: {statistics.median(loud) / statistics.median(quiet):.1f}; guesses answered: "
          f"{sum(statuses.values())} in {elapsed:.1f} s, by status: {dict(statuses)}")


if __name__ == "__main__":
    main()
