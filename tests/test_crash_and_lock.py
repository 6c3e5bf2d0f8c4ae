"""kill -9 at any moment leaves the last good index readable; a re-run finishes the job; writers exclude each other."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.pipeline import IngestOptions, ingest
from ingest.reader import IndexReader
from ingest.store import IndexLock

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["leave", "travel", "laptops", "parking", "badges", "printers", "payroll", "security", "wifi", "meals"]


def _write_docs(folder: Path, start: int, count: int, version: str = "v1") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        topic = TOPICS[i % len(TOPICS)]
        paragraphs = "\n\n".join(f"Rule {j} about {topic} ({version}): request number {i}-{j} must be filed "
                                 f"with the {topic} desk within {j + 2} working days." for j in range(12))
        (folder / f"doc{i:03d}.md").write_text(f"# {topic.title()} policy {i}\n\n{paragraphs}\n")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def _assert_consistent(index: Path) -> set[str]:
    """The index opens, and its FAISS vectors are exactly the published chunks."""
    reader = IndexReader(index)
    try:
        docs = reader.documents()
        assert reader.vectors.ntotal == sum(d.n_chunks for d in docs)
        ids = [int(i) for i in reader.allowed_chunk_ids({"everyone"})]
        assert len(ids) == reader.vectors.ntotal
        assert len(reader.chunks(ids)) == len(ids)
        return {d.source for d in docs}
    finally:
        reader.close()


def _staged_versions(index: Path) -> int:
    try:
        with sqlite3.connect(index / "index.sqlite", timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM versions").fetchone()[0]
    except sqlite3.Error:
        return 0


def _kill_when(process: subprocess.Popen, condition, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.02)
    process.kill()
    process.wait()
    return False


@pytest.mark.slow
def test_kill_9_mid_run_keeps_the_old_index_and_a_rerun_completes(tmp_path: Path, embedder) -> None:
    docs, index = tmp_path / "docs", tmp_path / "index"
    _write_docs(docs, 0, 10)
    ingest([docs], IngestOptions(index_dir=index, show_progress=False), embedder)
    before = _assert_consistent(index)
    assert len(before) == 10

    _write_docs(docs, 10, 30)  # 30 new files
    (docs / "doc000.md").unlink()
    process = subprocess.Popen(_cli("ingest", str(docs), "--index", str(index), "--batch-chunks", "8", "-q"),
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # 10 published versions exist already: kill once a third of the new files are embedded and saved.
    assert _kill_when(process, lambda: _staged_versions(index) >= 20), "the run ended before it could be killed"
    assert _assert_consistent(index) == before, "a killed run changed what readers see"

    embedder.texts_embedded = 0
    summary = ingest([docs], IngestOptions(index_dir=index, show_progress=False), embedder)
    assert len(summary.added) == 30 and summary.removed == ["doc000.md"]
    total_chunks = sum(n.n_chunks for n in IndexReader(index).documents())
    assert 0 < embedder.texts_embedded < total_chunks - 9 * 2, "work saved before the kill was embedded again"
    assert len(_assert_consistent(index)) == 39


@pytest.mark.slow
def test_kill_9_around_publish_leaves_old_or_new_index_never_a_mix(tmp_path: Path, embedder) -> None:
    docs, index = tmp_path / "docs", tmp_path / "index"
    _write_docs(docs, 0, 12)
    ingest([docs], IngestOptions(index_dir=index, show_progress=False), embedder)
    old = _assert_consistent(index)
    for attempt, delay in enumerate([0.0, 0.05, 0.15]):
        _write_docs(docs, 0, 12, version=f"v{attempt + 2}")  # every file changes
        process = subprocess.Popen(_cli("ingest", str(docs), "--index", str(index), "-q"), cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # All 12 new versions staged: the run is now writing the FAISS file and committing.
        _kill_when(process, lambda: _staged_versions(index) >= 24 and (time.sleep(delay) or True))
        assert _assert_consistent(index) == old
        reader = IndexReader(index)
        versions = {c.text.split("(")[1].split(")")[0] for c in reader.chunks(
            [int(i) for i in reader.allowed_chunk_ids({"everyone"})])}
        reader.close()
        assert len(versions) == 1, f"a mix of old and new chunks is visible: {versions}"
    summary = ingest([docs], IngestOptions(index_dir=index, show_progress=False), embedder)
    assert summary.unchanged + len(summary.updated) == 12
    assert _assert_consistent(index) == old


def test_a_second_writer_gets_a_clear_message(tmp_path: Path) -> None:
    docs, index = tmp_path / "docs", tmp_path / "index"
    _write_docs(docs, 0, 1)
    index.mkdir()
    with IndexLock(index):
        result = subprocess.run(_cli("ingest", str(docs), "--index", str(index), "-q"), cwd=REPO,
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"error: index {index} is being updated by pid {os.getpid()}")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_two_concurrent_ingest_runs_do_not_corrupt_the_index(tmp_path: Path) -> None:
    docs, index = tmp_path / "docs", tmp_path / "index"
    _write_docs(docs, 0, 8)
    runs = [subprocess.Popen(_cli("ingest", str(docs), "--index", str(index), "-q"), cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 2], outcomes
    assert "is being updated by" in next(err for code, err in outcomes if code == 2)
    assert len(_assert_consistent(index)) == 8
