"""Where Groundwork keeps its files: resolved once, from the `GROUNDWORK_*` environment variables.

Only the entry points (the CLI, the web UI's `serve`) call `Settings.from_env()`; libraries take paths as
arguments. See the README's "Settings and environment" section.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from finetune.models import DEFAULT_CACHE_DIR, ENV_CACHE_DIR, default_cache_dir

ENV_DATA = "GROUNDWORK_DATA"  # the data folder; everything below defaults to a path inside it
ENV_INDEX = "GROUNDWORK_INDEX"  # the index directory
ENV_ADAPTERS = "GROUNDWORK_ADAPTERS"  # the adapter registry
ENV_CACHE = ENV_CACHE_DIR  # converted base models; resolved by finetune.models.default_cache_dir, its one reader
ENV_LLM_URL = "GROUNDWORK_LLM_URL"  # an OpenAI-compatible server that runs the model (else it runs in-process)
ENV_LLM_API_KEY = "GROUNDWORK_LLM_API_KEY"  # its API key: read by app.openai_generator, never a command-line option
LLM_URL_HELP = ("An OpenAI-compatible server that runs the model (vLLM, TGI, llama.cpp, Ollama), e.g. "
                "http://127.0.0.1:8000/v1 (`groundwork llm serve`); its API key from $GROUNDWORK_LLM_API_KEY. "
                "Default: $GROUNDWORK_LLM_URL; unset, the model runs in-process.")  # --llm-url of every command
DEFAULT_DATA_DIR = Path("groundwork-data")


@dataclass(frozen=True)
class Settings:
    """The data folder and the files and folders every command uses."""

    data_dir: Path = DEFAULT_DATA_DIR
    index_dir: Path = DEFAULT_DATA_DIR / "index"
    users_file: Path = DEFAULT_DATA_DIR / "users.json"
    adapters_dir: Path = DEFAULT_DATA_DIR / "adapters"
    models_dir: Path = DEFAULT_CACHE_DIR  # the GGUF conversion cache (not inside GROUNDWORK_DATA)
    guardrails_file: Path = DEFAULT_DATA_DIR / "guardrails.json"
    documents_dir: Path = DEFAULT_DATA_DIR / "documents"  # uploads from the admin tab
    acl_file: Path = DEFAULT_DATA_DIR / "acl.toml"  # ACL rules saved from the admin tab
    eval_dir: Path = DEFAULT_DATA_DIR / "eval"  # evaluation runs and reports
    conversations_db: Path = DEFAULT_DATA_DIR / "conversations.sqlite"  # chat history and feedback, per user
    audit_db: Path = DEFAULT_DATA_DIR / "audit.sqlite"  # the append-only audit log of every question
    llm_url: str | None = None  # the model's OpenAI-compatible server (http://host:8000/v1); None = in-process

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        data = Path(env.get(ENV_DATA) or DEFAULT_DATA_DIR)
        return cls(
            data_dir=data,
            index_dir=Path(env.get(ENV_INDEX) or data / "index"),
            users_file=data / "users.json",
            adapters_dir=Path(env.get(ENV_ADAPTERS) or data / "adapters"),
            models_dir=default_cache_dir(env),  # the same rule load_model falls back to
            guardrails_file=data / "guardrails.json",
            documents_dir=data / "documents",
            acl_file=data / "acl.toml",
            eval_dir=data / "eval",
            conversations_db=data / "conversations.sqlite",
            audit_db=data / "audit.sqlite",
            llm_url=env.get(ENV_LLM_URL) or None,
        )
