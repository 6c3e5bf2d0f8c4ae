"""`groundwork finetune` and `groundwork adapters ...`: thin shells over finetune.pipeline and finetune.adapters."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from app.config import Settings
from finetune.defaults import LORA_R
from finetune.models import DEFAULT_MODEL

SETTINGS = Settings.from_env()

adapters_cli = typer.Typer(no_args_is_help=True, help="List, promote, roll back, remove and export LoRA adapters.")
RegistryOption = typer.Option(SETTINGS.adapters_dir, "--adapters", help="Adapter registry directory.")


def finetune_command(
    name: str = typer.Option(..., "--name", help="Adapter name; each run adds a new version."),
    data: List[Path] = typer.Option([], "--data", help="QA JSONL file(s): id, question, answer, gold_source, ..."),
    from_index: bool = typer.Option(False, "--from-index", help="Also derive questions from the documents' headings."),
    index: Path = typer.Option(SETTINGS.index_dir, "--index", help="Index the passages come from."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="Base model: registry name, HF id or folder."),
    epochs: float = typer.Option(2.0, "--epochs"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps."),
    batch_size: int = typer.Option(4, "--batch-size", help="Examples per optimizer step."),
    micro_batch_size: int = typer.Option(1, "--micro-batch-size", help="Examples per forward pass."),
    learning_rate: float = typer.Option(2e-4, "--lr"),
    warmup_steps: int = typer.Option(5, "--warmup-steps"),
    max_grad_norm: float = typer.Option(0.3, "--max-grad-norm"),
    lora_r: int = typer.Option(LORA_R, "--lora-r"),
    lora_alpha: int = typer.Option(32, "--lora-alpha"),
    lora_dropout: float = typer.Option(0.05, "--lora-dropout"),
    no_quantize: bool = typer.Option(False, "--no-quantize", help="LoRA on a 16-bit base instead of QLoRA."),
    no_gradient_checkpointing: bool = typer.Option(False, "--no-gradient-checkpointing"),
    optimizer: str = typer.Option("auto", "--optimizer", help="auto, adamw or paged_adamw_8bit."),
    passages: int = typer.Option(5, "--passages", help="Passages per training prompt (gold + distractors)."),
    refusal_fraction: float = typer.Option(0.5, "--refusal-fraction",
                                           help="Share of questions that also get a gold-withheld refusal example."),
    answer_style: str = typer.Option("quote", "--answer-style",
                                     help='quote: "[n] " + the supporting sentences verbatim; answer: the gold '
                                          'answer with [n] after each sentence.'),
    groups: str = typer.Option("everyone", "--groups",
                               help="Train only on documents these groups may read (comma-separated)."),
    max_length: int = typer.Option(2048, "--max-length", help="Longest training sequence in tokens."),
    seed: int = typer.Option(0, "--seed"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: all cores)."),
    promote: bool = typer.Option(False, "--promote", help="Promote the new version when training succeeds."),
    validation_examples: Optional[int] = typer.Option(
        None, "--validation-examples", help="At most this many validation examples (each costs a forward pass per "
                                            "validation and calibration; default: all)."),
    registry: Path = RegistryOption,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """QLoRA-tune the model to answer from numbered passages, citing them, and to refuse otherwise."""
    from finetune.data import ExampleOptions
    from finetune.pipeline import FinetuneOptions, finetune
    from finetune.train import TrainOptions

    training = TrainOptions(epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                            micro_batch_size=micro_batch_size, learning_rate=learning_rate, warmup_steps=warmup_steps,
                            max_grad_norm=max_grad_norm, lora_r=lora_r, lora_alpha=lora_alpha,
                            lora_dropout=lora_dropout, quantize=not no_quantize,
                            gradient_checkpointing=not no_gradient_checkpointing, optimizer=optimizer,
                            max_length=max_length, seed=seed, threads=threads)
    examples = ExampleOptions(passages=passages, refusal_fraction=refusal_fraction, seed=seed, answer_style=answer_style,
                              groups=frozenset(g.strip() for g in groups.split(",") if g.strip()))
    version = finetune(FinetuneOptions(name=name, index_dir=index, registry_dir=registry, model=model,
                                       data=tuple(data), from_index=from_index, examples=examples,
                                       training=training, promote=promote,
                                       validation_examples=validation_examples), show_progress=not quiet)
    typer.echo(_describe(version))
    if not version.promoted:
        typer.echo(f"Promote it with: groundwork adapters promote {version.ref}")


def _describe(version) -> str:
    card = version.card
    training = card.get("training", {})
    validation = training.get("validation_loss") or []
    examples = card.get("data", {}).get("examples", {}).get("train", {})
    loss = training.get("loss_curve") or []
    parts = [f"{version.ref}{' (promoted)' if version.promoted else ''}",
             f"base {card.get('base', {}).get('model')}",
             f"{training.get('steps')} steps on {sum(examples.values())} examples "
             f"({', '.join(f'{v} {k}' for k, v in sorted(examples.items()))})" if examples else None,
             f"loss {loss[0][1]:.3f} -> {loss[-1][1]:.3f}" if loss else None,
             f"validation loss {validation[0][1]:.3f} -> {validation[-1][1]:.3f}" if len(validation) > 1 else None,
             f"{training.get('seconds', 0) / 60:.1f} min" if training else None]
    return "; ".join(p for p in parts if p)


@adapters_cli.command("list")
def adapters_list(registry: Path = RegistryOption) -> None:
    """Every adapter version; * marks the promoted one of each name."""
    from finetune.adapters import AdapterRegistry

    reg = AdapterRegistry(registry)
    names = reg.names()
    if not names:
        typer.echo(f"No adapters in {registry}. Train one with `groundwork finetune --name NAME --data QA.jsonl`.")
        return
    default = reg.default()
    for name in names:
        for version in reg.versions(name):
            mark = "*" if version.promoted else " "
            tag = "  (default for answers)" if default and default.ref == version.ref else ""
            typer.echo(f"{mark} {_describe(version)}{tag}")


@adapters_cli.command("show")
def adapters_show(ref: str = typer.Argument(..., help="NAME (promoted version) or NAME@vN."),
                  registry: Path = RegistryOption) -> None:
    """Print an adapter version's card (base, data, hyperparameters, losses, evaluation)."""
    from finetune.adapters import AdapterRegistry

    version = AdapterRegistry(registry).get(ref)
    typer.echo(json.dumps({**version.card, "path": str(version.path), "promoted": version.promoted}, indent=1))


