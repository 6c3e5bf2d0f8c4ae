"""`groundwork eval`: run a QA set through the engine or a baseline, and compare runs. A thin shell over eval.runner
and eval.report; heavy imports happen inside the commands so `groundwork --help` stays fast."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import typer

from app.config import LLM_URL_HELP, Settings
from finetune.models import DEFAULT_MODEL
from ingest.defaults import TOP_K

eval_cli = typer.Typer(invoke_without_command=True, pretty_exceptions_enable=False,
                       help="Batch evaluation: answer every question of a QA set, score the answers, compare runs.")

def _default_out(qa: Path, split: str, mode: str, adapter: str | None, limit: int | None) -> Path:
    from eval.runner import NO_MODEL

    parts = [qa.stem if qa.stem != "qa" else qa.resolve().parent.name, split, mode]
    if adapter and mode not in NO_MODEL:
        parts.append(re.sub(r"[^A-Za-z0-9._-]+", "_", Path(adapter).name or adapter))
    if limit:
        parts.append(f"first{limit}")
    return Settings.from_env().eval_dir / "-".join(parts)


@eval_cli.callback()
def run(
    ctx: typer.Context,
    qa: Annotated[Path | None, typer.Option(
        "--qa", help="QA set (JSONL: id, question, answer, gold_passage, gold_source, answerable, user).")] = None,
    index: Annotated[Path | None, typer.Option(
        "--index", help="Index directory (default: as `groundwork ask`).")] = None,
    adapter: Annotated[str | None, typer.Option(
        "--adapter", help="LoRA adapter: registry name, folder, or 'none' for the base model; default: the promoted "
                          "one.")] = None,
    adapters: Annotated[Path | None, typer.Option(
        "--adapters", help="Adapter registry directory (default: as `groundwork ask`).")] = None,
    baseline: Annotated[str | None, typer.Option(
        "--baseline", help="Run a baseline instead of RAG: extractive (the top retrieved passage is the answer, "
                           "no model), closed-book (the model answers with no passages), first-sentence (the "
                           "top passage's first sentence that is not a question, no model) or oracle (the "
                           "engine's answer stage given the gold passage alone).")] = None,
    closed_book: Annotated[bool, typer.Option(
        "--closed-book", help="Same as --baseline closed-book.")] = False,
    extractive: Annotated[bool, typer.Option(
        "--extractive", help="Same as --baseline extractive.")] = False,
    mode: Annotated[str, typer.Option(
        "--mode", help="rag, closed-book, extractive, first-sentence or oracle.")] = "rag",
    out: Annotated[Path | None, typer.Option(
        "--out", help="Run folder (results.jsonl, summary.json); re-running with the same folder resumes. Default: "
                      "groundwork-data/eval/<qa>-<split>-<mode>[-<adapter>].")] = None,
    split: Annotated[str, typer.Option("--split", help="train, validation, test (held out) or all.")] = "all",
    users_file: Annotated[Path | None, typer.Option(
        "--users", help="Users file for the QA set's `user` names (default: as `groundwork ask`).")] = None,
    model: Annotated[str, typer.Option("--model", help="Base model name, HF id or folder.")] = DEFAULT_MODEL,
    no_quantize: Annotated[bool, typer.Option("--no-quantize", help="Load the model in bf16, not 4-bit.")] = False,
    llm_url: Annotated[str | None, typer.Option("--llm-url", help=LLM_URL_HELP)] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Passages given to the model.")] = TOP_K,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Longest answer, in tokens.")] = 200,
    decoding: Annotated[str, typer.Option(
        "--decoding", help="rag and oracle: quote (the best sentences selected and quoted verbatim, or a refusal), "
                             "constrained (the model writes the quote) or free (its own words).")] = "quote",
    refusal_threshold: Annotated[float | None, typer.Option(
        "--refusal-threshold", help="quote: refuse below this calibrated P(right) (default: the fitted one).")] = None,
    workers: Annotated[int, typer.Option(
        "--workers", help="Questions answered at once (one engine each, the model shared); 2 measured 1.8x faster "
                          "than 1 on a 2-core box.")] = min(2, os.cpu_count() or 1),
    threads: Annotated[int | None, typer.Option(
        "--threads", help="torch threads (default: cores / workers).")] = None,
    rewrite: Annotated[str | None, typer.Option(
        "--rewrite", help="Follow-up sets (a 'history' field): how a follow-up becomes a standalone query: keywords "
                          "(the last question's topic words added, no model), model (the model rewrites it, words "
                          "from neither the conversation nor the question removed) or none (searched as asked). "
                          "Default: the engine's (keywords).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N questions of the split.")] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="The run's label in reports (default: the folder's name).")] = None,
    rescore: Annotated[bool, typer.Option(
        "--rescore", help="Recompute the metrics of the answers already in the run folder.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run every question of a QA set (RAG, or a baseline with --baseline) and write results.jsonl and
    summary.json."""
    if ctx.invoked_subcommand is not None:
        return
    if qa is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0 if ctx.args == [] else 2)
    from app.guardrails.config import read_guardrails
    from eval.cards import record_in_adapter_card
    from eval.errors import EvalError
    from eval.runner import EvalConfig, run_eval

    from eval.baselines import BASELINES

    from app.conversations.rewrite import STRATEGIES

    if rewrite is not None and rewrite not in STRATEGIES:
        raise EvalError(f"unknown --rewrite '{rewrite}': use one of {', '.join(STRATEGIES)}")
    if baseline is not None and baseline not in BASELINES:
        raise EvalError(f"unknown --baseline '{baseline}': use one of {', '.join(BASELINES)}")
    flags = ((baseline, baseline is not None), ("closed-book", closed_book), ("extractive", extractive))
    chosen = list(dict.fromkeys(name for name, given in flags if given))  # --extractive is --baseline extractive
    if len(chosen) > 1:
        raise EvalError(f"choose one baseline, not {' and '.join(chosen)}")
    settings = Settings.from_env()
    mode = chosen[0] if chosen else mode
    index = index or settings.index_dir
    users_file = users_file or settings.users_file
    adapters = adapters or settings.adapters_dir
    out = out or _default_out(qa, split, mode, adapter, limit)
    guardrails = read_guardrails(settings.guardrails_file) if settings.guardrails_file.exists() else None
    import torch

    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // max(1, workers)))
    config = EvalConfig(qa_file=qa, index_dir=index, out_dir=out, mode=mode, adapter=adapter, adapters_dir=adapters,
                        model=model,
                        quantize=not no_quantize, llm_url=llm_url or settings.llm_url, split=split,
                        users_file=users_file, top_k=top_k,
                        max_new_tokens=max_new_tokens, decoding=decoding, refusal_threshold=refusal_threshold,
                        workers=workers, limit=limit, name=name, progress=not quiet, rescore=rescore,
                        guardrails=guardrails, rewrite=rewrite)
    try:
        result = run_eval(config)
    except KeyboardInterrupt:
        raise EvalError(f"interrupted: the answers so far are in {out}/results.jsonl; re-run the same command "
                        f"to resume") from None
    if result.leaks:
        leaky = ", ".join(leak["id"] for leak in result.summary["leaks"])
        typer.secho(f"PERMISSION LEAKS: {result.leaks} passage(s) from documents the asking user may not read "
                    f"(questions: {leaky}); details in {out}/summary.json", err=True, fg="red", bold=True)
    typer.echo(f"Evaluated {result.one_line()}")
    record_in_adapter_card(result.summary, adapters, qa, split)
    if result.leaks:
        raise typer.Exit(3)


@eval_cli.command("compare")
def compare(
    runs: Annotated[list[Path], typer.Argument(
        help="Run folders (each with summary.json and results.jsonl); the first is the baseline for the "
             "differences.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Report folder (default: groundwork-data/eval/report).")] = None,
) -> None:
    """Compare runs: every metric per run and its difference, charts, and the questions whose outcome changed."""
    from eval.report import build_report

    report = build_report(runs, out or Settings.from_env().eval_dir / "report")
    typer.echo(report.markdown)
    typer.echo(f"Report: {report.html_path} ({len(report.images)} charts, {len(report.changed)} changed "
               f"question(s))")
