"""What the admin tab does, as plain functions of the services and the acting admin.

Callers check the role first (admin.py does, on the server, for every event); these functions validate their
input and raise AdminError with one line for the page.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from gradio.utils import get_upload_folder

from app.guardrails import GUARDS, BlockedTopic, GuardrailConfig
from app.ui import library
from app.ui.ingest_job import IngestBusy, JobState
from app.ui.services import UiServices
from app.users import ROLES, User, UserError
from finetune.adapters import AdapterError
from ingest.acl import AclError
from ingest.errors import GroundworkError
from ingest.store import IndexError_


class AdminError(GroundworkError, ValueError):
    """An admin action that cannot be done; the message is one line for the page."""


@contextmanager
def _reported(*errors: type[Exception]):
    """Turn `errors` raised inside the block into an AdminError with the same message."""
    try:
        yield
    except errors as exc:
        raise AdminError(str(exc)) from None


# --- documents and ingestion --------------------------------------------------------------------------------

def ingest_paths(services: UiServices, folder: str = "") -> list[Path]:
    """What "re-run ingestion" covers: every folder the index was built from, the upload folder, and `folder`."""
    services.engine.reader.refresh()
    with _reported(GroundworkError):  # synced folders run in the Sync tab, each with its own ACL file if it has one
        synced = {Path(f.path) for f in services.sync.registry.folders()}
    paths = [p for p in library.known_roots(services.engine.reader) if p.resolve() not in synced]
    services.docs_dir.mkdir(parents=True, exist_ok=True)
    paths.append(services.docs_dir.resolve())
    if folder.strip():
        extra = Path(folder.strip()).expanduser()
        if not extra.is_absolute():
            raise AdminError(f"{folder}: give the folder's full path on the server")
        if not extra.exists():
            raise AdminError(f"{extra}: no such file or folder on the server")
        if extra.resolve() in synced:
            raise AdminError(f"{extra} is a synced folder: use Run now in the Sync tab")
        paths.append(extra.resolve())
    unique: list[Path] = []
    for path in paths:
        if path not in unique:
            unique.append(path)
    return unique


def start_ingest(services: UiServices, admin: User, folder: str = "", acl_file: Path | None = None) -> JobState:
    try:
        return services.runner.start(ingest_paths(services, folder), acl_file, admin.name)
    except IngestBusy as exc:
        raise AdminError(f"{exc}; wait for it to finish") from None


def upload(services: UiServices, admin: User, files: list[str], subfolder: str) -> tuple[list[str], JobState]:
    if not files:
        raise AdminError("choose one or more files to upload first")
    if services.runner.state().running:
        raise AdminError("an ingestion is running; upload when it has finished")
    with _reported(library.LibraryError):
        saved = library.save_uploads(files, services.docs_dir, subfolder)
    _discard_from_cache(files)
    return saved, start_ingest(services, admin)


def _discard_from_cache(files: list[str]) -> None:
    """Delete Gradio's cache copies of uploads once they are saved: a confidential document is not left in the
    temp folder (servable by its path) until the cache cleaner's age limit. Only files inside that folder."""
    cache = Path(get_upload_folder()).resolve()
    for item in files:
        path = Path(item)
        try:
            if cache in path.resolve().parents and path.is_file():
                path.unlink()
                if path.parent.resolve() != cache:
                    path.parent.rmdir()  # the <hash> folder, if nothing else is in it
        except OSError:
            pass  # the cleaner removes it later


def remove_document(services: UiServices, admin: User, path: str) -> str:
    if not path:
        raise AdminError("choose a document to remove")
    with _reported(library.LibraryError, IndexError_):
        message = library.remove_document(services.index_dir, services.engine.reader.embedder, path,
                                          services.docs_dir)
    services.engine.reader.refresh()
    return message


def _indexed(services: UiServices) -> set[str]:
    services.engine.reader.refresh()
    return {doc.path for doc in services.engine.reader.documents()}


def unindexed_uploads(services: UiServices) -> list[str]:
    """Files of the upload folder that are not in the index (failed, skipped, or left by an interrupted upload)."""
    return library.unindexed_uploads(services.docs_dir, _indexed(services))


def delete_upload(services: UiServices, admin: User, relative: str) -> str:
    """Delete a file of the upload folder that is not in the index, so the next runs stop reporting it."""
    if not relative:
        raise AdminError("choose a file to delete")
    if services.runner.state().running:
        raise AdminError("an ingestion is running; delete the file when it has finished")
    with _reported(library.LibraryError):
        return library.delete_upload(services.docs_dir, relative, _indexed(services))


