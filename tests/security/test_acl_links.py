"""Permissions follow the content: a restricted document reached through a looser path stays restricted.

The attack (issue 18, item 1): `ln -s ../hr/confidential/exec-pay.md public/handbook.md`, re-ingest, and an
employee of group `everyone` got the executive pay band cited as `public/handbook.md`. Each test plants one
variation and asks, as an employee, the question the restricted text answers.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ingest.retrieval import Retriever
from ingest.pipeline import IngestOptions, ingest
from ingest.reader import IndexReader
from ingest.vector_store import open_vector_store

ACL = """
default = ["everyone"]
[[rules]]
glob = "hr/confidential/*"
groups = ["hr"]
[[rules]]
glob = "finance/*"
groups = ["finance"]
[[rules]]
glob = ".private/*"
groups = ["hr"]
"""
SECRET = "# Executive pay\n\nThe chief executive's base salary band is 410,000 to 520,000 EUR per year.\n"
QUESTION = "What is the chief executive's base salary band?"
EMPLOYEE = {"everyone"}


def _docs(root: Path) -> Path:
    (root / "public").mkdir(parents=True)
    (root / "hr" / "confidential").mkdir(parents=True)
    (root / "public" / "canteen.md").write_text("# Canteen\n\nThe canteen serves lunch from noon to 2pm.\n")
    (root / "hr" / "confidential" / "exec-pay.md").write_text(SECRET)
    return root


def _ingest(tmp_path: Path, embedder, *roots: Path, store: str | None = None):
    """Ingest `roots`; `store` (conftest's `vector_store`: every test runs on FAISS and Milvus Lite) is given to the
    first run only: later runs keep the store the index remembers."""
    acl = tmp_path / "acl.toml"
    acl.write_text(ACL)
    options = IngestOptions(index_dir=tmp_path / "index", acl_file=acl, show_progress=False, vector_store=store)
    return ingest(list(roots), options, embedder)


def _employee_sees_secret(tmp_path: Path, embedder, groups=EMPLOYEE) -> list[str]:
    """Sources of every passage holding the secret that `groups` retrieve (the engine's own retrieval)."""
    retriever = Retriever(open_vector_store(tmp_path / "index"), embedder)
    return [p.chunk.source for p in retriever.retrieve(QUESTION, set(groups)) if "410,000" in p.chunk.text]


def _groups_of(tmp_path: Path) -> dict[str, tuple[str, ...]]:
    reader = open_vector_store(tmp_path / "index")
    return {d.source: d.groups for d in reader.documents()}


def test_symlink_to_a_restricted_file_is_as_restricted_as_its_target(tmp_path: Path, embedder,
                                                                    vector_store: str) -> None:
    docs = _docs(tmp_path / "docs")
    os.symlink("../hr/confidential/exec-pay.md", docs / "public" / "handbook.md")
    summary = _ingest(tmp_path, embedder, docs, store=vector_store)
    assert _employee_sees_secret(tmp_path, embedder) == []
    assert _groups_of(tmp_path)["public/handbook.md"] == ("hr",)
    assert set(_employee_sees_secret(tmp_path, embedder, {"everyone", "hr"})) >= {"hr/confidential/exec-pay.md"}
    notes = {p.path: p.reason for p in summary.acl_tightened}
    assert "hr/confidential/exec-pay.md" in notes["public/handbook.md"] and "readable by hr only" in notes[
        "public/handbook.md"]


def test_planting_the_link_later_and_reingesting_does_not_leak(tmp_path: Path, embedder, vector_store: str) -> None:
    docs = _docs(tmp_path / "docs")
    _ingest(tmp_path, embedder, docs, store=vector_store)
    (docs / "public" / "handbook.md").write_text("# Handbook\n\nWelcome to Acme.\n")
    _ingest(tmp_path, embedder, docs)
    (docs / "public" / "handbook.md").unlink()
    os.symlink("../hr/confidential/exec-pay.md", docs / "public" / "handbook.md")
    _ingest(tmp_path, embedder, docs)
    assert _employee_sees_secret(tmp_path, embedder) == []


def test_a_chain_of_links_takes_the_strictest_hop(tmp_path: Path, embedder, vector_store: str) -> None:
    docs = _docs(tmp_path / "docs")
    (docs / "finance").mkdir()
    (docs / "finance" / "board.md").write_text("# Board pack\n\nThe board meets quarterly in Lyon.\n")
    # public/a.md -> finance/b.md (a link, finance-only path) -> public/canteen.md: the finance hop restricts a.md
    os.symlink("../public/canteen.md", docs / "finance" / "b.md")
    os.symlink("../finance/b.md", docs / "public" / "a.md")
    _ingest(tmp_path, embedder, docs, store=vector_store)
    assert _groups_of(tmp_path)["public/a.md"] == ("finance",)


def test_a_link_into_a_hidden_folder_keeps_that_folders_rule(tmp_path: Path, embedder, vector_store: str) -> None:
    """Hidden folders are never scanned, but a path into one still reaches the content and its rule applies."""
    docs = _docs(tmp_path / "docs")
    (docs / "hr" / "confidential" / "exec-pay.md").unlink()
    (docs / ".private").mkdir()
    (docs / ".private" / "exec-pay.md").write_text(SECRET)
    os.symlink("../.private/exec-pay.md", docs / "public" / "handbook.md")
    _ingest(tmp_path, embedder, docs, store=vector_store)
    assert _employee_sees_secret(tmp_path, embedder) == []
    assert _groups_of(tmp_path)["public/handbook.md"] == ("hr",)


def test_a_file_swapped_for_a_link_after_hashing_is_not_indexed_with_its_old_groups(tmp_path: Path, embedder,
                                                                                   monkeypatch,
                                                                                   vector_store: str) -> None:
    """The race: permissions are decided on the hash, so the parser must read exactly the hashed bytes."""
    import ingest.pipeline

    docs = _docs(tmp_path / "docs")
    handbook = docs / "public" / "handbook.md"
    handbook.write_text("# Handbook\n\nWelcome to Acme.\n")
    decide = ingest.pipeline.effective_groups

    def decide_then_swap(*args, **kwargs):
        decided = decide(*args, **kwargs)
        handbook.unlink()
        os.symlink("../hr/confidential/exec-pay.md", handbook)
        return decided

    monkeypatch.setattr(ingest.pipeline, "effective_groups", decide_then_swap)
    summary = _ingest(tmp_path, embedder, docs, store=vector_store)
    assert _employee_sees_secret(tmp_path, embedder) == []
    assert {p.path: p.reason for p in summary.failed}["public/handbook.md"].startswith("the file changed while")


def test_hard_link_to_a_restricted_file_is_restricted(tmp_path: Path, embedder, vector_store: str) -> None:
    docs = _docs(tmp_path / "docs")
    os.link(docs / "hr" / "confidential" / "exec-pay.md", docs / "public" / "handbook.md")
    _ingest(tmp_path, embedder, docs, store=vector_store)
    assert _employee_sees_secret(tmp_path, embedder) == []
    assert _groups_of(tmp_path)["public/handbook.md"] == ("hr",)


def test_a_copy_of_a_restricted_file_is_restricted_and_loosens_once_the_original_is_gone(tmp_path: Path,
                                                                                         embedder,
                                                                                         vector_store: str) -> None:
    docs = _docs(tmp_path / "docs")
    shutil.copy(docs / "hr" / "confidential" / "exec-pay.md", docs / "public" / "handbook.md")
    summary = _ingest(tmp_path, embedder, docs, store=vector_store)
    assert _employee_sees_secret(tmp_path, embedder) == []
    assert "public/handbook.md" in {p.path for p in summary.acl_tightened}
    # The restricted original is deleted: the copy is now the only path, so its own rule applies again.
    (docs / "hr" / "confidential" / "exec-pay.md").unlink()
    summary = _ingest(tmp_path, embedder, docs)
    assert _groups_of(tmp_path)["public/handbook.md"] == ("everyone",)
    assert summary.acl_changed == 1 and summary.acl_tightened == []


def test_a_copy_in_another_ingested_folder_tightens_the_one_already_indexed(tmp_path: Path, embedder,
                                                                           vector_store: str) -> None:
    """Two roots ingested in separate runs: whichever order, the public copy ends up restricted."""
    public = tmp_path / "wiki"
    (public / "public").mkdir(parents=True)
    (public / "public" / "handbook.md").write_text(SECRET)
    docs = _docs(tmp_path / "docs")
    _ingest(tmp_path, embedder, public, store=vector_store)
    assert _employee_sees_secret(tmp_path, embedder) == ["public/handbook.md"]  # nothing restricts it yet
    summary = _ingest(tmp_path, embedder, docs)
    assert _employee_sees_secret(tmp_path, embedder) == []
    assert summary.acl_changed == 1
    _ingest(tmp_path, embedder, public)  # re-running the other root keeps it restricted while the original exists
    assert _employee_sees_secret(tmp_path, embedder) == []


def test_the_cli_and_the_admin_page_say_which_permissions_were_tightened(tmp_path: Path) -> None:
    import subprocess
    import sys

    from app.ui.admin_view import problems

    docs = _docs(tmp_path / "docs")
    os.symlink("../hr/confidential/exec-pay.md", docs / "public" / "handbook.md")
    (tmp_path / "acl.toml").write_text(ACL)
    index = tmp_path / "index"
    result = subprocess.run([sys.executable, "-m", "app.cli", "ingest", str(docs), "--acl", str(tmp_path / "acl.toml"),
                             "--index", str(index), "-q"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "  permissions: public/handbook.md: readable by hr only" in result.stdout
    page = problems(IndexReader(index).stats())  # the admin tab's "last run" panel
    assert "public/handbook.md" in page and "readable by hr only" in page and "(permissions)" in page
