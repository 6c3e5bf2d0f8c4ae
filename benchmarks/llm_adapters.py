"""Adapters on a vLLM server, per-request LoRA against merged: first token and decode speed of the base model,
the base with LoRA enabled, a LoRA request, and the adapter merged into its base (`groundwork llm serve --merged`).

    python benchmarks/llm_adapters.py [--workdir DIR] [CONFIG ...]   (needs `make llm`; results: DIR/measure.json)

The adapter is the shipped QLoRA adapter (finetune/shipped/groundwork-quote, r=16, all projections), merged once
into DIR/merged. Prompt: acme documents as numbered passages, ~2,900 tokens; 96 tokens forced (ignore_eos),
greedy, streamed; each run salts the system prompt so the prefix cache does not help. Three runs per
configuration: the first is cold (LoRA loading), the median of the other two is reported.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from openai import OpenAI

from app.llm_server import LLMServer
from finetune.adapters import AdapterRegistry, read_card
from finetune.models import DEFAULT_MODEL

SHIPPED = Path("finetune/shipped/groundwork-quote")
RUNS = 3  # the first is reported separately (cold: LoRA loading, prefix cache empty)


def prompt(target_words: int = 950) -> list[dict]:
    passages, words = [], 0
    for path in sorted(Path("examples/acme/docs").rglob("*.md")):
        text = " ".join(path.read_text(encoding="utf-8").split())
        passages.append(f"[{len(passages) + 1}] ({path.name}) {text}")
        words += len(text.split())
        if words > target_words:
            break
    system = "Answer the question from the numbered passages only, and cite them like [1]."
    return [{"role": "system", "content": system},
            {"role": "user", "content": "\n\n".join(passages) + "\n\nQuestion: how many days of leave do I get?"}]


def stream_once(client: OpenAI, model: str, messages: list[dict], salt: str) -> dict:
    started = time.perf_counter()
    first = None
    tokens = 0
    messages = [{**messages[0], "content": messages[0]["content"] + salt}, *messages[1:]]  # defeat prefix caching
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=96, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter()
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
            prompt_tokens = chunk.usage.prompt_tokens
    done = time.perf_counter()
    return {"first_token_s": round(first - started, 3), "decode_tok_s": round((tokens - 1) / (done - first), 1),
            "tokens": tokens, "prompt_tokens": prompt_tokens, "total_s": round(done - started, 2)}


def measure(server: LLMServer, model: str, label: str) -> dict:
    client = OpenAI(base_url=server.url, api_key="unused", timeout=600, max_retries=0)
    runs = [stream_once(client, model, prompt(), f" (run {label} {i})") for i in range(RUNS)]
    warm = runs[1:]
    result = {"config": label, "cold": runs[0],
              "first_token_s_median": statistics.median(r["first_token_s"] for r in warm),
              "decode_tok_s_median": statistics.median(r["decode_tok_s"] for r in warm), "runs": runs}
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="registry, merged model, logs and results")
    parser.add_argument("--port", type=int, default=8022)
    parser.add_argument("configs", nargs="*", help="only these configurations (names as printed)")
    args = parser.parse_args()
    out = args.workdir or Path(tempfile.mkdtemp(prefix="gw-llm-adapters-"))
    out.mkdir(parents=True, exist_ok=True)
    registry_dir = out / "registry"
    registry = AdapterRegistry(registry_dir)
    if "groundwork-quote" not in registry.names():
        registry.promote(registry.add("groundwork-quote", SHIPPED, read_card(SHIPPED)).ref)
    label = registry.default().ref
    results = []
    common = dict(kv_cache_gib=1, start_timeout_s=1500)
    merged = out / "merged"
    if not (merged / "config.json").is_file():
        from finetune.export import export_adapter

        export_adapter(registry.get(label), merged, merged=True)
    plans = [("base, LoRA off", dict(adapters_dir=None), DEFAULT_MODEL),
             ("base, LoRA on", dict(adapters_dir=registry_dir), DEFAULT_MODEL),
             ("LoRA request", dict(adapters_dir=registry_dir), label),
             ("merged adapter", dict(model=str(merged), served_name="merged"), "merged")]
    wanted = set(args.configs)
    server = None
    previous = None
    for name, options, model in plans:
        if wanted and name not in wanted:
            continue
        if options != previous:
            if server is not None:
                server.stop()
            server = LLMServer(**{"model": DEFAULT_MODEL, "port": args.port, "log_file": out / f"server-{len(results)}.log",
                                  **common, **options})
            started = time.perf_counter()
            server.start()
            print(f"{name}: server up in {time.perf_counter() - started:.0f} s; adapters {list(server.adapters)}",
                  flush=True)
            previous = options
        results.append(measure(server, model, name))
    if server is not None:
        server.stop()
    (out / "measure.json").write_text(json.dumps(results, indent=1))
    print(f"| configuration | first token (s) | decode tok/s |\n|---|---:|---:|")
    for r in results:
        print(f"| {r['config']} | {r['first_token_s_median']:.2f} | {r['decode_tok_s_median']:.1f} |")


if __name__ == "__main__":
    main()