def problem_roots(services: UiServices) -> list[Path]:
    """The folders the paths in an ingestion's list of problems are relative to."""
    return [*library.known_roots(services.engine.reader), services.docs_dir.resolve()]


def acl_rules(services: UiServices) -> str:
    return library.acl_text(services.index_dir)


def save_acl(services: UiServices, admin: User, text: str) -> JobState:
    """Validate and save the rules, then re-run ingestion so they apply (no re-embedding for unchanged files)."""
    if services.runner.state().running:
        raise AdminError("an ingestion is running; save the rules when it has finished")
    with _reported(AclError):
        library.write_acl(services.acl_path, text)
    return start_ingest(services, admin, acl_file=services.acl_path)


# --- users ------------------------------------------------------------------------------------------------

def save_user(services: UiServices, admin: User, name: str, password: str, role: str, groups: str) -> str:
    name, groups_list = (name or "").strip(), [g.strip() for g in (groups or "").split(",") if g.strip()]
    if role not in ROLES:
        raise AdminError(f"role must be one of {', '.join(ROLES)}")
    existing = {u.name: u for u in services.users.list()}
    if name == admin.name and role != "admin":
        raise AdminError("you cannot take the admin role from yourself")
    with _reported(UserError):
        if password:
            user = services.users.add(name, password, role=role, groups=groups_list, replace=name in existing)
        elif name in existing:
            user = services.users.update(name, role, groups_list)
        else:
            raise AdminError("a new user needs a password (8 characters or more)")
    verb = "Updated" if name in existing else "Added"
    return f"{verb} {user.name} ({user.role}; groups: {', '.join(user.groups)})"


def remove_user(services: UiServices, admin: User, name: str) -> str:
    if not name:
        raise AdminError("choose a user to remove")
    if name == admin.name:
        raise AdminError("you cannot remove yourself")
    with _reported(UserError):
        services.users.remove(name)
    return f"Removed {name}"


# --- adapters ---------------------------------------------------------------------------------------------

def adapter_rows(services: UiServices) -> list[list]:
    rows = []
    for name in services.registry.names():
        for version in services.registry.versions(name):
            card = version.card
            training = card.get("training", {})
            validation = training.get("validation_loss") or []
            examples = card.get("data", {}).get("examples", {}).get("train", {}) or {}
            rows.append([name, version.version, "✓ promoted" if version.promoted else "",
                         card.get("created_at", ""), card.get("base", {}).get("model", ""),
                         sum(examples.values()) if isinstance(examples, dict) else "",
                         round(validation[-1][1], 3) if validation else ""])
    return rows


def _registry_change(change, argument: str, missing: str):
    """`change(argument)` on the adapter registry; `missing` is the message when nothing was chosen."""
    if not argument:
        raise AdminError(missing)
    with _reported(AdapterError):
        return change(argument)


def promote(services: UiServices, admin: User, ref: str) -> str:
    version = _registry_change(services.registry.promote, ref, "choose a version to promote")
    return f"Promoted {version.ref}: answers use it from the next question on"


def rollback(services: UiServices, admin: User, name: str) -> str:
    version = _registry_change(services.registry.rollback, name, "choose an adapter to roll back")
    return f"Rolled {name} back to {version.ref}"


# --- guardrails -------------------------------------------------------------------------------------------

def topics_text(config: GuardrailConfig) -> str:
    return "\n".join(f"{t.name}: {', '.join(t.keywords)}" for t in config.blocked_topics)


def parse_topics(text: str) -> list[BlockedTopic]:
    """One topic per line: `name: keyword, keyword` (a line without ':' is its own single keyword)."""
    topics = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, words = line.partition(":")
        keywords = [w.strip() for w in (words if words.strip() else name).split(",") if w.strip()]
        try:
            topics.append(BlockedTopic(name=name.strip(), keywords=keywords))
        except ValueError as exc:
            raise AdminError(f"blocked topics, line {number}: {exc}") from None
    return topics


def save_guardrails(services: UiServices, admin: User, pii: bool, injection: bool, max_chars: float | int | None,
                    may_disable: list[str], topics: str, allowlist: str) -> GuardrailConfig:
    with _reported(ValueError):  # an AdminError of parse_topics is a ValueError too: same message
        config = GuardrailConfig(
            pii=bool(pii), injection=bool(injection), blocked_topics=parse_topics(topics),
            max_question_chars=int(max_chars or 0), user_may_disable={g for g in may_disable or [] if g in GUARDS},
            pii_allowlist=[line.strip() for line in (allowlist or "").splitlines() if line.strip()])
    services.guardrails.save(config)
    return services.sync_guardrails()
