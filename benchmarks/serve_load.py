"""Serving under load: N simulated users ask questions to a real `groundwork serve` over HTTP, then once more
while an admin re-runs ingestion from the admin tab's endpoint.

    python benchmarks/serve_load.py [--quick] [--users 2,4,8] [--questions-per-user 4] [--max-seconds 300]
                                    [--ingest-users 4] [--attack N] [--workdir DIR]
                                    [--backends inprocess,vllm] [--decoding free,constrained] [--llm-url URL]

The script builds its own site in a temporary folder (an index of examples/acme/docs made with `groundwork
ingest`, accounts made with `groundwork users add`, an empty adapter registry so the base model answers) and
starts `groundwork serve --threads 1` on a free loopback port. Each simulated user logs in like a browser
(POST /login, session cookie) and asks through Gradio's HTTP API (POST /gradio_api/call/ask, then the SSE stream
of the streamed answer), one question after the other (closed loop), cycling through the `question`s of
examples/acme/qa.jsonl from its own offset; it stops after --questions-per-user or, for new questions, after
--max-seconds. One warm-up question is asked before anything is timed.

Latency is from the POST to the `complete` event; first token is the first streamed piece of the answer (not
the "searching" placeholder). Throughput is answers per minute of wall time of the run. The server's memory is
its RSS sampled every 0.2 s from /proc/PID/status (peak per run), and VmHWM (its peak since start) at the end.
For the ingestion run, every Markdown and text file of the site's document folder gets a new paragraph first, so
the re-ingestion re-embeds them; it is started over HTTP as the admin (/admin_ingest) when the users start.
On a 2-core machine pin everything to one core with `taskset -c 1` to keep the numbers comparable. The
server's CPU seconds per answer (from /proc/PID/stat; the ingestion's own work included in its run) and its
share of the wall time show how much of the core it got: below ~100% something else was using the core.

--attack N runs each user count twice: as above, then again while N clients POST wrong passwords for 'admin'
to /login as fast as the server answers them (from the same address as the users, who log in before it starts),
and prints a second table: the users' latency without and with the attack, its ratio, errors, and what the
attack got (answers by HTTP status). The sign-in's backoff (app/ui/throttle.py) refuses the address after 20
failures; what is measured is what the attack still costs everyone else.

--overhead [CALLS] times, in process and without a server, what each answer pays for monitoring and routing:
the metrics hook of Conversations.ask (Metrics.question_started + observe), one /metrics scrape, and
Router.choose with no routes file, with group routes, and with an intent route (which embeds the question).

--backends and --decoding (issue 17, many users at once): the same users, questions and site against each
backend in turn, one `groundwork serve --decoding D` per (backend, decoding): `inprocess` runs the model inside the
server (its concurrent answers batched, app/batching.py), `vllm` passes `--llm-url` to an OpenAI-compatible server:
--llm-url URL of a running one, else the script starts vLLM itself with app/llm_server.py (LLMServer on
--llm-port, the packaged model, no adapters; its Python from $GROUNDWORK_LLM_PYTHON or .venv-llm, `make llm`) and
stops it at the end. `quote` (the default decoding) never calls the model with the packaged weights; `free` and
`constrained` make it write every answer. A summary table then puts the backends side by side per decoding and
user count, with the ratio to today's in-process figures before batching (8 users: p50 45 s, p95 91 s, 5.3
answers/min) and the issue's targets (8 users p50 <= 10 s, p95 <= 20 s, 0 errors; first token <= 1.0 s at 1 user).
The re-ingestion and --attack runs happen only for the first (backend, decoding).

--quick asks 1 question per user (a burst of N simultaneous questions; N=2, 4, 8, then 4 + re-ingestion).
An answer is up to 200 tokens, about 25-30 s on one idle core, and the model writes one answer at a time, so
this costs about 18 answers' time plus ~1.5 min of setup.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "examples/acme/docs"
ACL = ROOT / "examples/acme/acl.toml"
QA = ROOT / "examples/acme/qa.jsonl"
EMPLOYEES = [("alice", ""), ("hannah", "hr"), ("frank", "finance"), ("erin", "hr,finance")]
ADMIN = ("admin", "hr,finance")
REQUEST_TIMEOUT = 600.0  # seconds for one answer before it counts as an error
ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False",
       "TOKENIZERS_PARALLELISM": "false"}


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def password(name: str) -> str:
    return f"bench-{name}-password"


def groundwork(*args: str, cwd: Path = ROOT) -> float:
    """Run one `groundwork` CLI command; its seconds. Exits with the command's output if it fails."""
    exe = shutil.which("groundwork", path=str(Path(sys.executable).parent)) or shutil.which("groundwork")
    started = time.perf_counter()
    done = subprocess.run([exe, *args], cwd=cwd, env={**os.environ, **ENV}, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        sys.exit(f"groundwork {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - started


# --- the server -----------------------------------------------------------------------------------------------

class Server:
    """`groundwork serve` as a subprocess in its own process group; always stop() it."""

    def __init__(self, site: Path, port: int, threads: int, decoding: str = "quote", llm_url: str | None = None,
                 ) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = site / f"serve-{'vllm' if llm_url else 'inprocess'}-{decoding}.log"
        backend = ["--llm-url", llm_url] if llm_url else []
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        exe = shutil.which("groundwork", path=str(Path(sys.executable).parent)) or "groundwork"
        # cwd is the repository so that the converted model cache in groundwork-data/models is reused (read only)
        self.process = subprocess.Popen(
            [exe, "serve", "--index", str(site / "index"), "--users", str(site / "users.json"),
             "--adapters", str(site / "adapters"), "--uploads", str(site / "uploads"), "--port", str(port),
             "--threads", str(threads), "--decoding", decoding, *backend],
            cwd=ROOT, env={**os.environ, **ENV}, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 600.0) -> None:
        """Until the page answers and the server says it is running (its own warm-up is done)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"groundwork serve exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                page = httpx.get(self.url + "/", timeout=5).status_code == 200
            except httpx.HTTPError:
                page = False
            if page and "is running at" in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.5)
        sys.exit(f"groundwork serve not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        for sig, wait in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        self._log.close()


class MemoryPoller:
    """Samples the server's VmRSS every 0.2 s; peak() over a window of samples."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def status(self, key: str) -> int:
        """A kB value from /proc/PID/status (0 once the process is gone)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append((time.monotonic(), self.status("VmRSS")))

    def now(self) -> int:
        return self.status("VmRSS")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far (from /proc/PID/stat)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat[stat.rfind(")") + 2:].split()  # fields from the 3rd (state) on
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak(self, since: float) -> int:
        return max([kb for t, kb in self.samples if t >= since] or [self.now()])

    def stop(self) -> None:
        self._stop.set()


# --- the users ------------------------------------------------------------------------------------------------

@dataclass
class Result:
    user: int
    question: str
    ok: bool
    latency: float
    first_token: float | None = None
    outcome: str = ""  # answered | not found | blocked | error
    error: str = ""


def login(url: str, name: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=httpx.Timeout(30.0, read=REQUEST_TIMEOUT))
    response = client.post("/login", data={"username": name, "password": password(name)})
    if response.status_code != 200 or not response.json().get("success"):
        raise RuntimeError(f"login as {name} failed: HTTP {response.status_code} {response.text[:200]}")
    return client


def _message_text(event_data: list) -> str:
    """The last chat message of the `ask` endpoint's first output (the Chatbot), as HTML."""
    chat = event_data[0] or []
    if not chat:
        return ""
    content = chat[-1].get("content", "")
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content)


def call(client: httpx.Client, api_name: str, data: list, on_event=None) -> tuple[str, object]:
    """POST /gradio_api/call/API_NAME, read its SSE stream; (last event name, its data). on_event(name, data)."""
    response = client.post(f"/gradio_api/call/{api_name}", json={"data": data})
    if response.status_code != 200:
        return "error", f"HTTP {response.status_code}: {response.text[:300]}"
    event_id = response.json()["event_id"]
    name, payload = "", None
    with client.stream("GET", f"/gradio_api/call/{api_name}/{event_id}") as stream:
        if stream.status_code != 200:
            return "error", f"HTTP {stream.status_code} on the event stream"
        for line in stream.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:") and name != "heartbeat":
                raw = line[5:].strip()
                payload = json.loads(raw) if raw and raw != "null" else None
                if on_event is not None:
                    on_event(name, payload)
                if name in ("complete", "error"):
                    return name, payload
    return "error", f"stream ended after '{name or 'nothing'}' without a complete event"


def ask(client: httpx.Client, user: int, question: str) -> Result:
    started = time.perf_counter()
    first: list[float] = []

    def on_event(name: str, payload) -> None:
        if name == "generating" and not first and payload and "gw-streaming" in _message_text(payload):
            first.append(time.perf_counter() - started)

    try:
        name, payload = call(client, "ask", [question, [], None], on_event)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return Result(user, question, False, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
    latency = time.perf_counter() - started
    if name != "complete":
        return Result(user, question, False, latency, error=f"{name}: {str(payload)[:300]}")
    html = _message_text(payload)
    if "gw-error" in html or "gw-thinking" in html or "gw-streaming" in html:
        return Result(user, question, False, latency, error=f"unfinished or failed answer: {html[:300]}")
    outcome = "not found" if "gw-notfound" in html else "blocked" if "gw-blocked" in html else "answered"
    return Result(user, question, True, latency, first[0] if first else None, outcome)


@dataclass
class Run:
    label: str
    users: int
    wall: float
    results: list[Result]
    rss_start_mb: float
    rss_peak_mb: float
    cpu: float  # the server's CPU seconds during the run
    ingest: dict = field(default_factory=dict)
    backend: str = "inprocess"  # inprocess | vllm
    decoding: str = "quote"

    @property
    def ok(self) -> list[Result]:
        return [r for r in self.results if r.ok]

    @property
    def errors(self) -> list[Result]:
        return [r for r in self.results if not r.ok]

    @property
    def per_minute(self) -> float:
        return 60.0 * len(self.ok) / self.wall if self.wall else 0.0

    @property
    def p50(self) -> float:
        return statistics.median([r.latency for r in self.ok]) if self.ok else float("nan")


class Attack:
    """N clients posting wrong passwords to /login in a loop until stop(); statuses counts their answers."""

    def __init__(self, url: str, clients: int) -> None:
        self.url, self.clients = url, clients
        self.statuses: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._guess, daemon=True) for _ in range(clients)]
        self.seconds = 0.0

    def _guess(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                try:
                    status = str(client.post("/login", data={"username": ADMIN[0], "password": f"guess-{i}"})
                                 .status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with self._lock:
                    self.statuses[status] = self.statuses.get(status, 0) + 1

    def start(self) -> None:
        self._began = time.perf_counter()
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=70)
        self.seconds = time.perf_counter() - self._began


def run_load(url: str, users: int, questions: list[str], per_user: int, max_seconds: float,
             memory: MemoryPoller, label: str, during=None, attack: int = 0) -> Run:
    """`users` closed-loop users; `during(results_box)` (the admin) runs in a thread from the start; `attack`
    password-guessing clients start once the users have logged in (results in run.ingest["attack"])."""
    clients = [login(url, EMPLOYEES[i % len(EMPLOYEES)][0]) for i in range(users)]
    attacker = Attack(url, attack) if attack else None
    if attacker:
        attacker.start()
    results: list[Result] = []
    lock = threading.Lock()
    begin = threading.Barrier(users + 1)
    started_at = [0.0]

    def user(i: int) -> None:
        offset = i * len(questions) // users
        begin.wait()
        for k in range(per_user):
            if time.perf_counter() - started_at[0] > max_seconds:
                break
            result = ask(clients[i], i, questions[(offset + k) % len(questions)])
            with lock:
                results.append(result)

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(users)]
    for t in threads:
        t.start()
    ingest: dict = {}
    mono = time.monotonic()
    rss_start = memory.now()
    cpu_start = memory.cpu_seconds()
    started_at[0] = time.perf_counter()
    begin.wait()
    admin = threading.Thread(target=during, args=(ingest,), daemon=True) if during else None
    if admin:
        admin.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started_at[0]
    cpu = memory.cpu_seconds() - cpu_start
    if attacker:
        attacker.stop()
        ingest["attack"] = {"clients": attack, "seconds": attacker.seconds, "statuses": dict(attacker.statuses)}
    if admin:
        admin.join()
        ingest["overlap"] = min(ingest.get("seconds", 0.0), wall)
    rss_peak = memory.peak(mono)
    for client in clients:
        client.close()
    return Run(label, users, wall, results, rss_start / 1024, rss_peak / 1024, cpu, ingest)


