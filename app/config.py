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
        )
