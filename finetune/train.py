"""QLoRA training: a frozen 4-bit NF4 base with trainable LoRA adapters, loss on the answer tokens only.

A plain loop (no Trainer) so that checkpoints are safetensors + JSON only, never pickles, and so the
bitsandbytes CPU traps in DESIGN.md are handled in one visible place:
- the model is always a fresh instance (never one that already ran `generate`);
- bitsandbytes' CPU weight repacking, which happens on any eval-mode forward and silently zeroes the
  gradients through 4-bit layers afterwards, is switched off for the training instance.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from finetune.data import TrainingExample
from finetune.defaults import LORA_R
from ingest.errors import GroundworkError

CHECKPOINT_DIR = "checkpoint"
IGNORE = -100


class TrainingError(GroundworkError):
    """Training cannot start or continue; the message is one line for the user."""


@dataclass(frozen=True)
class TrainOptions:
    """Hyperparameters; the defaults are the usual QLoRA recipe."""

    epochs: float = 2.0  # passes over the training examples (ignored when max_steps is set)
    max_steps: int | None = None  # stop after this many optimizer steps
    batch_size: int = 4  # examples per optimizer step
    micro_batch_size: int = 1  # examples per forward pass (gradient accumulation makes up the rest)
    learning_rate: float = 2e-4  # constant after warmup
    warmup_steps: int = 5
    max_grad_norm: float = 0.3
    lora_r: int = LORA_R
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"  # LoRA on every linear projection except the output head
    quantize: bool = True  # QLoRA (4-bit NF4 base); False = LoRA on a 16-bit base
    gradient_checkpointing: bool = True
    optimizer: str = "auto"  # auto = paged 8-bit AdamW on CUDA, AdamW on CPU; or "adamw", "paged_adamw_8bit"
    max_length: int = 2048  # longer examples are cut from the left of the prompt
    seed: int = 0
    save_every: int = 10  # steps between checkpoints (a killed run resumes from the last one)
    threads: int | None = None  # torch CPU threads; default: all cores


@dataclass
class TrainResult:
    """What a training run did, for the adapter card."""

    adapter_dir: Path
    steps: int
    epochs_done: float
    train_examples: int
    validation_examples: int
    loss_curve: list[tuple[int, float]]  # (step, mean training loss of that step)
    validation_loss: list[tuple[float, float]]  # (epoch, loss); epoch 0 = before training
    seconds: float
    step_seconds_median: float
    peak_memory_mb: float  # process RSS on CPU, allocated GPU memory on CUDA
    trainable_parameters: int
    total_parameters: int
    device: str
    resumed_from_step: int = 0
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- tokens
def tokenize(example: TrainingExample, tokenizer, max_length: int) -> tuple[list[int], list[int]]:
    """input_ids and labels (prompt tokens masked with -100) for one example, in the chat template."""
    prompt = _ids(tokenizer.apply_chat_template(example.messages, add_generation_prompt=True, tokenize=True))
    full = _ids(tokenizer.apply_chat_template(
        example.messages + [{"role": "assistant", "content": example.target}], tokenize=True))
    if full[: len(prompt)] != prompt:  # a template that rewrites earlier turns: append the answer ourselves
        full = prompt + tokenizer.encode(example.target, add_special_tokens=False) + [tokenizer.eos_token_id]
    labels = [IGNORE] * len(prompt) + full[len(prompt):]
    if len(full) > max_length:  # keep the answer whole; drop the start of the prompt
        full, labels = full[-max_length:], labels[-max_length:]
    return full, labels


def _ids(value) -> list[int]:
    if isinstance(value, dict) or hasattr(value, "input_ids"):
        value = value["input_ids"]
    return list(value)


def _batch(pairs: list[tuple[list[int], list[int]]], pad_id: int, device) -> dict:
    import torch

    width = max(len(ids) for ids, _ in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(pairs):  # right padding for training
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def answer_loss(model, batch: dict):
    """Mean cross-entropy over the answer tokens, computing logits only where there are labels.

    The vocabulary projection of a ~1000-token prompt is a large share of a small model's cost; the
    answer is the last few dozen tokens, so only those positions go through the output head.
    """
    import torch

    labels = batch["labels"]
    labelled = (labels != IGNORE).any(dim=0).nonzero()
    first = int(labelled[0]) if len(labelled) else labels.shape[1] - 1
    keep = labels.shape[1] - first + 1  # the position before the first label predicts it
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep).logits
    targets = labels[:, labels.shape[1] - keep + 1:]
    return torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                             targets.reshape(-1), ignore_index=IGNORE)


# ------------------------------------------------------------------------------------------- model
def disable_cpu_repacking(model) -> int:
    """Undo and switch off bitsandbytes' CPU weight repacking on every 4-bit layer; returns how many layers."""
    try:
        from bitsandbytes.nn import Linear4bit
        from bitsandbytes.nn.modules import _convert_weight_packed_for_cpu_inverse
    except ImportError:  # a bitsandbytes older than its CPU repacking (pyproject allows >=0.45): nothing to undo
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, Linear4bit):
            state = getattr(module.weight, "quant_state", None)
            if state is not None and getattr(state, "packing_format_for_cpu", False):
                module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
                    module.weight.data, state)
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def prepare_lora_model(loaded, options: TrainOptions):
    """Wrap a freshly loaded base in trainable LoRA adapters (QLoRA when the base is 4-bit)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model = loaded.model
    model.train()
    checkpointing = {"use_reentrant": False}
    if loaded.quantized:
        disable_cpu_repacking(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=options.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=checkpointing)
    elif options.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
    model.config.use_cache = False
    config = LoraConfig(r=options.lora_r, lora_alpha=options.lora_alpha, lora_dropout=options.lora_dropout,
                        target_modules=options.target_modules, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def _optimizer(parameters, options: TrainOptions, device: str):
    import torch

    kind = options.optimizer
    if kind == "auto":
        kind = "paged_adamw_8bit" if device.startswith("cuda") else "adamw"
    if kind == "paged_adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(parameters, lr=options.learning_rate, weight_decay=0.0)
    if kind == "adamw":
        return torch.optim.AdamW(parameters, lr=options.learning_rate, weight_decay=0.0)
    raise TrainingError(f"unknown optimizer {kind!r}: use auto, adamw or paged_adamw_8bit")


def _lr_factor(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


# ------------------------------------------------------------------------------------------- checkpoints
def _flatten_optimizer(state: dict) -> tuple[dict, dict]:
    """Optimizer state_dict -> (tensors for safetensors, JSON for the rest)."""
    import torch

    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            name = f"{index}.{key}"
            if isinstance(value, torch.Tensor):
                tensors[name] = value.detach().contiguous().cpu()
            else:
                scalars[name] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _save_checkpoint(folder: Path, model, optimizer, progress: dict) -> None:
    """Write the checkpoint beside the old one, then swap it in with a rename (a kill leaves one intact)."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from finetune.conversion import fsync_tree

    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        _remove_tree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()},
              str(tmp / "adapter.safetensors"))
    tensors, meta = _flatten_optimizer(optimizer.state_dict())
    tensors["__torch_rng__"] = torch.get_rng_state()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**progress, "optimizer": meta}, indent=1))
    fsync_tree(tmp)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        _remove_tree(old)