UsersOption = typer.Option(SETTINGS.users_file, "--users",
                           help="Users file: canary.json, audit.sqlite and conversations.sqlite are beside it.")


@adapters_cli.command("promote")
def adapters_promote(ref: str = typer.Argument(..., help="NAME@vN (NAME alone: its newest version)."),
                     registry: Path = RegistryOption, users_file: Path = UsersOption) -> None:
    """Make a version the one answers use; a running server switches on its next question. Promoting the
    candidate of a running canary ends the canary: the candidate becomes the version for everyone."""
    from app.production.canary import CanaryFile
    from finetune.adapters import AdapterRegistry

    version = AdapterRegistry(registry).promote(ref)
    typer.echo(f"Promoted {version.ref}")
    if CanaryFile.beside(users_file).promoted(version.ref, by="cli") is not None:
        typer.echo(f"The canary of {version.ref} has ended: it is now the version for everyone.")


@adapters_cli.command("canary")
def adapters_canary(
    ref: Optional[str] = typer.Argument(None, help="NAME@vN: the candidate version to start a canary of."),
    share: float = typer.Option(10.0, "--share", help="Percent of users who get the candidate (sticky per user)."),
    groups: str = typer.Option("", "--groups", help="Only users of these groups take part (comma-separated; "
                                                    "default: everyone)."),
    rule: List[str] = typer.Option([], "--rule", help='Guard rule, repeatable: "refusal_rate+10@50" (10 points '
                                                       'above the control over at least 50 answers), '
                                                       '"error_rate>2%@50", "thumbs_down_rate+15@30" (30 rated '
                                                       'answers). Metrics: refusal_rate, withdrawal_rate, '
                                                       'block_rate, error_rate, thumbs_down_rate.'),
    status: bool = typer.Option(False, "--status", help="Both arms side by side, with confidence intervals."),
    stop: bool = typer.Option(False, "--stop", help="Stop the running canary: everyone gets the promoted version."),
    registry: Path = RegistryOption, users_file: Path = UsersOption,
) -> None:
    """Canary rollout: a share of users gets NAME@vN, the rest keep NAME's promoted version; guard rules roll
    the candidate back automatically. `promote NAME@vN` ends it with the candidate for everyone."""
    from app.production.canary import CanaryError, CanaryFile
    from finetune.adapters import AdapterRegistry

    canary = CanaryFile.beside(users_file, AdapterRegistry(registry))
    if sum((ref is not None, status, stop)) != 1:
        raise CanaryError("give a candidate NAME@vN to start a canary, or --status, or --stop")
    if stop:
        ended = canary.stop(by="cli")
        typer.echo(f"Stopped the canary of {ended.candidate}: everyone gets {ended.control} again.")
        return
    if status:
        from app.audit import AuditLog
        from app.conversations.store import ConversationStore
        from app.production import canary_report

        if canary.current() is None:
            typer.echo(canary_report.NO_CANARY)
            return
        folder = users_file.parent
        store = ConversationStore(folder / "conversations.sqlite") if (folder / "conversations.sqlite").exists() \
            else None
        canary.check(AuditLog(folder / "audit.sqlite"), store)  # a guard rule may have fired since the last answer
        typer.echo(canary_report.text(canary.report(AuditLog(folder / "audit.sqlite"), store)))
        return
    started = canary.start(ref, share, groups.split(","), rule, by="cli")
    typer.echo(f"Canary started: {started.share:g}% of {', '.join(started.groups) or 'all users'} get "
               f"{started.candidate}, the others {started.control}.")
    if not started.rules:
        typer.echo("No guard rules: nothing rolls it back automatically (add --rule \"refusal_rate+10@50\").")
    typer.echo("Follow it with `groundwork adapters canary --status`.")


