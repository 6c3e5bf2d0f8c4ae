"""Engine latency on this machine: retrieval p50/p95 per index, and time to first token / tokens per second
for the default model in 4-bit vs bf16, with quoted vs free decoding, 5 retrieved passages in the prompt
(same questions, same run).

    python benchmarks/engine_latency.py --index DIR [--index DIR2] --qa FILE [--threads 1] [--quick]
    python benchmarks/engine_latency.py --single-stream [--llm-url URL] [--prompt-tokens 1338] [--new-tokens 96]
    python benchmarks/engine_latency.py --concurrent 1,2,4,8 [--prompt-tokens 1338] [--new-tokens 96]

--single-stream (issue 17): one answer at a time, free decoding, a prompt of about --prompt-tokens tokens (acme
policy text and a question) and up to --new-tokens tokens: first token and tokens/s for the packaged model in-process
(transformers 4-bit NF4, then bf16) and on the OpenAI-compatible server at --llm-url (vLLM; the openai client,
streamed, greedy). llama.cpp is listed only where its server's URL is given (--llamacpp-url).

--concurrent N,... (issue 17, many users at once): N streams of that prompt started together on the in-process
4-bit model, batched (app/batching.py, the default) and one at a time (max_batch=1, what the lock did before):
latency p50/p95, first token p50/p95 and aggregate tokens/s per N. Each stream gets a different question.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from app.engine import AnswerOptions, Engine, EngineConfig
from app.generator import GenerationOptions
from ingest.retrieval import RetrievalOptions
from app.users import User

USER = User("bench", "employee", ("everyone", "hr", "finance"))


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# --- issue 17: single stream per engine, and concurrent streams in-process ----------------------------------------
ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["How many days do I have to submit an expense claim?", "What is the meal allowance in Austin?",
             "How many days of annual leave do employees get?", "Who approves travel over 2,000 USD?",
             "How do I reset my laptop password?", "Can I work from abroad?", "What is the parental leave policy?",
             "Which receipts must be kept?"]


def long_prompt(tokenizer, tokens: int, question: str) -> list[dict[str, str]]:
    """Acme policy text cut so that the chat prompt has about `tokens` tokens, then the question (a RAG prompt)."""
    text = "\n\n".join(p.read_text() for p in sorted((ROOT / "examples/acme/docs").rglob("*.md")))
    ids = tokenizer.encode(text, add_special_tokens=False)

    def messages(n: int) -> list[dict[str, str]]:
        passages = tokenizer.decode(ids[:n])
        return [{"role": "system", "content": "Answer from the passages."},
                {"role": "user", "content": f"Passages:\n{passages}\n\nQuestion: {question}"}]

    overhead = len(tokenizer.apply_chat_template(messages(0), add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])
    return messages(max(tokens - overhead, 0))


def timed_stream(pieces) -> tuple[float, float, str]:
    """(first piece s, last piece s, text) of an iterator of text pieces, from the call."""
    began = time.perf_counter()
    first, end, text = None, began, []
    for piece in pieces:
        end = time.perf_counter()
        first = first or end
        text.append(piece)
    return (first or end) - began, end - began, "".join(text)


def single_stream(args) -> None:
    from app.generator import TransformersGenerator
    from finetune.models import clear_model_cache, get_model

    print(f"\nSingle stream, free decoding, greedy, prompt ~{args.prompt_tokens} tokens, up to {args.new_tokens} new "
          f"(median of {args.repeats} after a warm-up):\n")
    print("| engine | prompt tokens | first token s | tokens/s (decode) | tokens | end-to-end s |\n|---|---|---|---|---|---|")
    options = GenerationOptions(max_new_tokens=args.new_tokens)
    tokenizer = None
    for quantize, name in ((True, "transformers 4-bit NF4 (in-process)"), (False, "transformers bf16 (in-process)")):
        loaded = get_model("smollm2-135m-instruct", quantize=quantize)
        generator, tokenizer = TransformersGenerator(loaded), loaded.tokenizer
        report(name, [_local(generator, long_prompt(tokenizer, args.prompt_tokens, q), options)
                      for q in [QUESTIONS[0]] + QUESTIONS[:args.repeats]][1:])
        clear_model_cache()
    for name, url in (("vLLM-CPU (OpenAI-compatible server)", args.llm_url), ("llama.cpp server", args.llamacpp_url)):
        if not url:
            print(f"| {name} | - | not measured: no URL given | | | |")
            continue
        report(name, [_remote(url, long_prompt(tokenizer, args.prompt_tokens, q), args.new_tokens)
                      for q in [QUESTIONS[0]] + QUESTIONS[:args.repeats]][1:])


def _local(generator, messages, options) -> tuple[int, float, float, int]:
    first, total, text = timed_stream(generator.stream(messages, options))
    prompt = len(generator.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                         return_dict=True)["input_ids"])
    return prompt, first, total, generator.count_tokens(text)


def _remote(url: str, messages, new_tokens: int) -> tuple[int, float, float, int]:
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key=os.environ.get("GROUNDWORK_LLM_API_KEY", "none"), timeout=600)
    model = client.models.list().data[0].id
    usage = {}

    def pieces():
        stream = client.chat.completions.create(model=model, messages=messages, max_tokens=new_tokens,
                                                temperature=0.0, stream=True,
                                                stream_options={"include_usage": True})
        for chunk in stream:
            if chunk.usage is not None:
                usage.update(prompt=chunk.usage.prompt_tokens, completion=chunk.usage.completion_tokens)
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    first, total, _ = timed_stream(pieces())
    return usage.get("prompt", 0), first, total, usage.get("completion", 0)


def report(name: str, runs: list[tuple[int, float, float, int]]) -> None:
    prompt = statistics.median(r[0] for r in runs)
    first = statistics.median(r[1] for r in runs)
    rate = statistics.median((r[3] - 1) / max(r[2] - r[1], 1e-6) for r in runs)  # tokens after the first
    print(f"| {name} | {prompt:.0f} | {first:.2f} | {rate:.1f} | {statistics.median(r[3] for r in runs):.0f} | "
          f"{statistics.median(r[2] for r in runs):.1f} |", flush=True)


def concurrent(args) -> None:
    import threading

    from app.generator import TransformersGenerator
    from finetune.models import get_model

    loaded = get_model("smollm2-135m-instruct", quantize=True)
    options = GenerationOptions(max_new_tokens=args.new_tokens)
    counts = [int(n) for n in args.concurrent.split(",") if n.strip()]
    print(f"\nConcurrent streams, in-process transformers 4-bit NF4, free decoding, prompt ~{args.prompt_tokens} "
          f"tokens, up to {args.new_tokens} new, all started together:\n")
    print("| streams | generation | latency p50 s | p95 s | first token p50 s | p95 s | aggregate tokens/s | wall s |\n"
          "|---|---|---|---|---|---|---|---|")
    prompts = [long_prompt(loaded.tokenizer, args.prompt_tokens, q) for q in QUESTIONS]
    for n in counts:
        for label, max_batch in (("one at a time (before)", 1), ("batched", 8)):
            generator = TransformersGenerator(loaded, max_batch=max_batch)
            list(generator.stream(prompts[0], GenerationOptions(max_new_tokens=4)))  # warm-up
            results: list[tuple[float, float, int]] = [None] * n  # type: ignore[list-item]

            def user(i: int) -> None:
                first, total, text = timed_stream(generator.stream(prompts[i % len(prompts)], options))
                results[i] = (first, total, generator.count_tokens(text))

            began = time.perf_counter()
            threads = [threading.Thread(target=user, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - began
            latency, first = [r[1] for r in results], [r[0] for r in results]
            print(f"| {n} | {label} | {statistics.median(latency):.1f} | {percentile(latency, 0.95):.1f} | "
                  f"{statistics.median(first):.2f} | {percentile(first, 0.95):.2f} | "
                  f"{sum(r[2] for r in results) / wall:.1f} | {wall:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, action="append")
    parser.add_argument("--qa", type=Path)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--single-stream", action="store_true", help="The single-stream table per engine (issue 17).")
    parser.add_argument("--concurrent", default="", help="Comma-separated numbers of concurrent in-process streams.")
    parser.add_argument("--llm-url", default="http://127.0.0.1:8011/v1", help="vLLM's OpenAI-compatible URL.")
    parser.add_argument("--llamacpp-url", default=None, help="A llama.cpp server's OpenAI-compatible URL, if any.")
    parser.add_argument("--prompt-tokens", type=int, default=1338)
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.single_stream or args.concurrent:
        print(f"# {os.cpu_count()} cores, torch threads {args.threads}, load average {os.getloadavg()[0]:.1f}; "
              f"torch {version('torch')}, transformers {version('transformers')}, bitsandbytes "
              f"{version('bitsandbytes')}")
        if args.single_stream:
            single_stream(args)
        if args.concurrent:
            concurrent(args)
        return
    if not args.index or not args.qa:
        parser.error("--index and --qa are required (unless --single-stream or --concurrent)")
    questions = [json.loads(line)["question"] for line in args.qa.read_text().splitlines() if line.strip()]
    print(f"# {os.cpu_count()} cores, torch threads {args.threads}; torch {version('torch')}, "
          f"transformers {version('transformers')}, bitsandbytes {version('bitsandbytes')}, faiss {version('faiss-cpu')}")

    print("\n| index | chunks | retrieval p50 ms | p95 ms | runs |\n|---|---|---|---|---|")
    for index in args.index:
        engine = Engine(EngineConfig(index_dir=index))
        retriever = engine.retriever
        for q in questions[:5]:
            retriever.retrieve(q, set(USER.groups))  # warm-up, builds BM25
        runs = questions[: 40 if args.quick else 150]
        timings = []
        for q in runs:
            started = time.perf_counter()
            retriever.retrieve(q, set(USER.groups))
            timings.append((time.perf_counter() - started) * 1000)
        print(f"| {index} | {engine.reader.stats().chunks} | {statistics.median(timings):.1f} | "
              f"{percentile(timings, 0.95):.1f} | {len(runs)} |")

    print("\n| model | decoding | load s | first token s (p50) | tokens/s (p50) | min-max tokens/s | questions |\n"
          "|---|---|---|---|---|---|---|")
    gen_questions = questions[:3 if args.quick else 6]
    medians = {}
    for quantize, decoding in ((True, "quote"), (True, "free"), (False, "quote"), (False, "free")):
        # every question reaches the model: no relevance cut-offs, and the base model may not refuse
        options = AnswerOptions(retrieval=RetrievalOptions(top_k=5, min_score=-1.0), decoding=decoding,
                                min_quote_similarity=-1.0, quote_refusal_threshold=1.1,
                                generation=GenerationOptions(max_new_tokens=64), require_support=False)
        engine = Engine(EngineConfig(index_dir=args.index[0], quantize=quantize))
        started = time.perf_counter()
        generator = engine.generator
        load = time.perf_counter() - started
        list(engine.stream(questions[0], USER, options))  # warm-up
        first, rates = [], []
        for q in gen_questions:
            began = time.perf_counter()
            first_token = None
            pieces = []
            for item in engine.stream(q, USER, options):
                if isinstance(item, str):
                    first_token = first_token or time.perf_counter()
                    pieces.append(item)
                    end = time.perf_counter()  # last streamed piece: citation checks afterwards are not counted
            retrieved = item.retrieved
            tokens = generator.count_tokens(pieces[-1]) if pieces else 0
            first.append(first_token - began)
            rates.append(tokens / max(end - first_token, 1e-6))
        name = "4-bit NF4" if quantize else "bf16"
        medians[name, decoding] = (statistics.median(first), statistics.median(rates))
        print(f"| {name} | {decoding} | {load:.1f} | {statistics.median(first):.2f} | {statistics.median(rates):.1f} | "
              f"{min(rates):.1f}-{max(rates):.1f} | {len(gen_questions)} ({len(retrieved)} passages) |")
        from finetune.models import clear_model_cache

        if decoding == "free":
            clear_model_cache()
    for decoding in ("free", "quote"):
        (q_first, q_rate), (b_first, b_rate) = medians["4-bit NF4", decoding], medians["bf16", decoding]
        print(f"{decoding}: 4-bit / bf16: first token x{q_first / b_first:.2f}, tokens/s x{q_rate / b_rate:.2f}")
    for name in ("4-bit NF4", "bf16"):
        (q_first, q_rate), (f_first, f_rate) = medians[name, "quote"], medians[name, "free"]
        print(f"{name}: quote / free: first token x{q_first / f_first:.2f}, tokens/s x{q_rate / f_rate:.2f}")


if __name__ == "__main__":
    main()
