"""`groundwork adapters export`: the adapter alone, or merged into a 16-bit copy of its base for serving elsewhere."""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from finetune.adapters import CARD, CONFIG, WEIGHTS, AdapterError, AdapterVersion, check_adapter_files
from finetune.conversion import fsync_dir, fsync_tree
from finetune.prompt import PromptPassage, build_messages

CHECK_PROMPTS = [
    ("How long do I have to submit an expense claim?",
     [PromptPassage("Expense claims must be submitted within 30 days of the expense.", "finance/expenses.md")]),
    ("Who approves travel?",
     [PromptPassage("Every business trip must be approved by your line manager before booking.", "travel.md"),
      PromptPassage("Hotels must stay within the nightly cap.", "travel.md, Hotels")]),
    ("What is the office wifi password?",
     [PromptPassage("The cafeteria opens at 8:00.", "facilities.md")]),
]


@dataclass
class ExportReport:
    out: Path
    merged: bool
    greedy_identical: bool | None = None  # merged model vs base + adapter, same greedy tokens on every check prompt
    prompts_checked: int = 0


def export_adapter(version: AdapterVersion, out: Path, merged: bool = False, dtype: str = "bfloat16",
                   device: str | None = None, max_new_tokens: int = 24) -> ExportReport:
    """Write the adapter (or the merged model) to `out`, which must not exist yet.

    Merging happens in float32 into a fresh full-precision copy of the base, never into a 4-bit model (whose
    CPU weights bitsandbytes may have repacked). Before saving, the merged model's greedy output on a few
    grounded prompts is compared with base + adapter.
    """
    check_adapter_files(version.path)
    if out.exists():
        raise AdapterError(f"{out} already exists; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        if merged:
            report = _merge(version, staging, dtype, device, max_new_tokens)
        else:
            for item in (WEIGHTS, CONFIG, CARD, "loss.png"):
                if (version.path / item).exists():
                    shutil.copy2(version.path / item, staging / item)
            report = ExportReport(out=out, merged=False)
        fsync_tree(staging)
        staging.rename(out)
        fsync_dir(out.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    report.out = out
    return report


def _merge(version: AdapterVersion, staging: Path, dtype: str, device: str | None, max_new_tokens: int) -> ExportReport:
    import torch
    from peft import PeftModel

    from finetune.models import load_model

    base = version.card.get("base", {}).get("model")
    if not base:
        raise AdapterError(f"{version.ref}: its card does not name the base model")
    loaded = load_model(base, quantize=False, dtype="float32", device=device)
    model = PeftModel.from_pretrained(loaded.model, str(version.path), is_trainable=False).eval()
    tokenizer = loaded.tokenizer

    def greedy(m) -> list[list[int]]:
        outputs = []
        for question, passages in CHECK_PROMPTS:
            inputs = tokenizer.apply_chat_template(build_messages(question, passages), add_generation_prompt=True,
                                                   return_tensors="pt", return_dict=True).to(m.device)
            with torch.inference_mode():
                ids = m.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            outputs.append(ids[0, inputs["input_ids"].shape[1]:].tolist())
        return outputs

    before = greedy(model)
    merged = model.merge_and_unload()
    after = greedy(merged)
    merged = merged.to(getattr(torch, dtype))
    merged.save_pretrained(str(staging), safe_serialization=True)
    tokenizer.save_pretrained(str(staging))
    return ExportReport(out=staging, merged=True, greedy_identical=before == after, prompts_checked=len(before))