@adapters_cli.command("rollback")
def adapters_rollback(name: str = typer.Argument(...), registry: Path = RegistryOption) -> None:
    """Promote again the version that was promoted before the current one."""
    from finetune.adapters import AdapterRegistry

    version = AdapterRegistry(registry).rollback(name)
    typer.echo(f"Rolled back {name} to {version.ref}")


@adapters_cli.command("remove")
def adapters_remove(ref: str = typer.Argument(..., help="NAME@vN"), registry: Path = RegistryOption) -> None:
    """Delete one version (not the promoted one)."""
    from finetune.adapters import AdapterRegistry

    AdapterRegistry(registry).remove(ref)
    typer.echo(f"Removed {ref}")


@adapters_cli.command("calibrate")
def adapters_calibrate(ref: str = typer.Argument(..., help="NAME (promoted version) or NAME@vN."),
                       index: Optional[Path] = typer.Option(None, "--index", help="Index (default: the one it was "
                                                                                  "trained with)."),
                       registry: Path = RegistryOption) -> None:
    """Set the refusal threshold from the version's validation questions (done after training already)."""
    from finetune.adapters import AdapterRegistry
    from finetune.pipeline import recalibrate

    decoding = recalibrate(AdapterRegistry(registry), ref, index)
    figures = decoding["calibration"]
    typer.echo(f"{ref}: refusal threshold {decoding['refusal_threshold']:.2f} (validation: answers allowed "
               f"{figures['answers_allowed']:.0%}, refusals kept {figures['refusals_kept']:.0%}, "
               f"{figures['validation_examples']} examples)")


@adapters_cli.command("import")
def adapters_import(folder: Path = typer.Argument(..., help="An exported adapter folder (weights + config + card)."),
                    name: str = typer.Option(..., "--name", help="Registry name to add it under."),
                    promote: bool = typer.Option(False, "--promote", help="Promote it."),
                    registry: Path = RegistryOption) -> None:
    """Add an adapter folder (e.g. from `adapters export` on another machine) as the next version of NAME."""
    from finetune.adapters import AdapterRegistry, read_card

    reg = AdapterRegistry(registry)
    card = read_card(folder)
    extra = {"loss.png": folder / "loss.png"} if (folder / "loss.png").is_file() else {}
    version = reg.add(name, folder, {**card, "imported_from": str(folder.resolve())}, extra)
    if promote:
        version = reg.promote(version.ref)
    typer.echo(f"Imported {folder} as {version.ref}{' (promoted)' if version.promoted else ''}")


@adapters_cli.command("export")
def adapters_export(ref: str = typer.Argument(..., help="NAME (promoted version) or NAME@vN."),
                    out: Path = typer.Option(..., "--out", help="New folder to write."),
                    merged: bool = typer.Option(False, "--merged",
                                                help="Merge into a bf16 copy of the base (a standard HF folder)."),
                    registry: Path = RegistryOption) -> None:
    """Copy an adapter out of the registry, or merge it into its base for serving elsewhere (e.g. vLLM)."""
    from finetune.adapters import AdapterRegistry
    from finetune.export import export_adapter

    report = export_adapter(AdapterRegistry(registry).get(ref), out, merged=merged)
    if merged:
        check = "identical" if report.greedy_identical else "DIFFERENT"
        typer.echo(f"Wrote the merged model to {out} (greedy output on {report.prompts_checked} check prompts: "
                   f"{check} to base + adapter)")
        if not report.greedy_identical:
            raise typer.Exit(1)
    else:
        typer.echo(f"Wrote the adapter to {out}")
