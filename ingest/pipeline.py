"""The ingest run: scan → hash → (load → chunk → embed → stage) for what changed → publish atomically."""
from __future__ import annotations

import json
import time
from concurrent.futures import Future
from copy import deepcopy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from ingest.acl import AclRules
from ingest.chunking import Chunker, ChunkingOptions
from ingest.defaults import MAX_FILE_MB, OCR_TIMEOUT_S
from ingest.documents import Chunk, FileProblem, IngestSummary, LoadedDocument
from ingest.embedding import DEFAULT_EMBEDDER, Embedder
from ingest.errors import GroundworkError
from ingest.loaders import LoadError, load_document
from ingest.permissions import Reached, effective_groups, paths_reaching
from ingest.run_embedding import RunEmbedder
from ingest.scan import Candidate, display, scan, sha256_of, snapshot
from ingest.store import DocumentRecord, IndexLock
from ingest.vector_store import VectorStoreWriter, open_vector_store_writer

ProgressCallback = Callable[[int, int, str], None]  # (files done, files to process, current file)


class IngestError(GroundworkError):
    """The run cannot start (bad arguments); the message is one line for the user."""


@dataclass(frozen=True)
class IngestOptions:
    """How an ingest run behaves."""

    index_dir: Path = Path("groundwork-data/index")  # where the index lives (created if missing)
    acl_file: Path | None = None  # ACL rules; None keeps the rules stored with the index (default: everyone)
    store_acl: bool = True  # save acl_file's rules as the index's rules (False: a synced folder's own rules)
    embedder: str = DEFAULT_EMBEDDER  # model name, local folder, or cached Hugging Face id
    chunking: ChunkingOptions = field(default_factory=ChunkingOptions)
    max_file_mb: float = MAX_FILE_MB  # larger files are skipped with a reason
    ocr_timeout_s: float = OCR_TIMEOUT_S  # per file: Tesseract time all its scanned pages may take together
    batch_chunks: int = 64  # chunks embedded together before their files are saved
    vector_store: str | None = None  # "faiss", "milvus:///path/x.db", "milvus://host:19530"; None: the index's own
    show_progress: bool = True  # tqdm bars on stderr


@dataclass
class _Pending:
    candidate: Candidate
    key: str
    sha256: str
    groups: tuple[str, ...]
    document: LoadedDocument
    chunks: list[Chunk]


def ingest(paths: list[Path | str], options: IngestOptions = IngestOptions(), embedder: Embedder | None = None,
           on_progress: ProgressCallback | None = None) -> IngestSummary:
    """Bring the index at options.index_dir up to date with the files under `paths`."""
    started = time.perf_counter()
    roots = [Path(p) for p in paths]
    for root in roots:
        if not root.exists():
            raise IngestError(f"{root}: no such file or folder")
    embedder = embedder or Embedder(options.embedder)
    index_dir = options.index_dir
    index_dir.mkdir(parents=True, exist_ok=True)
    summary = IngestSummary()

    with IndexLock(index_dir):
        writer = open_vector_store_writer(index_dir, embedder.name, options.vector_store, options.show_progress)
        try:
            rules = _acl_rules(options, writer)
            found = scan(roots, max_file_bytes=int(options.max_file_mb * 1e6), exclude=[index_dir])
            summary.skipped = found.skipped
            existing = writer.documents()
            upserts: list[DocumentRecord] = []
            todo: list[tuple[Candidate, str, str, tuple[str, ...]]] = []

            reached = _hash_candidates(found.candidates, summary, options.show_progress)
            covered = _covered(existing, roots)
            outside = {key: doc for key, doc in existing.items() if key not in covered}
            access = effective_groups(reached, rules, outside)
            summary.acl_tightened = access.notes
            for key, groups in access.tightened_indexed.items():  # a copy indexed from another folder
                upserts.append(replace(existing[key], groups=groups))
                summary.acl_changed += 1
            for item in reached:
                cand, key, sha = item.candidate, item.key, item.sha256
                groups = access.groups[key]
                old = existing.get(key)
                if old is not None and old.sha256 == sha:
                    summary.unchanged += 1
                    if old.groups != groups or old.source != cand.source:
                        upserts.append(_record(cand, key, sha, groups, old.title, old.n_chunks))
                        summary.acl_changed += 1
                    continue
                todo.append((cand, key, sha, groups))

            removals = [key for key in existing if key in covered and key not in found.present]

            upserts += _process(todo, writer, embedder, options, summary, existing, on_progress)
            summary.removed = [existing[p].source for p in removals]
            summary.chunks_removed = sum(existing[p].n_chunks for p in removals) + sum(
                existing[d.path].n_chunks for d in upserts if d.path in existing and existing[d.path].sha256 != d.sha256)

            summary.seconds = time.perf_counter() - started
            extra = {"last_run": json.dumps(_summary_for_storage(summary))}
            if options.acl_file is not None and options.store_acl:
                extra["acl_rules"] = rules.source_text
            if upserts or removals:
                writer.publish(upserts, removals, extra)
            else:
                writer.set_meta(extra)
            summary.documents_total, summary.chunks_total = writer.totals()
        finally:
            writer.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _acl_rules(options: IngestOptions, writer: VectorStoreWriter) -> AclRules:
    if options.acl_file is not None:
        return AclRules.load(options.acl_file)
    stored = writer.stored_acl_text()
    return AclRules.parse(stored, origin="ACL rules stored in the index") if stored else AclRules()