def reingest_as_admin(url: str):
    """The admin's "Re-run ingestion" button over HTTP; fills `box` with seconds, state and summary."""

    def admin(box: dict) -> None:
        started = time.perf_counter()
        try:
            client = login(url, ADMIN[0])
            name, payload = call(client, "admin_ingest", [""])
            client.close()
        except (httpx.HTTPError, RuntimeError, ValueError, KeyError) as exc:
            name, payload = "error", f"{type(exc).__name__}: {exc}"
        box["seconds"] = time.perf_counter() - started
        status = str(payload[0]) if name == "complete" and payload else str(payload)
        state = re.search(r'data-state="(\w+)"', status)
        box["state"] = state.group(1) if state else name
        box["summary"] = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", status)).strip()[:300]

    return admin


def touch_documents(docs: Path) -> int:
    """Append a paragraph to every Markdown and text file, so that a re-ingestion re-embeds them."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    changed = 0
    for path in sorted(docs.rglob("*")):
        if path.suffix in (".md", ".txt"):
            with path.open("a") as f:
                f.write(f"\n\nUpdate {stamp}: this paragraph was added by the serving benchmark so that the "
                        f"re-ingestion embeds this document again.\n")
            changed += 1
    return changed


# --- the report -----------------------------------------------------------------------------------------------

def row(run: Run, base: Run) -> str:
    ok = run.ok
    lat = [r.latency for r in ok]
    first = [r.first_token for r in ok if r.first_token is not None]
    not_found = sum(r.outcome != "answered" for r in ok)

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b and not math.isnan(a) and not math.isnan(b) else "-"

    spread = f"{min(lat):.1f}-{max(lat):.1f}" if lat else "-"
    first_cells = f"{statistics.median(first):.1f} | {percentile(first, 0.95):.1f}" if first else "- | -"
    return (f"| {run.label} | {len(ok)} ({not_found}) | {len(run.errors)} | {run.wall:.0f} | {run.per_minute:.1f} | "
            f"{ratio(run.per_minute, base.per_minute)} | {run.p50:.1f} | "
            f"{percentile(lat, 0.95) if lat else float('nan'):.1f} | {ratio(run.p50, base.p50)} | {spread} | "
            f"{first_cells} | {run.cpu / max(len(ok), 1):.1f} ({run.cpu / run.wall:.0%}) | "
            f"{run.rss_start_mb:.0f} → {run.rss_peak_mb:.0f} |")


# Today's in-process figures before batching (issue 17: 8 users, the model writing every answer, one at a time):
# what the side-by-side table's ratios are against.
BEFORE_8_USERS = {"p50": 45.0, "p95": 91.0, "per_minute": 5.3}
TARGETS = {"p50": 10.0, "p95": 20.0, "first_token_1_user": 1.0}  # 8 users, 0 errors; first token at 1 user


def side_by_side(runs: list[Run]) -> None:
    """Per decoding and user count, each backend: p50/p95, first token, answers/min, errors, × today's figures."""
    print("\nBackends side by side (× today = this p50 / 45 s, answers/min / 5.3: today's in-process figures at 8 "
          "users; targets at 8 users: p50 <= 10 s, p95 <= 20 s, 0 errors; first token <= 1.0 s at 1 user):\n")
    print("| decoding | users | backend | p50 s | p95 s | first token p50 s | answers/min | errors | "
          "p50 × today | answers/min × today | targets |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    plain = [r for r in runs if not r.ingest]
    for decoding in dict.fromkeys(r.decoding for r in plain):
        for users in sorted({r.users for r in plain if r.decoding == decoding}):
            for run in [r for r in plain if r.decoding == decoding and r.users == users]:
                lat = [r.latency for r in run.ok]
                first = [r.first_token for r in run.ok if r.first_token is not None]
                p95 = percentile(lat, 0.95) if lat else float("nan")
                first_p50 = statistics.median(first) if first else float("nan")
                met = "-"
                if users == 8:
                    met = "met" if (run.p50 <= TARGETS["p50"] and p95 <= TARGETS["p95"] and not run.errors) \
                        else "missed"
                elif users == 1:
                    met = "met" if first_p50 <= TARGETS["first_token_1_user"] and not run.errors else "missed"
                print(f"| {decoding} | {users} | {run.backend} | {run.p50:.1f} | {p95:.1f} | {first_p50:.2f} | "
                      f"{run.per_minute:.1f} | {len(run.errors)} | {run.p50 / BEFORE_8_USERS['p50']:.2f} | "
                      f"{run.per_minute / BEFORE_8_USERS['per_minute']:.2f} | {met} |")


# --- --overhead: what monitoring and routing add to each answer, in process ----------------------------------------

def _timed(fn, repeat: int) -> tuple[float, float]:
    """(median, p99) milliseconds of fn() over `repeat` calls, after 20 warm-up calls."""
    for _ in range(20):
        fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), percentile(times, 99)


