"""The `groundwork` command as a user runs it: one-line errors, summaries, stats, and a fast unchanged re-run."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ACME = REPO / "examples" / "acme"


def groundwork(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_version() -> None:
    result = groundwork("version")
    assert result.returncode == 0 and result.stdout.startswith("groundwork 0.")


@pytest.mark.parametrize("args, message", [
    (["ingest", "no/such/folder", "--index", "{tmp}/i"], "error: no/such/folder: no such file or folder"),
    (["index", "stats", "--index", "{tmp}/nothing"], "error: no index at {tmp}/nothing"),
    (["ingest", str(ACME / "docs"), "--index", "{tmp}/i", "--acl", "{tmp}/bad.toml"], "error: {tmp}/bad.toml: "),
])
def test_errors_are_one_line_without_traceback(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "bad.toml").write_text('[[rules]]\nglob = "hr/*"\ngroups = "hr"\n')
    result = groundwork(*[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2
    assert result.stderr.startswith(message.format(tmp=tmp_path))
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.slow
def test_demo_corpus_ingest_stats_and_a_10x_faster_unchanged_rerun(tmp_path: Path) -> None:
    index = str(tmp_path / "index")
    started = time.perf_counter()
    first = groundwork("ingest", str(ACME / "docs"), "--acl", str(ACME / "acl.toml"), "--index", index)
    first_seconds = time.perf_counter() - started
    assert first.returncode == 0, first.stderr
    assert "26 added" in first.stdout and "0 failed" in first.stdout
    assert "Indexing" in first.stderr and "chunks_per_s" in first.stderr  # the progress bar

    started = time.perf_counter()
    again = groundwork("ingest", str(ACME / "docs"), "--index", index, "-q")
    rerun_seconds = time.perf_counter() - started
    assert again.returncode == 0 and "26 unchanged" in again.stdout
    # Wall time includes ~1 s of interpreter start-up, which a busy CI box can stretch: 10x still proves nothing
    # was re-embedded (a re-embedding run takes as long as the first).
    assert first_seconds / rerun_seconds >= 10, (first_seconds, rerun_seconds)

    stats = groundwork("index", "stats", "--index", index)
    assert "Documents:  26" in stats.stdout
    assert "Groups:     everyone 21, finance 2, hr 3" in stats.stdout
    assert "Formats:    csv 3, docx 3, html 5, md 8, pdf 4, txt 3" in stats.stdout
    assert "Vectors:    faiss" in stats.stdout


def test_summary_lists_each_skipped_file_with_its_reason(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "logo.svg").write_bytes(b"<svg/>")
    (docs / "minutes.doc").write_bytes(b"\xd0\xcf\x11\xe0")
    (docs / "empty.md").write_bytes(b"")
    result = groundwork("ingest", str(docs), "--index", str(tmp_path / "index"), "-q")
    assert result.returncode == 0, result.stderr
    assert "  skipped: empty.md: empty file (0 bytes)" in result.stdout
    assert "  skipped: logo.svg: unsupported file type '.svg'" in result.stdout
    assert "  skipped: minutes.doc: legacy binary Word format (.doc): save it as .docx" in result.stdout
    assert "0 added" in result.stdout