def _hash_candidates(candidates: list[Candidate], summary: IngestSummary, show_progress: bool) -> list[Reached]:
    reached = []
    for cand in tqdm(candidates, desc="Checking", unit="file", leave=False, disable=not show_progress):
        try:
            sha = sha256_of(cand.path)
        except OSError as exc:
            summary.failed.append(FileProblem(cand.source, f"cannot read: {exc.strerror}"))
            continue
        reached.append(Reached(cand, display(cand.root / cand.source), sha, cand.inode, paths_reaching(cand)))
    return reached


def _covered(existing: dict[str, DocumentRecord], roots: list[Path]) -> set[str]:
    """Keys of the indexed documents this run's roots cover (each is re-checked, or removed if gone)."""
    folders = {display(r.resolve()) for r in roots if r.is_dir()}
    files = {display(r.resolve().parent / r.name) for r in roots if not r.is_dir()}
    return {key for key, doc in existing.items() if doc.root in folders or key in files}


def _record(cand: Candidate, key: str, sha: str, groups: tuple[str, ...], title: str | None,
            n_chunks: int) -> DocumentRecord:
    return DocumentRecord(path=key, root=display(cand.root), source=cand.source, sha256=sha, size=cand.size,
                          mtime=cand.mtime, file_type=cand.path.suffix.lower().lstrip("."), title=title,
                          groups=groups, n_chunks=n_chunks, ingested_at=time.time())


def _process(todo, writer: VectorStoreWriter, embedder: Embedder, options: IngestOptions, summary: IngestSummary,
             existing: dict[str, DocumentRecord], on_progress: ProgressCallback | None) -> list[DocumentRecord]:
    """Load, chunk and embed each new or changed file, saving every batch so a crash loses little."""
    done: list[DocumentRecord] = []
    pending: list[_Pending] = []
    chunker: Chunker | None = None
    bar = tqdm(total=len(todo), desc="Indexing", unit="file", disable=not options.show_progress, dynamic_ncols=True)
    chunks_done = 0
    started = time.perf_counter()

    def finish(cand: Candidate, key: str, sha: str, groups, title, n_chunks: int) -> None:
        nonlocal chunks_done
        done.append(_record(cand, key, sha, groups, title, n_chunks))
        (summary.updated if key in existing else summary.added).append(cand.source)
        summary.chunks_added += n_chunks
        chunks_done += n_chunks
        bar.update(1)
        bar.set_postfix(chunks=chunks_done, chunks_per_s=f"{chunks_done / max(time.perf_counter() - started, 1e-6):.1f}")
        if on_progress:
            on_progress(bar.n, len(todo), cand.source)

    run_embedder = RunEmbedder(embedder)
    in_flight: list[tuple[Future, list[_Pending]]] = []  # the batch being embedded while the next files parse

    def collect() -> None:
        """Stage the batch in flight (on this thread: the writer's connection stays on it)."""
        if not in_flight:
            return
        future, items = in_flight.pop()
        vectors = future.result()
        writer.check_dimension(vectors.shape[1])
        offset = 0
        for item in items:
            n = len(item.chunks)
            writer.stage(item.key, item.sha256, item.document.title, item.chunks, vectors[offset:offset + n])
            offset += n
            finish(item.candidate, item.key, item.sha256, item.groups, item.document.title, n)

    def flush() -> None:
        if not pending:
            return
        batch = list(pending)
        pending.clear()
        future = run_embedder.submit([c.embedding_text() for p in batch for c in p.chunks])
        collect()  # the previous batch, while this one embeds
        in_flight.append((future, batch))

    try:
        for cand, key, sha, groups in todo:
            staged = writer.staged_version(key, sha)
            if staged is not None:  # embedded by an earlier, interrupted run
                finish(cand, key, sha, groups, staged[0], staged[1])
                continue
            try:
                with snapshot(cand.path, sha) as copy:
                    document = load_document(copy, ocr_timeout_s=options.ocr_timeout_s)
            except (LoadError, OSError) as exc:
                kept = " (previous version kept)" if key in existing else ""
                reason = exc if isinstance(exc, LoadError) else f"cannot read: {exc.strerror}"
                summary.failed.append(FileProblem(cand.source, f"{reason}{kept}"))
                bar.update(1)
                continue
            if document.ocr_pages:
                summary.ocr[cand.source] = document.ocr_pages
            if chunker is None:  # its own tokenizer: the embedder's is busy on the worker thread (not thread-safe)
                chunker = Chunker(deepcopy(embedder.tokenizer), options.chunking)
            pending.append(_Pending(cand, key, sha, groups, document, chunker.chunk(document)))
            if sum(len(p.chunks) for p in pending) >= options.batch_chunks:
                flush()
        flush()
        collect()
    finally:
        run_embedder.close()
        bar.close()
    return done


def _summary_for_storage(summary: IngestSummary) -> dict:
    data = asdict(summary)
    for key in ("added", "updated", "removed"):
        data[key] = len(data[key])
    return data