def _load_checkpoint(folder: Path, model, optimizer) -> dict:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    progress = json.loads((folder / "state.json").read_text())
    set_peft_model_state_dict(model, load_file(str(folder / "adapter.safetensors")))
    tensors = load_file(str(folder / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("__torch_rng__"))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, progress.pop("optimizer")))
    return progress


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def run_fingerprint(base_sha256: str, options: TrainOptions, train: list[TrainingExample],
                    validation: list[TrainingExample]) -> str:
    """What must match for a checkpoint to be resumed: base, hyperparameters, data."""
    digest = hashlib.sha256(base_sha256.encode())
    relevant = {k: v for k, v in asdict(options).items() if k not in ("save_every", "threads")}
    digest.update(json.dumps(relevant, sort_keys=True).encode())
    for example in train + [None] + validation:
        digest.update(b"|" if example is None else json.dumps(asdict(example), sort_keys=True).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------- training
def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def train(loaded, train_examples: list[TrainingExample], validation_examples: list[TrainingExample],
          work_dir: Path, options: TrainOptions = TrainOptions(), show_progress: bool = True,
          on_step: Callable[[int, int, float], None] | None = None) -> TrainResult:
    """Train LoRA adapters on `loaded` (a fresh LoadedModel from finetune.models.load_model).

    Checkpoints go to work_dir/checkpoint; a run with the same base, options and data resumes from it.
    The trained adapter is saved to work_dir/adapter. `loaded.model` is modified in place.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import set_seed

    if not train_examples:
        raise TrainingError("no training examples")
    if options.threads:
        torch.set_num_threads(options.threads)
    set_seed(options.seed)
    work_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = run_fingerprint(loaded.base_sha256, options, train_examples, validation_examples)

    tokenizer = loaded.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train_tokens = [tokenize(e, tokenizer, options.max_length) for e in train_examples]
    validation_tokens = [tokenize(e, tokenizer, options.max_length) for e in validation_examples]

    model = prepare_lora_model(loaded, options)
    device = str(loaded.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(trainable, options, device)

    steps_per_epoch = math.ceil(len(train_tokens) / options.batch_size)
    total_steps = options.max_steps or max(1, math.ceil(options.epochs * steps_per_epoch))

    checkpoint = work_dir / CHECKPOINT_DIR
    progress: dict[str, Any] = {"fingerprint": fingerprint, "step": 0, "loss_curve": [], "validation_loss": [],
                                "step_seconds": [], "seconds": 0.0}
    if (checkpoint / "state.json").is_file():
        saved = json.loads((checkpoint / "state.json").read_text())
        if saved.get("fingerprint") == fingerprint:
            progress = _load_checkpoint(checkpoint, model, optimizer)
        else:
            _remove_tree(checkpoint)  # another base, data or hyperparameters: start over
    resumed_from = int(progress["step"])

    def validation_loss() -> float | None:
        if not validation_tokens:
            return None
        model.eval()
        losses = []
        with torch.no_grad():
            for pair in validation_tokens:
                losses.append(float(answer_loss(model, _batch([pair], pad_id, loaded.model.device))))
        model.train()
        return sum(losses) / len(losses)

    if resumed_from == 0 and validation_tokens:
        progress["validation_loss"].append((0.0, validation_loss()))

    started = time.perf_counter() - float(progress["seconds"])
    bar = tqdm(total=total_steps, initial=resumed_from, desc="fine-tuning", unit="step", disable=not show_progress,
               dynamic_ncols=True)
    model.train()
    for step in range(resumed_from, total_steps):
        step_started = time.perf_counter()
        epoch, position = divmod(step, steps_per_epoch)
        order = list(range(len(train_tokens)))
        random.Random(options.seed + epoch).shuffle(order)
        batch_ids = order[position * options.batch_size:(position + 1) * options.batch_size]
        for group in optimizer.param_groups:
            group["lr"] = options.learning_rate * _lr_factor(step, options.warmup_steps)
        step_loss = 0.0
        for start in range(0, len(batch_ids), options.micro_batch_size):
            micro = [train_tokens[i] for i in batch_ids[start:start + options.micro_batch_size]]
            loss = answer_loss(model, _batch(micro, pad_id, loaded.model.device)) * (len(micro) / len(batch_ids))
            loss.backward()
            step_loss += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(trainable, options.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        progress["step"] = step + 1
        progress["loss_curve"].append((step + 1, round(step_loss, 5)))
        progress["step_seconds"].append(round(time.perf_counter() - step_started, 4))
        end_of_epoch = (step + 1) % steps_per_epoch == 0 or step + 1 == total_steps
        if end_of_epoch and validation_tokens:
            progress["validation_loss"].append((round((step + 1) / steps_per_epoch, 3), validation_loss()))
        progress["seconds"] = time.perf_counter() - started
        if (step + 1) % options.save_every == 0 or end_of_epoch:
            _save_checkpoint(checkpoint, model, optimizer, progress)
        bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}")
        bar.update(1)
        if on_step is not None:
            on_step(step + 1, total_steps, step_loss)
    bar.close()

    adapter_dir = work_dir / "adapter"
    model.save_pretrained(str(adapter_dir), safe_serialization=True)
    step_seconds = sorted(progress["step_seconds"]) or [0.0]
    return TrainResult(
        adapter_dir=adapter_dir, steps=int(progress["step"]), epochs_done=round(progress["step"] / steps_per_epoch, 3),
        train_examples=len(train_examples), validation_examples=len(validation_examples),
        loss_curve=[tuple(x) for x in progress["loss_curve"]],
        validation_loss=[tuple(x) for x in progress["validation_loss"]],
        seconds=round(time.perf_counter() - started, 2), step_seconds_median=step_seconds[len(step_seconds) // 2],
        peak_memory_mb=round(peak_memory_mb(device), 1),
        trainable_parameters=sum(p.numel() for p in trainable),
        total_parameters=sum(p.numel() for p in model.parameters()), device=device, resumed_from_step=resumed_from,
        extra={"quantized": bool(loaded.quantized), "step_seconds": progress["step_seconds"]})
