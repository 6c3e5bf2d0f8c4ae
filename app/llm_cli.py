"""`groundwork llm serve`: a vLLM server for the base model and the registry's promoted adapters (app/llm_server.py),
until Ctrl-C or SIGTERM. `ask`, `serve` and `eval` answer through it with `--llm-url`."""
from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Optional

import typer

from app.config import Settings
from finetune.models import DEFAULT_MODEL

SETTINGS = Settings.from_env()

llm_cli = typer.Typer(no_args_is_help=True, help="Run a vLLM server (OpenAI-compatible) the engine answers through.")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C, so the server is stopped on the way out


@llm_cli.command("serve")
def llm_serve(
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Registry name, Hugging Face folder or Hub id."),
    port: int = typer.Option(8000, "--port"),
    host: str = typer.Option("127.0.0.1", "--host", help="0.0.0.0 to accept other machines (no authentication)."),
    adapters: Path = typer.Option(SETTINGS.adapters_dir, "--adapters",
                                  help="Adapter registry: its promoted adapters are served as LoRA modules."),
    merged: bool = typer.Option(False, "--merged", help="Serve the most recently promoted adapter merged into the "
                                "base (exported once; faster than LoRA on CPU), under its label, instead."),
    kv_cache_gib: int = typer.Option(2, "--kv-cache-gib", help="KV cache size on CPU (VLLM_CPU_KVCACHE_SPACE)."),
    log: Optional[Path] = typer.Option(None, "--log", help="Write vLLM's output here (default: a temporary file)."),
) -> None:
    """Start vLLM in its own environment (`make llm`), print its URL once it answers, stop it on Ctrl-C."""
    from app.llm_server import LLMServer, find_llm_python

    server = LLMServer(model=model, port=port, host=host, adapters_dir=adapters, merged=merged,
                       python=find_llm_python(), kv_cache_gib=kv_cache_gib, log_file=log,
                       cache_dir=SETTINGS.models_dir)
    signal.signal(signal.SIGTERM, _interrupt)
    typer.echo(f"Starting vLLM for {model} on {host}:{port} (a minute or two on CPU)...")
    try:
        with server:
            for reason in server.skipped:
                typer.echo(f"  not served: {reason}")
            for warning in server.warnings:
                typer.echo(f"  warning: {warning}")
            for label in server.adapters:
                typer.echo(f"  adapter {label}" + (" (merged)" if merged else " (LoRA)"))
            served = f"{next(iter(server.adapters))} (merged into {model})" if merged else model
            typer.echo(f"vLLM is serving {served} at {server.url}  (log: {server.log_file}; Ctrl-C to stop)")
            typer.echo(f"Answer through it: groundwork ask --llm-url {server.url}  (also serve, eval)")
            while server.running:
                time.sleep(1.0)
            typer.echo(f"error: the vLLM server stopped: {server.log_tail()}", err=True)
            raise typer.Exit(1)
    except KeyboardInterrupt:
        pass  # leaving the with block stopped the server
    typer.echo("vLLM server stopped")