def overhead(repeat: int) -> None:
    """Time the per-answer hooks without a server: Metrics.question_started + observe (the /metrics counters),
    a /metrics scrape, and Router.choose for no routes, group routes, and an intent route (which embeds the
    question with the engine's embedder, all-MiniLM-L6-v2 on this CPU) with a canary file beside it."""
    sys.path.insert(0, str(ROOT))  # this checkout's code, not an installed copy
    from app.engine import Answer, Citation, RetrievedPassage
    from app.guardrails import GuardrailEvent
    from app.production.metrics import Metrics
    from app.production.routes import Intent, Route, Router, RoutesConfig, RoutesFile
    from app.users import User
    from finetune.adapters import AdapterRegistry
    from ingest.embedding import Embedder

    questions = [json.loads(line)["question"] for line in QA.read_text().splitlines() if line.strip()]
    retrieved = [RetrievedPassage(i, f"policies/doc{i}.md", 2, "Heading", None, "text " * 80, 0.5) for i in range(1, 6)]
    answers = [Answer(question=q, answer="[1] Expense claims must be submitted within 30 days of the purchase.",
                      refused=i % 5 == 0, refusal_reason="not confident" if i % 5 == 0 else None,
                      citations=[Citation(1, "policies/doc1.md", 2, "Heading", "text", 0.5)], retrieved=retrieved,
                      flags=[GuardrailEvent("pii", "answer", "redacted", "1 email")] if i % 3 == 0 else [],
                      timings={"total": 0.8, "first_token": 0.3, "retrieve": 0.05}, adapter=f"acme@v{i % 3 + 1}",
                      route=("hr", "it", "default")[i % 3], confidence=(i % 10) / 10) for i, q in enumerate(questions)]
    metrics, turn = Metrics(), iter(range(10**9))

    def hook() -> None:
        metrics.question_started()
        metrics.observe(answers[next(turn) % len(answers)])

    rows = [("metrics: question_started + observe", *_timed(hook, repeat))]
    rows.append(("GET /metrics body (9 label sets; per scrape)", *_timed(metrics.exposition, max(repeat // 10, 50))))
    alice, hannah = User("alice", groups=("everyone",)), User("hannah", groups=("everyone", "hr"))
    import torch

    torch.set_num_threads(1)  # as `groundwork serve --threads 1` (the default): 2 threads on a busy 2-core machine
    #                           made one embedding ~10x slower (oversubscription), which is not what serve pays
    embedder = Embedder()
    embedder.encode(["warm up"])
    with tempfile.TemporaryDirectory(prefix="overhead-") as folder:
        registry = AdapterRegistry(Path(folder) / "adapters")
        router = Router.beside(Path(folder) / "users.json", registry, embedder)
        asked = iter(range(10**9))

        def choose(user: User) -> None:
            router.choose(user, questions[next(asked) % len(questions)])

        rows.append(("router: no routes file (today's default)", *_timed(lambda: choose(alice), repeat)))
        routes = RoutesFile(router.file.path)
        config = RoutesConfig(0, (Route("hr", "base", ("hr",)), Route("finance", "base", ("finance",))))
        config = routes.save(config, registry)
        rows.append(("router: 2 group routes, first matches", *_timed(lambda: choose(hannah), repeat)))
        rows.append(("router: 2 group routes, none matches", *_timed(lambda: choose(alice), repeat)))
        intent = Intent("expenses", tuple(questions[:8]), 0.5)
        routes.save(RoutesConfig(config.version, (Route("expenses", "base", (), "expenses"), *config.routes),
                                 (intent,)), registry)
        slow = max(repeat // 10, 50)  # an embedding each: fewer calls
        rows.append(("router: intent route (embeds the question)", *_timed(lambda: choose(alice), slow)))
        rows.append(("  of which: embed one question (as retrieval does)",
                     *_timed(lambda: embedder.encode([questions[next(asked) % len(questions)]]), slow)))
    print(f"\nPer-answer overhead, {repeat} calls each ({slow} for the embedding rows), in process; "
          f"{os.cpu_count()} CPUs visible, 1 torch thread, load average {os.getloadavg()[0]:.1f}:\n")
    print(f"| {'step':<46} | median ms | p99 ms |")
    print(f"|{'-' * 48}|-----------|--------|")
    for name, median, p99 in rows:
        print(f"| {name:<46} | {median:9.3f} | {p99:6.3f} |")


# --- one server per (backend, decoding) ----------------------------------------------------------------------------

def start_server(site: Path, threads: int, decoding: str, llm_url: str | None, warm_question: str, setup: dict,
                 key: str) -> tuple[Server, MemoryPoller]:
    """`groundwork serve` on a free port, ready and warmed up by one question (times into `setup`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    server = Server(site, port, threads, decoding, llm_url)
    memory = MemoryPoller(server.process.pid)
    server.wait_ready()
    setup[f"{key}: server ready"] = time.perf_counter() - started
    started = time.perf_counter()
    warm = login(server.url, EMPLOYEES[0][0])
    warm_result = ask(warm, -1, warm_question)
    warm.close()
    if not warm_result.ok:
        log = server.log_tail()
        memory.stop()
        server.stop()
        sys.exit(f"the warm-up question failed ({key}): {warm_result.error}\n{log}")
    setup[f"{key}: warm-up question"] = time.perf_counter() - started
    print("setup: " + ", ".join(f"{k} {v:.1f} s" for k, v in setup.items()), file=sys.stderr, flush=True)
    return server, memory


def measure(server: Server, memory: MemoryPoller, args, counts: list[int], questions: list[str], per_user: int,
            max_seconds: float, site: Path, backend: str, decoding: str, extras: bool) -> list[Run]:
    """The runs of one server: each user count (and with --attack), then the re-ingestion run if `extras`."""
    runs: list[Run] = []
    tag = f"{backend} {decoding}"
    for n in counts:
        run = run_load(server.url, n, questions, per_user, max_seconds, memory, str(n))
        runs.append(run)
        print(f"[{tag}] {n} users: {len(run.ok)} answers, {len(run.errors)} errors in {run.wall:.0f} s",
              file=sys.stderr, flush=True)
        if args.attack and extras:
            attacked = run_load(server.url, n, questions, per_user, max_seconds, memory,
                                f"{n} + attack {args.attack}", attack=args.attack)
            runs.append(attacked)
            print(f"{attacked.label}: {len(attacked.ok)} answers, {len(attacked.errors)} errors in "
                  f"{attacked.wall:.0f} s; attack answers {attacked.ingest['attack']['statuses']}",
                  file=sys.stderr, flush=True)
    if args.ingest_users and extras:
        changed = touch_documents(site / "docs")
        run = run_load(server.url, args.ingest_users, questions, per_user, max_seconds, memory,
                       f"{args.ingest_users} + re-ingest", during=reingest_as_admin(server.url))
        run.ingest["changed"] = changed
        runs.append(run)
        print(f"{run.label}: {len(run.ok)} answers, {len(run.errors)} errors in {run.wall:.0f} s; "
              f"ingestion {run.ingest.get('state')} in {run.ingest.get('seconds', 0):.0f} s",
              file=sys.stderr, flush=True)
    for run in runs:
        run.backend, run.decoding = backend, decoding
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="2,4,8", help="Comma-separated numbers of simultaneous users.")
    parser.add_argument("--questions-per-user", type=int, default=None, help="Default 4 (1 with --quick).")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="No new question after this many seconds of a run. Default 300 (60 with --quick).")
    parser.add_argument("--ingest-users", type=int, default=4, help="Users during the re-ingestion (0: skip it).")
    parser.add_argument("--threads", type=int, default=1, help="The server's --threads.")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="Keep the site (index, users, log) here instead of a temporary folder; reused if "
                             "present (the index is then only updated).")
    parser.add_argument("--attack", type=int, default=0,
                        help="Run each user count again while this many clients guess passwords at /login.")
    parser.add_argument("--backends", default="inprocess",
                        help="Comma-separated: inprocess (the model in the server), vllm (--llm-url).")
    parser.add_argument("--decoding", default="quote",
                        help="Comma-separated decodings, one server each: quote (no model call with the packaged "
                             "weights), free, constrained.")
    parser.add_argument("--llm-url", default=None,
                        help="The vllm backend's OpenAI-compatible server; default: start one (app/llm_server.py).")
    parser.add_argument("--llm-port", type=int, default=8041, help="Port of the vLLM server this script starts.")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--overhead", type=int, nargs="?", const=2000, default=0, metavar="CALLS",
                        help="Only time what metrics and routing add per answer, in process (no server), and exit.")
    args = parser.parse_args()
    if args.overhead:
        overhead(args.overhead)
        return
    per_user = args.questions_per_user or (1 if args.quick else 4)
    max_seconds = args.max_seconds or (60.0 if args.quick else 300.0)
    counts = [int(n) for n in args.users.split(",") if n.strip()]
    questions = [json.loads(line)["question"] for line in QA.read_text().splitlines() if line.strip()]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: the server is stopped
    began = time.perf_counter()
    load_start = os.getloadavg()[0]
    temp = None if args.workdir else tempfile.TemporaryDirectory(prefix="serve-load-")
    site = args.workdir.resolve() if args.workdir else Path(temp.name)
    server = memory = llm = None
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    decodings = [d.strip() for d in args.decoding.split(",") if d.strip()]
    rss_ready: dict[str, float] = {}
    peaks: dict[str, float] = {}
    try:
        site.mkdir(parents=True, exist_ok=True)
        (site / "adapters").mkdir(exist_ok=True)
        if (site / "docs").exists():
            shutil.rmtree(site / "docs")
        shutil.copytree(DOCS, site / "docs")
        setup = {"ingest": groundwork("ingest", str(site / "docs"), "--acl", str(ACL), "--index", str(site / "index"))}
        started = time.perf_counter()
        for name, groups in EMPLOYEES:
            groundwork("users", "add", name, "--groups", groups, "--role", "employee", "--password", password(name),
                       "--users", str(site / "users.json"), "--replace")
        groundwork("users", "add", ADMIN[0], "--groups", ADMIN[1], "--role", "admin", "--password",
                   password(ADMIN[0]), "--users", str(site / "users.json"), "--replace")
        setup["users"] = time.perf_counter() - started
        if "vllm" in backends and not args.llm_url:
            from app.llm_server import LLMServer

            started = time.perf_counter()
            llm = LLMServer(port=args.llm_port, log_file=site / "vllm.log").start()
            setup["vllm ready"] = time.perf_counter() - started
        llm_url = args.llm_url or (llm.url if llm else None)
        runs: list[Run] = []
        for backend in backends:
            for decoding in decodings:
                key = f"{backend} {decoding}"
                server, memory = start_server(site, args.threads, decoding, llm_url if backend == "vllm" else None,
                                              questions[0], setup, key)
                rss_ready[key] = memory.now() / 1024
                runs += measure(server, memory, args, counts, questions, per_user, max_seconds, site,
                                backend, decoding, extras=not runs)
                peaks[key] = memory.status("VmHWM") / 1024
                memory.stop()
                server.stop()
                server = memory = None
    finally:
        if memory is not None:
            memory.stop()
        if server is not None:
            server.stop()
        if llm is not None:
            llm.stop()
        if temp is not None:
            temp.cleanup()

    affinity = sorted(os.sched_getaffinity(0))
    load = os.getloadavg()
    print(f"# {os.cpu_count()} cores, this run pinned to CPU {','.join(map(str, affinity))}, server --threads "
          f"{args.threads}, load average {load_start:.1f} at the start, {load[0]:.1f} at the end; gradio {version('gradio')}, torch "
          f"{version('torch')}, transformers {version('transformers')}, httpx {version('httpx')}")
    print(f"# {per_user} questions per user (none started after {max_seconds:.0f} s), closed loop, examples/acme "
          f"index; setup: " + ", ".join(f"{k} {v:.1f} s" for k, v in setup.items())
          + f"; total {time.perf_counter() - began:.0f} s")
    if llm_url:
        print(f"# vllm: {'the server at ' + args.llm_url if args.llm_url else 'started by this script: ' + llm_url}"
              f" (its own processes: not in the server CPU and RSS columns)")
    attack_rows = [(runs[i - 1], r) for i, r in enumerate(runs) if "attack" in r.ingest]  # each after its quiet run
    for key in rss_ready:
        group = [r for r in runs if f"{r.backend} {r.decoding}" == key]
        base = next((r for r in group if r.users == 2 and not r.ingest), group[0])
        print(f"\n{key}:\n\n| users | answers (not found) | errors | wall s | answers/min | × N=2 | p50 s | p95 s | "
              "× N=2 | min-max s | first token p50 s | p95 s | server CPU s per answer (share of wall) | "
              "server RSS MB (start → peak) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for run in group:
            print(row(run, base))
        print(f"\nServer RSS {rss_ready[key]:.0f} MB when ready, peak (VmHWM) {peaks[key]:.0f} MB at the end. "
              f"Ratios are against the {base.label}-user run.")
    if len(rss_ready) > 1 or llm_url:
        side_by_side(runs)
    if attack_rows:
        print("\n| users | p50 s without attack | p50 s with | ratio | p95 s without | p95 s with | first token p50 s "
              "without | with | errors without | with | attack: clients, guesses answered (by HTTP status) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for quiet, loud in attack_rows:
            def p95(run: Run) -> float:
                lat = [r.latency for r in run.ok]
                return percentile(lat, 0.95) if lat else float("nan")

            def first(run: Run) -> float:
                values = [r.first_token for r in run.ok if r.first_token is not None]
                return statistics.median(values) if values else float("nan")

            info = loud.ingest["attack"]
            print(f"| {quiet.users} | {quiet.p50:.1f} | {loud.p50:.1f} | {loud.p50 / quiet.p50:.2f} | "
                  f"{p95(quiet):.1f} | {p95(loud):.1f} | {first(quiet):.1f} | {first(loud):.1f} | {len(quiet.errors)} | "
                  f"{len(loud.errors)} | {info['clients']}, {sum(info['statuses'].values())} in "
                  f"{info['seconds']:.0f} s ({info['statuses']}) |")
    for run in runs:
        if run.ingest and "attack" not in run.ingest:
            print(f"Re-ingestion during the {run.label} run ({run.ingest['changed']} files changed): "
                  f"{run.ingest.get('state')} in {run.ingest.get('seconds', 0):.1f} s, overlapping "
                  f"{run.ingest.get('overlap', 0):.0f} s of the {run.wall:.0f} s run — {run.ingest.get('summary')}")
    errors = [(run, r) for run in runs for r in run.errors]
    if errors:
        print(f"\n{len(errors)} errors:")
        for run, r in errors:
            print(f"- [{run.label}] user {r.user}, {r.latency:.1f} s, {r.question[:60]!r}: {r.error}")
        sys.exit(1)


if __name__ == "__main__":
    main()
