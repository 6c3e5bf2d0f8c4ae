"""The batch runner: every question of a QA set through the engine (or a baseline), one results.jsonl line each.

Modes: `rag` (the Engine: retrieval, prompt, model, citation check), `closed-book` (the same model with no
passages), `extractive` (the top retrieved passage as the answer, cited [1], no model), `first-sentence` (the
first sentence of that passage that is not a question, cited [1], no model) and `oracle` (the engine's answer
stage given the gold passage alone); the baselines' answer stages are in eval.baselines.

results.jsonl is appended one line per question (flushed and fsynced), so an interrupted run resumes where it
stopped: a re-run with the same output folder skips the ids already there, after checking in run.json that
the settings that shape the answers are the same. summary.json is written at the end.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from eval.errors import EvalError
from ingest.files import atomic_write, atomic_write_json
from eval.metrics import CORRECT_THRESHOLD, DocumentAccess, question_metrics, summarize
from eval.qa import QAItem, load_qa, resolve_users, select_split

Mode = Literal["rag", "closed-book", "extractive", "first-sentence", "oracle"]
MODES = ("rag", "closed-book", "extractive", "first-sentence", "oracle")
NO_MODEL = ("extractive", "first-sentence")  # modes that answer without the model
WITH_DECODING = ("rag", "oracle")  # modes that answer with the engine's grounded stage (decoding, raw answer)
RESULTS = "results.jsonl"
SUMMARY = "summary.json"
RUN = "run.json"
RANKING_DEPTH = 10  # passages in the evaluator's own ranking, for hit@10 and MRR

from finetune.models import DEFAULT_MODEL  # noqa: E402
from finetune.prompt import CLOSED_BOOK_PROMPT  # noqa: E402,F401  (re-exported: the closed-book baseline's prompt)


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run."""

    qa_file: Path  # the QA set (JSONL)
    index_dir: Path  # the index the questions are asked against
    out_dir: Path  # results.jsonl, summary.json and run.json go here
    mode: Mode = "rag"  # rag, closed-book (no passages), extractive (top passage, no model), first-sentence
    #                     (its first sentence, no model) or oracle (the gold passage alone)
    adapter: str | None = None  # EngineConfig(adapter=...): NAME, NAME@vN, a folder, "none"; None = the promoted one
    adapters_dir: Path | None = None  # the adapter registry; None = EngineConfig's default
    model: str = DEFAULT_MODEL  # base model name, Hugging Face id or folder
    quantize: bool = True  # 4-bit NF4; False loads bf16
    llm_url: str | None = None  # an OpenAI-compatible server runs the model (EngineConfig.llm_url); None = in-process
    split: str = "all"  # train, validation, test (the held-out split) or all
    users_file: Path | None = None  # resolves the QA set's `user` names
    top_k: int = 5  # passages given to the model (as `groundwork ask --top-k`)
    max_new_tokens: int = 200  # longest answer
    decoding: str = "quote"  # rag and oracle: app.engine.DECODINGS ("quote": selected verbatim quotes or a refusal)
    refusal_threshold: float | None = None  # quote: refuse below this P(right); None = the fitted weights' own
    workers: int = 1  # questions answered at once (one engine each; the model's weights are shared)
    limit: int | None = None  # only the first N selected questions (quick runs)
    threshold: float = CORRECT_THRESHOLD  # correctness_score at or above which an answer counts as correct
    name: str | None = None  # the run's label in reports; default: the output folder's name
    progress: bool = True  # a progress bar on stderr
    rescore: bool = False  # recompute the per-question metrics of the answers already in results.jsonl
    guardrails: object | None = None  # app.guardrails.GuardrailConfig; None = defaults
    rewrite: str | None = None  # follow-ups: "keywords", "model" or "none" (app.conversations.rewrite); None = the
    #                             engine's default


