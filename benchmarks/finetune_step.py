"""Fine-tuning cost: optimizer-step time and peak memory of QLoRA (4-bit NF4 base) vs LoRA on a 16-bit base,
same model, same grounded examples, same machine, same run. Each configuration runs in its own process so the
peak memory of one does not hide the other's.

    python benchmarks/finetune_step.py [--model smollm2-135m-instruct] [--steps 6] [--threads 2] [--quick]
    python benchmarks/finetune_step.py --random-shape 1.5b|7b   # a randomly initialised model of that shape (GPU)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
SHAPES = {  # Qwen2.5-1.5B and Llama-2-7B layer shapes
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936),
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000),
}


def examples(n: int, passages: int):
    """Grounded examples shaped like the engine's prompts: `passages` passages of ~190 tokens each."""
    from finetune.data import TrainingExample, cite_sentences
    from finetune.prompt import PromptPassage, build_messages

    filler = ("Employees must follow the travel policy when they book flights, trains and hotels through the "
              "approved agency, keep receipts for every expense, and submit claims within the deadline. ") * 5
    out = []
    for i in range(n):
        shown = [PromptPassage(f"{filler} Rule {i}-{j}.", f"policy-{j}.md") for j in range(passages)]
        out.append(TrainingExample(f"b{i}", f"b{i}", "answer", build_messages(f"What is rule {i}?", shown),
                                   cite_sentences(f"Rule {i} says claims are due within 30 days.", 1)))
    return out


def random_model(shape: str, folder: Path) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from finetune.models import load_model

    tokenizer = load_model("smollm2-135m-instruct", quantize=False).tokenizer  # any tokenizer with a chat template
    config = LlamaConfig(**{**SHAPES[shape], "vocab_size": max(SHAPES[shape]["vocab_size"], len(tokenizer))},
                         max_position_embeddings=4096, tie_word_embeddings=False)
    torch.set_default_dtype(torch.bfloat16)  # a 7B in fp32 would need 28 GB just to be written
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    torch.set_default_dtype(torch.float32)
    tokenizer.save_pretrained(folder)
    return str(folder)


def child(args) -> None:
    """One configuration: load, train `steps` steps, print a JSON line."""
    import torch

    from finetune.models import load_model
    from finetune.train import TrainOptions, train

    torch.set_num_threads(args.threads)
    quantize = args.config == "qlora"
    loaded = load_model(args.model, quantize=quantize)
    with tempfile.TemporaryDirectory() as work:
        result = train(loaded, examples(args.steps * args.batch_size, args.passages), [], Path(work),
                       TrainOptions(max_steps=args.steps, batch_size=args.batch_size, quantize=quantize,
                                    save_every=10**6, warmup_steps=1), show_progress=False)
    print(json.dumps({"config": args.config, "step_seconds": result.extra["step_seconds"],
                      "median": result.step_seconds_median, "peak_mb": result.peak_memory_mb,
                      "trainable": result.trainable_parameters, "device": result.device, "loss": result.loss_curve}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--random-shape", choices=sorted(SHAPES))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--passages", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="3 steps per configuration")
    parser.add_argument("--config", choices=["qlora", "lora16"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.steps = 3
    if args.config:
        child(args)
        return
    with tempfile.TemporaryDirectory() as scratch:
        model = random_model(args.random_shape, Path(scratch) / "model") if args.random_shape else args.model
        rows = []
        for config in ("qlora", "lora16"):
            command = [sys.executable, __file__, "--config", config, "--model", model, "--steps", str(args.steps),
                       "--batch-size", str(args.batch_size), "--passages", str(args.passages),
                       "--threads", str(args.threads)]
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ,
                                                                                           "PYTHONPATH": str(REPO)})
            if done.returncode != 0:
                sys.exit(f"{config} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"# {os.cpu_count()} cores, torch threads {args.threads}; torch {version('torch')}, "
          f"transformers {version('transformers')}, peft {version('peft')}, bitsandbytes {version('bitsandbytes')}")
    print(f"# model {args.random_shape or args.model}; {args.steps} steps of {args.batch_size} examples "
          f"(~{args.passages} passages each, gradient checkpointing on); step time is the median over the steps")
    print("\n| config | device | step s (median) | min-max step s | peak memory MB | trainable params |\n"
          "|---|---|---|---|---|---|")
    for row in rows:
        spread = row["step_seconds"] or [row["median"]]
        print(f"| {row['config']} | {row['device']} | {row['median']:.2f} | {min(spread):.2f}-{max(spread):.2f} | "
              f"{row['peak_mb']:.0f} | {row['trainable']:,} |")
    q, l16 = rows
    print(f"\nQLoRA / LoRA-16bit: step time x{q['median'] / l16['median']:.2f}, peak memory x{q['peak_mb'] / l16['peak_mb']:.2f}")


if __name__ == "__main__":
    main()
