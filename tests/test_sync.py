"""Folder sync as a user sees it: `groundwork sync add/list/remove/run`, the server's scheduler picking up added,
changed and deleted files, a busy index skipped (not crashed), and folders with different ACL files in one index
keeping their own permissions whatever the order of the runs."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import build_corpus, write_docs
from typer.testing import CliRunner

from app.cli import cli
from ingest.reader import IndexReader
from ingest.store import IndexLock, read_acl_rules
from ingest.sync import BUSY_RETRY_S, SyncError, SyncRegistry, format_interval, parse_interval
from ingest.sync_scheduler import SyncScheduler

REPO = Path(__file__).resolve().parents[1]
LATER = 10 ** 10  # a `now` at which every registered folder is due


def _sources(index: Path, embedder, question: str, groups: set[str] | None = None, k: int = 10) -> list[str]:
    """Paths (keys) of the documents a user in `groups` gets for `question` (None: no filter)."""
    reader = IndexReader(index)
    try:
        hits = reader.search(embedder.encode([question]), k, groups)[0]
        return sorted({c.path for c in reader.chunks([h.chunk_id for h in hits])})
    finally:
        reader.close()


def _documents(index: Path) -> dict[str, tuple[str, ...]]:
    reader = IndexReader(index)
    try:
        return {d.path: d.groups for d in reader.documents()}
    finally:
        reader.close()


def test_intervals_parse_with_a_minimum_and_one_line_errors() -> None:
    assert [parse_interval(t) for t in ("90s", "15m", "2h", "1d", " 5 m ")] == [90, 900, 7200, 86400, 300]
    assert parse_interval("1s", minimum=1) == 1
    assert [format_interval(s) for s in (900, 90, 7200, 86400)] == ["15m", "90s", "2h", "1d"]
    for bad, says in (("15", "not an interval"), ("1.5h", "not an interval"), ("15 minutes", "not an interval"),
                      ("", "not an interval"), ("-5m", "not an interval"), ("30s", "too short")):
        with pytest.raises(SyncError, match=says) as error:
            parse_interval(bad)
        assert "\n" not in str(error.value)


def test_cli_add_list_run_remove_and_purge(tmp_path: Path) -> None:
    runner = CliRunner()
    folder = write_docs(tmp_path / "policies", {"parking.md": "# Parking\n\nParking in lot B costs 4 EUR a day.\n"})
    index = str(tmp_path / "index")

    def run(*args: str):
        return runner.invoke(cli, ["sync", *args, "--index", index])

    for args, message in ((["add", str(tmp_path / "nope")], "no such folder"),
                          (["add", str(folder), "--every", "10s"], "too short"),
                          (["add", str(folder), "--every", "often"], "not an interval"),
                          (["add", str(folder), "--acl", str(tmp_path / "missing.toml")], "cannot read the ACL file"),
                          (["add", str(tmp_path)], "cannot contain or be inside the index"),
                          (["remove", str(folder)], "is not synced")):
        result = run(*args)
        assert result.exit_code != 0 and message in str(result.exception), (args, result.output, result.exception)
    assert "No folders are synced" in run("list").output

    added = run("add", str(folder), "--every", "2h")
    assert added.exit_code == 0 and f"Added {folder.resolve()}: every 2h" in added.output
    listed = run("list").output
    assert str(folder.resolve()) in listed and "last run: never" in listed and "next run: now" in listed
    assert "Updated" in run("add", str(folder), "--every", "1d").output  # a second add changes the registration

    ran = run("run", "-q")
    assert ran.exit_code == 0 and "ok: 1 added" in ran.output
    assert "Nothing to run: no folder is due." in run("run").output  # the next run is a day away
    assert "ok: 0 added, 0 updated, 1 unchanged" in run("run", "--all", "-q").output
    listed = run("list").output
    assert "every 1d" in listed and "ok: 0 added, 0 updated, 1 unchanged" in listed and "next run: now" not in listed

    removed = run("remove", str(folder))
    assert removed.exit_code == 0 and "Its documents stay in" in removed.output and "--purge" in removed.output
    assert list(_documents(Path(index))) == [str(folder.resolve() / "parking.md")]  # still searchable
    assert "No folders are synced" in run("list").output

    run("add", str(folder))
    purged = run("remove", str(folder), "--purge")
    assert purged.exit_code == 0 and "its 1 document(s)" in purged.output
    assert _documents(Path(index)) == {}


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "app.cli", "sync", "add", str(tmp_path / "nope"), "--index",
                             str(tmp_path / "index")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr == f"error: {tmp_path / 'nope'}: no such folder\n"


def test_overlapping_folders_are_refused(tmp_path: Path, embedder) -> None:
    """A file claimed by two runs with different ACL rules would flip between them: nested folders are refused."""
    corpus = tmp_path / "corpus"
    index = build_corpus(corpus, embedder, index=tmp_path / "index")  # corpus/docs ingested as a folder of its own
    registry = SyncRegistry(index)
    for inside_or_around in (corpus / "docs" / "hr", corpus):
        with pytest.raises(SyncError, match="overlaps .*docs, which is ingested as a folder of its own"):
            registry.add(inside_or_around)
    registry.add(corpus / "docs")  # the same folder: sync takes it over
    other = write_docs(tmp_path / "other" / "sub", {"a.md": "# A\n\nText.\n"})
    registry.add(other)
    with pytest.raises(SyncError, match="overlaps the synced folder"):
        registry.add(other.parent)
    assert [f.path for f in registry.folders()] == [str((corpus / "docs").resolve()), str(other.resolve())]


def test_scheduler_picks_up_added_changed_and_deleted_files_and_skips_unchanged(tmp_path: Path, embedder) -> None:
    folder = write_docs(tmp_path / "docs", {"leave.md": "# Leave\n\nEmployees get 27 days of annual leave.\n"})
    index = tmp_path / "index"
    SyncRegistry(index).add(folder, every="15m")
    refreshed = []
    scheduler = SyncScheduler(index, lambda: embedder, on_published=lambda: refreshed.append(1))

    first = scheduler.tick()
    assert [o.ok for o in first] == [True] and refreshed == [1]
    assert scheduler.tick() == []  # not due again for 15 minutes

    write_docs(folder, {"parking.md": "# Parking\n\nParking in lot B costs 4 EUR a day.\n"})
    [outcome] = scheduler.tick(now=LATER)
    assert outcome.message.startswith("1 added, 0 updated, 1 unchanged")
    assert _sources(index, embedder, "How much does parking cost?", k=1) == [str(folder.resolve() / "parking.md")]

    embedder.texts_embedded = 0
    [outcome] = scheduler.tick(now=LATER)
    assert outcome.message.startswith("0 added, 0 updated, 2 unchanged") and not outcome.changed
    assert embedder.texts_embedded == 0 and len(refreshed) == 2  # nothing re-embedded, no new generation

    (folder / "parking.md").write_text("# Parking\n\nParking in lot B is free from January.\n", encoding="utf-8")
    (folder / "leave.md").unlink()
    [outcome] = scheduler.tick(now=LATER)
    assert outcome.message.startswith("0 added, 1 updated, 0 unchanged, 1 removed")
    assert list(_documents(index)) == [str(folder.resolve() / "parking.md")]

    # the result is in sync.json: a restarted server (a new registry) shows it
    [stored] = SyncRegistry(index).folders()
    assert stored.last_run.ok and stored.last_run.message == outcome.message and stored.next_run > time.time()


def test_a_busy_index_is_skipped_and_retried_and_errors_never_stop_the_scheduler(tmp_path: Path, embedder) -> None:
    folder = write_docs(tmp_path / "docs", {"leave.md": "# Leave\n\nEmployees get 27 days of annual leave.\n"})
    index = tmp_path / "index"
    registry = SyncRegistry(index)
    registry.add(folder)
    scheduler = SyncScheduler(index, lambda: embedder)
    index.mkdir(parents=True, exist_ok=True)
    with IndexLock(index):  # e.g. an admin's ingestion, or `groundwork ingest` in a shell
        [outcome] = scheduler.tick()
    assert not outcome.ran and "being updated by" in outcome.message
    [folder_state] = registry.folders()
    assert folder_state.last_run is None and "retrying in" in folder_state.note
    assert time.time() < folder_state.next_run <= time.time() + BUSY_RETRY_S
    [outcome] = scheduler.tick(now=folder_state.next_run)
    assert outcome.ok and registry.folders()[0].note == ""

    # a folder that disappeared: its error is the recorded result, the thread keeps running the others
    other = write_docs(tmp_path / "other", {"parking.md": "# Parking\n\nParking in lot B costs 4 EUR a day.\n"})
    registry.add(other)
    (folder / "leave.md").unlink()
    folder.rmdir()
    registry.mark_due(folder)
    scheduler = SyncScheduler(index, lambda: embedder, wake_s=0.1)
    scheduler.start()
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not all(f.last_run and f.last_run.started > outcome.folder.last_run.finished
                                                  for f in registry.folders()):
            time.sleep(0.1)
        assert scheduler.running
    finally:
        scheduler.stop()
    assert not scheduler.running  # stops cleanly
    states = {f.path: f.last_run for f in registry.folders()}
    assert not states[str(folder.resolve())].ok and "no such file or folder" in states[str(folder.resolve())].message
    assert states[str(other.resolve())].ok
    assert str(other.resolve() / "parking.md") in _documents(index)


SECRET = {"a": "The launch code of project Aurora is 7731.", "b": "The merger partner of project Borealis is Initech.",
          "c": "The cafeteria of project Cosmos serves ramen on Fridays."}
QUESTIONS = {"a": "What is the launch code of project Aurora?", "b": "Who is the merger partner of project Borealis?",
             "c": "What does the cafeteria of project Cosmos serve?"}


def test_folders_with_different_acl_files_keep_their_own_permissions_in_any_order(tmp_path: Path, embedder) -> None:
    """Folder A's secret/ is for group x (acl A), folder B's secret/ for group y (acl B), folder C has no ACL file
    (the index's rules: everyone), all synced into one index. After every round, in any order, x reads A's secret
    and never B's, y the reverse, everyone neither; C's permissions never depend on which folder ran before."""
    index = tmp_path / "index"
    registry = SyncRegistry(index)
    folders = {}
    for name, group in (("a", "x"), ("b", "y"), ("c", None)):
        folder = write_docs(tmp_path / name, {"public.md": f"# Public {name}\n\nOffice {name} opens at 9.\n",
                                              "secret/plan.md": f"# Plan {name}\n\n{SECRET[name]}\n"})
        acl = None
        if group:
            acl = tmp_path / f"acl-{name}.toml"
            acl.write_text(f'default = ["everyone"]\n[[rules]]\nglob = "secret/*"\ngroups = ["{group}"]\n')
        registry.add(folder, acl)
        folders[name] = str(folder.resolve())
    scheduler = SyncScheduler(index, lambda: embedder)
    secret = {name: f"{folders[name]}/secret/plan.md" for name in folders}
    vectors = embedder.encode(list(QUESTIONS.values()))

    def check() -> None:
        reader = IndexReader(index)
        try:
            groups = {d.path: d.groups for d in reader.documents()}
            assert (groups[secret["a"]], groups[secret["b"]], groups[secret["c"]]) == (("x",), ("y",), ("everyone",))
            for user, readable in (({"everyone", "x"}, {"a", "c"}), ({"everyone", "y"}, {"b", "c"}),
                                   ({"everyone"}, {"c"})):
                found = [{c.path for c in reader.chunks([h.chunk_id for h in hits])}
                         for hits in reader.search(vectors, 10, user)]
                seen = {name for name in folders for hits in found if secret[name] in hits}
                assert seen == readable, (user, seen)
                assert all(secret[name] in found[i] for i, name in enumerate(QUESTIONS) if name in readable)
        finally:
            reader.close()

    assert [o.ok for o in scheduler.tick()] == [True, True, True]  # all due once added
    check()
    for order in ("ab", "ca", "bc", "ba", "cb"):
        for name in order:
            scheduler.run_now(folders[name])
            [outcome] = scheduler.tick()
            assert outcome.ok and outcome.folder.path == folders[name]
            check()
    assert read_acl_rules(index) is None  # a folder's rules stay its own: not saved as the index's rules


def test_sync_run_says_which_pages_were_read_by_ocr(tmp_path: Path) -> None:
    from scans import make_scanned_pdf

    folder = tmp_path / "scans"
    folder.mkdir()
    make_scanned_pdf(folder / "memo.pdf", ["Parking permits are renewed every January\nat the reception desk."])
    index = str(tmp_path / "index")
    runner = CliRunner()
    assert runner.invoke(cli, ["sync", "add", str(folder), "--index", index]).exit_code == 0
    result = runner.invoke(cli, ["sync", "run", "-q", "--index", index])
    assert result.exit_code == 0, result.output
    assert "  OCR: memo.pdf page 1" in result.output and "1 added" in result.output