@dataclass
class RunSummary:
    """What a run did, for the one-line summary."""

    out_dir: Path
    summary: dict
    answered_now: int
    resumed: int
    seconds: float
    leaks: int = 0
    extra: dict = field(default_factory=dict)

    def one_line(self) -> str:
        m = self.summary["metrics"]

        def fmt(key: str) -> str:
            value = m.get(key)
            return "n/a" if value is None else f"{value:.3f}"

        resumed = f" ({self.resumed} resumed)" if self.resumed else ""
        return (f"{self.summary['counts']['questions']} questions{resumed} in {self.seconds:.0f}s: grounded "
                f"accuracy {fmt('grounded_accuracy')} (strict {fmt('grounded_accuracy_strict')}), correct "
                f"{fmt('correct')} (strict {fmt('correct_strict')}), hit@5 {fmt('hit@5')}, "
                f"answerable refused {fmt('answerable_refused')}, unanswerable refused "
                f"{fmt('unanswerable_refused')}, permission leaks {self.leaks}{self._followups()} -> "
                f"{self.out_dir / SUMMARY}")

    def _followups(self) -> str:
        m = self.summary["metrics"]
        if m.get("followup_hit@5") is None:
            return ""
        latency = m.get("rewrite_p50")
        return (f", follow-ups hit@5 {m['followup_hit@5']:.3f} rewritten vs {m['followup_hit@5_no_rewrite']:.3f} as "
                f"asked (rewrite p50 {'n/a' if latency is None else f'{latency * 1000:.1f} ms'})")


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _fingerprint(config: EvalConfig, index_generation: int, adapter_resolved: str | None) -> dict:
    """The settings that shape the answers: a resumed run must have the same ones."""
    model = config.mode not in NO_MODEL
    return {"mode": config.mode, "index_dir": str(Path(config.index_dir).resolve()),
            "index_generation": index_generation, "model": config.model if model else None,
            "adapter": adapter_resolved,  # what answers (NAME@vN, a folder or None), not how it was named
            "quantize": config.quantize if model else None, "top_k": config.top_k,
            "max_new_tokens": config.max_new_tokens if model else None,
            "decoding": config.decoding if config.mode in WITH_DECODING else None,
            # the packaged selection weights (an adapter's own are in its card, covered by "adapter")
            "selection_weights": _selection_weights_sha() if config.mode in WITH_DECODING and config.decoding == "quote"
            else None,
            "refusal_threshold": config.refusal_threshold if config.mode in WITH_DECODING else None,
            "guardrails": _guardrails_dict(config.guardrails),
            "rewrite": config.rewrite,
            # through a server: its answers may differ (a run folder resumes on the same backend only)
            **({"llm_url": config.llm_url} if config.llm_url and model else {})}


def _selection_weights_sha() -> str:
    import hashlib

    from app.selection import WEIGHTS_FILE

    return hashlib.sha256(WEIGHTS_FILE.read_bytes()).hexdigest()[:16]


def _guardrails_dict(guardrails) -> dict:
    if guardrails is None:
        from app.guardrails import GuardrailConfig

        guardrails = GuardrailConfig()
    to_dict = getattr(guardrails, "to_dict", None)
    return to_dict() if to_dict else asdict(guardrails)


def read_results(path: Path, repair: bool = False) -> list[dict]:
    """The complete lines of a results file; with repair, a torn last line (a crash mid-write) is cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    records, good_end = [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise EvalError(f"{path}: line {len(records) + 1} is not valid JSON; the results file is damaged") \
                from None
        good_end += len(line)
    if repair and good_end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(good_end)
            handle.flush()
            os.fsync(handle.fileno())
    return records


def _write_json(path: Path, data: dict) -> None:
    atomic_write_json(path, data, indent=2, ensure_ascii=False)


def _passage_dict(n: int, passage, text: str | None = None) -> dict:
    chunk = passage.chunk
    return {"n": n, "source": chunk.source, "page": chunk.page, "heading": chunk.heading, "anchor": chunk.anchor,
            "text": chunk.text if text is None else text, "score": round(float(passage.score), 4)}


class _Asker:
    """Answers one question in the configured mode with its own engine (one per worker thread)."""

    def __init__(self, config: EvalConfig, engine) -> None:
        self.config = config
        self.engine = engine
        self.default_stage = engine.answer_stage  # the engine's own stage: RAG answers with it, the oracle wraps it
        from app.engine import AnswerOptions
        from app.generator import GenerationOptions
        from ingest.retrieval import RetrievalOptions

        self.options = AnswerOptions(retrieval=RetrievalOptions(top_k=config.top_k),
                                     generation=GenerationOptions(max_new_tokens=config.max_new_tokens),
                                     decoding=config.decoding, selection_threshold=config.refusal_threshold,
                                     rewrite=config.rewrite)

    def ranking(self, question: str, user) -> list[dict]:
        """The evaluator's own top-10 retrieval (same settings as the engine's), after the question guardrails."""
        checked = self.engine.guardrails.check_question(question)
        if checked.refusal:
            return []
        options = replace(self.options.retrieval, top_k=max(RANKING_DEPTH, self.config.top_k))
        passages = self.engine.retriever.retrieve(checked.text, set(user.groups), options)
        return [{k: v for k, v in _passage_dict(i, p).items() if k != "text"} for i, p in enumerate(passages, 1)]

    def ask(self, item: QAItem, user) -> dict:
        """Answer with the engine; the baselines are the same engine with another answer stage (eval.baselines)."""
        from eval.baselines import stage_for

        mode = self.config.mode
        history = self.live_history(item, user) if item.history else None
        self.engine.answer_stage = stage_for(mode, self.default_stage, item)
        raw, final = "", None
        for final in self.engine.stream(item.question, user, self.options, history):
            if isinstance(final, str):
                raw = final
        answer = final.to_dict()
        if mode in WITH_DECODING:
            answer["raw_answer"] = raw  # the model's text before the citation check (PII-redacted)
        # No retrieval in closed book: no retrieval metrics. A follow-up is ranked as the engine searched it (its
        # standalone rewrite) and, for comparison, as asked (ranking_raw).
        retrieves = self.engine.answer_stage.retrieves
        answer["ranking"] = self.ranking(final.searched_for or item.question, user) if retrieves else None
        if item.history:
            answer["ranking_raw"] = self.ranking(item.question, user) if retrieves else None
            answer["history_answers"] = [a for _, a in history]
        return answer

    def live_history(self, item: QAItem, user) -> list[tuple[str, str]]:
        """The conversation before a follow-up as the chat would have had it: each earlier question of the item's
        history answered by the engine in turn (the set's own answers are what a person would have said; a
        follow-up is asked after what the assistant said). The oracle's earlier turns are answered by RAG: its
        gold passage is the follow-up's."""
        from eval.baselines import stage_for

        mode = "rag" if self.config.mode == "oracle" else self.config.mode
        history: list[tuple[str, str]] = []
        for question, _ in item.history:
            self.engine.answer_stage = stage_for(mode, self.default_stage, item)
            history.append((question, self.engine.answer(question, user, self.options, history or None).answer))
        return history


def _default_engine_factory(config: EvalConfig, embedder):
    def build():
        from app.engine import Engine, EngineConfig
        from app.guardrails import GuardrailConfig

        extra = {"adapters_dir": Path(config.adapters_dir)} if config.adapters_dir is not None else {}
        engine_config = EngineConfig(index_dir=Path(config.index_dir), model=config.model, quantize=config.quantize,
                                     adapter=config.adapter, guardrails=config.guardrails or GuardrailConfig(),
                                     llm_url=config.llm_url, **extra)
        return Engine(engine_config, embedder=embedder)

    return build


def _rescore(path: Path, done: dict[str, dict], by_id: dict[str, QAItem], users: dict, access: DocumentAccess,
             embed) -> None:
    """Recompute the metrics of answered questions (after a change to the metrics or the gold data) and rewrite the
    results file atomically; the answers themselves are kept."""
    records = read_results(path)
    for record in records:
        item = by_id.get(record["id"])
        if item is None:
            continue
        record.update(item.gold_dict())
        record["metrics"] = question_metrics(item, record, embed)
        record["metrics"]["leaks"] = access.leaks(record, record.get("user_groups") or users[item.user].groups)
        done[record["id"]] = record
    atomic_write(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def _resolve_adapter(config: EvalConfig) -> str | None:
    """The adapter the engine will use (the registry's label, e.g. NAME@v3), so that a resumed run notices a promotion
    in between. Resolution is the registry's (finetune.adapters); an unknown adapter fails here, up front."""
    if config.mode in NO_MODEL:
        return None
    from finetune.adapters import AdapterError, AdapterRegistry
    from app.engine import EngineConfig

    registry_dir = Path(config.adapters_dir) if config.adapters_dir is not None else EngineConfig().adapters_dir
    try:
        folder, label = AdapterRegistry(registry_dir).resolve(config.adapter)
    except AdapterError as exc:
        raise EvalError(str(exc).splitlines()[0]) from None
    return label or (str(folder) if folder else None)


def run_eval(config: EvalConfig, engine_factory: Callable[[], object] | None = None, embedder=None) -> RunSummary:
    """Run (or resume) an evaluation and write results.jsonl, summary.json and run.json into config.out_dir.

    engine_factory builds one engine per worker (tests pass engines with scripted generators); by default an
    app.engine.Engine for config's index and model, all sharing one embedder and the process's model cache.
    """
    if config.mode not in MODES:
        raise EvalError(f"unknown mode '{config.mode}': use one of {', '.join(MODES)}")
    from app.engine import DECODINGS

    if config.decoding not in DECODINGS:
        raise EvalError(f"--decoding must be one of {', '.join(DECODINGS)}, not '{config.decoding}'")
    if config.workers < 1:
        raise EvalError("--workers must be at least 1")
    items = select_split(load_qa(config.qa_file), config.split)
    if config.limit is not None:
        items = items[: config.limit]
    if not items:
        raise EvalError(f"{config.qa_file}: no questions in split '{config.split}'")
    users = resolve_users(items, config.users_file)
    from ingest.reader import IndexReader
    from ingest.store import IndexError_

    try:
        reader = IndexReader(config.index_dir)
    except (IndexError_, sqlite3.Error) as exc:
        raise EvalError(str(exc).splitlines()[0]) from None
    try:
        access = DocumentAccess(reader.documents())
        generation, reader_embedder = reader.generation, reader.embedder
    finally:
        reader.close()

    adapter_resolved = _resolve_adapter(config) if engine_factory is None else config.adapter
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(config, generation, adapter_resolved)
    run_path, results_path = out / RUN, out / RESULTS
    if run_path.exists():
        previous = json.loads(run_path.read_text(encoding="utf-8"))
        different = [k for k in fingerprint if previous.get("fingerprint", {}).get(k) != fingerprint[k]]
        if different:
            key = different[0]
            raise EvalError(f"{out} holds a run with {key}={previous.get('fingerprint', {}).get(key)!r}, not "
                            f"{fingerprint[key]!r}: use another --out folder or delete this one")
    elif results_path.exists() and results_path.stat().st_size:
        raise EvalError(f"{results_path} exists without {RUN}: use another --out folder or delete it")
    name = config.name or (json.loads(run_path.read_text())["name"] if run_path.exists() else out.resolve().name)
    _write_json(run_path, {"name": name, "fingerprint": fingerprint, "qa_file": str(config.qa_file),
                           "qa_sha256": _file_sha256(config.qa_file), "split": config.split,
                           "users_file": str(config.users_file) if config.users_file else None,
                           "threshold": config.threshold})

    by_id = {item.id: item for item in items}
    done = {r["id"]: r for r in read_results(results_path, repair=True) if r["id"] in by_id}
    for qid, record in done.items():
        if record["question"] != by_id[qid].question or record["user"] != users[by_id[qid].user].name:
            raise EvalError(f"{results_path}: question '{qid}' has changed since it was answered: use another "
                            f"--out folder or delete this one")
    todo = [item for item in items if item.id not in done]

    if embedder is None and (todo or config.rescore):
        from ingest.embedding import Embedder

        embedder = Embedder(reader_embedder)
    embed = (lambda texts: embedder.encode(list(texts))) if embedder is not None else None
    factory = engine_factory or _default_engine_factory(config, embedder)

    local = threading.local()
    askers: list[_Asker] = []
    askers_lock = threading.Lock()

    def asker() -> _Asker:
        if not hasattr(local, "asker"):
            local.asker = _Asker(config, factory())
            with askers_lock:
                askers.append(local.asker)
        return local.asker

    write_lock = threading.Lock()
    counts = {"answered": 0, "refused": 0, "leaks": 0}

    def answer_one(item: QAItem) -> dict:
        user = users[item.user]
        result = asker().ask(item, user)
        record = {"id": item.id, "mode": config.mode, **result, **item.gold_dict(), "user_groups": list(user.groups)}
        if item.history:
            record["history"] = [{"question": q, "answer": a} for q, a in item.history]
        record["metrics"] = question_metrics(item, record, embed)
        record["metrics"]["leaks"] = access.leaks(record, user.groups)
        return record

    if config.rescore and done:
        _rescore(results_path, done, by_id, users, access, embed)

    started = time.perf_counter()
    bar = None
    if config.progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(items), initial=len(done), unit="q", desc=f"eval {config.mode}", dynamic_ncols=True)
    try:
        with open(results_path, "a", encoding="utf-8") as handle:
            def save(record: dict) -> None:
                with write_lock:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                    done[record["id"]] = record
                    counts["answered"] += 1
                    counts["refused"] += record["refused"]
                    counts["leaks"] += len(record["metrics"]["leaks"])
                    if bar is not None:
                        bar.set_postfix(refused=counts["refused"], leaks=counts["leaks"], refresh=False)
                        bar.update(1)

            if config.workers == 1 or len(todo) <= 1:
                for item in todo:
                    save(answer_one(item))
            else:
                # the first question alone: the model loads (and bitsandbytes repacks its CPU weights) exactly once,
                # before two threads use it at the same time
                save(answer_one(todo[0]))
                todo_rest = todo[1:]
                pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="eval")
                try:
                    for future in as_completed([pool.submit(answer_one, item) for item in todo_rest]):
                        save(future.result())
                finally:  # on an error or Ctrl-C, questions not started yet are dropped, not answered
                    pool.shutdown(wait=True, cancel_futures=True)
    finally:
        if bar is not None:
            bar.close()
        for a in askers:
            close = getattr(getattr(a.engine, "reader", None), "close", None)
            if close:
                close()
    seconds = time.perf_counter() - started

    records = [done[item.id] for item in items]
    summary = summarize(records, config.threshold)
    summary = {"name": name, "mode": config.mode, "adapter": config.adapter, "adapter_used": adapter_resolved,
               "model": next((r["model"] for r in records if r.get("model")), None),
               "split": config.split, "qa_file": str(config.qa_file), "index_dir": str(config.index_dir),
               "ids": [item.id for item in items], **summary,
               "run": {"seconds_this_invocation": round(seconds, 2), "answered_this_invocation": len(todo),
                       "workers": config.workers, "fingerprint": fingerprint}}
    _write_json(out / SUMMARY, summary)
    leaked = summary["metrics"]["leaked_passages"]
    return RunSummary(out_dir=out, summary=summary, answered_now=len(todo), resumed=len(items) - len(todo),
                      seconds=seconds, leaks=leaked)
