"""The adapter registry: versioned LoRA adapters per name, one promoted version per name, rollback, export.

Layout under the registry root (default groundwork-data/adapters):

    NAME/versions/vN/      adapter_model.safetensors, adapter_config.json, card.json, loss.png
    NAME/state.json        {"promoted": "vN", "history": [earlier promoted versions], "promoted_at": ...}
    NAME/.work/            an unfinished training run (checkpoints), renamed into versions/ when done

Every write is atomic (write aside, fsync, rename), so a crash leaves the last good state readable.
A reference is "NAME" (its promoted version), "NAME@vN" (that version) or a folder path.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from finetune.conversion import fsync_tree
from ingest.errors import GroundworkError
from ingest.files import atomic_write_json, fsync_dir

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
CARD = "card.json"
STATE = "state.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION = re.compile(r"^v([1-9][0-9]*)$")
NO_ADAPTER = "none"


class AdapterError(GroundworkError):
    """An adapter cannot be found, trusted or changed; the message is one line for the user."""


@dataclass(frozen=True)
class AdapterVersion:
    name: str
    version: str  # "vN"
    path: Path
    card: dict
    promoted: bool

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def check_name(name: str) -> str:
    """A registry name: letters, digits, '.', '_' and '-', not starting with a dot, so it stays inside the root."""
    if not _NAME.match(name or "") or name.lower() == NO_ADAPTER or ".." in name:
        raise AdapterError(f"invalid adapter name {name!r}: use letters, digits, '.', '_' or '-' (max 64), "
                           f"not starting with a dot and not {NO_ADAPTER!r}")
    return name


def check_adapter_files(folder: Path) -> None:
    """Raise AdapterError unless folder holds a readable LoRA adapter (config + safetensors weights)."""
    config, weights = folder / CONFIG, folder / WEIGHTS
    if not config.is_file():
        raise AdapterError(f"{folder}: not an adapter (missing {CONFIG})")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{config}: unreadable adapter config ({exc})") from None
    if not weights.is_file():
        raise AdapterError(f"{folder}: adapter weights missing ({WEIGHTS})")
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            names = list(handle.keys())
            for key in names:  # reads every tensor: a truncated file fails here, not mid-answer
                handle.get_slice(key)[:]
    except Exception as exc:  # safetensors raises several types for damaged files
        raise AdapterError(f"{weights}: corrupt adapter weights ({str(exc).splitlines()[0]})") from None
    if not any("lora_" in key for key in names):
        raise AdapterError(f"{weights}: holds no LoRA weights")


def _write_json_atomically(path: Path, data: dict) -> None:
    atomic_write_json(path, data, indent=1, sort_keys=True)


class AdapterRegistry:
    """Adapters on disk. Cheap to create; every call reads the current state from disk."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # --- reading ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name)
                      and (p / "versions").is_dir())

    def _dir(self, name: str) -> Path:
        folder = (self.root / check_name(name)).resolve()
        if folder.parent != self.root.resolve():
            raise AdapterError(f"adapter name {name!r} escapes the registry {self.root}")
        return folder

    def state(self, name: str) -> dict:
        path = self._dir(name) / STATE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"promoted": None, "history": []}
        except (OSError, ValueError) as exc:
            raise AdapterError(f"{path}: unreadable registry state ({exc})") from None

    def versions(self, name: str) -> list[AdapterVersion]:
        folder = self._dir(name) / "versions"
        if not folder.is_dir():
            raise AdapterError(f"no adapter named {name!r} in {self.root} (see `groundwork adapters list`)")
        promoted = self.state(name).get("promoted")
        found = []
        for path in folder.iterdir():
            match = _VERSION.match(path.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), AdapterVersion(name, path.name, path, read_card(path),
                                                                  path.name == promoted)))
        return [v for _, v in sorted(found, key=lambda pair: pair[0])]

    def get(self, ref: str) -> AdapterVersion:
        """NAME (its promoted version, else an error) or NAME@vN."""
        name, _, version = ref.partition("@")
        if not version:
            version = self.state(name).get("promoted")
            if not version:
                raise AdapterError(f"adapter {name!r} has no promoted version: promote one with "
                                   f"`groundwork adapters promote {name}@vN`")
        for candidate in self.versions(name):
            if candidate.version == version:
                return candidate
        raise AdapterError(f"adapter {name!r} has no version {version!r}")

    def promoted(self) -> list[AdapterVersion]:
        """The promoted version of every name, most recently promoted first."""
        out = []
        for name in self.names():
            state = self.state(name)
            if state.get("promoted"):
                try:
                    out.append((state.get("promoted_at", 0), self.get(name)))
                except AdapterError:
                    continue  # a promoted version removed by hand: skip rather than break serving
        return [v for _, v in sorted(out, key=lambda pair: -pair[0])]

    def default(self) -> AdapterVersion | None:
        """What the engine uses when no adapter is named: the most recently promoted one, if any."""
        promoted = self.promoted()
        return promoted[0] if promoted else None

    def resolve(self, ref: str | None, verify: bool = True) -> tuple[Path | None, str | None]:
        """(folder, label) for a reference: None = the default, "none" = no adapter, NAME, NAME@vN, a folder.

        verify=False skips reading the weights (for callers that check them once, before loading).
        """
        if ref is None:
            chosen = self.default()
            return (chosen.path, chosen.ref) if chosen else (None, None)
        if ref.strip().lower() == NO_ADAPTER:
            return None, None
        as_path = Path(ref).expanduser()
        if os.sep in ref or as_path.is_dir():
            if not as_path.is_dir():
                raise AdapterError(f"adapter folder not found: {as_path}")
            if verify:
                check_adapter_files(as_path)
            return as_path, str(as_path)
        chosen = self.get(ref)
        if verify:
            check_adapter_files(chosen.path)
        return chosen.path, chosen.ref

    # --- writing ---------------------------------------------------------------------------------
    def work_dir(self, name: str) -> Path:
        """Where an unfinished training run for NAME keeps its checkpoints (kept across a crash)."""
        folder = self._dir(name) / ".work"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def add(self, name: str, adapter_dir: Path, card: dict, extra_files: dict[str, Path] | None = None) -> AdapterVersion:
        """Publish a trained adapter as the next version of NAME (atomic: the version appears whole or not at all)."""
        check_adapter_files(adapter_dir)
        versions_dir = self._dir(name) / "versions"
        versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=versions_dir))
        try:
            for item in (WEIGHTS, CONFIG):
                shutil.copy2(adapter_dir / item, staging / item)
            for target, source in (extra_files or {}).items():
                shutil.copy2(source, staging / target)
            existing = [int(m.group(1)) for p in versions_dir.iterdir() if (m := _VERSION.match(p.name))]
            version = f"v{max(existing, default=0) + 1}"
            card = {**card, "name": name, "version": version, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (staging / CARD).write_text(json.dumps(card, indent=1, sort_keys=True), encoding="utf-8")
            fsync_tree(staging)
            os.rename(staging, versions_dir / version)  # fails rather than overwrite if the name was taken
            fsync_dir(versions_dir)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return self.get(f"{name}@{version}")

    def promote(self, ref: str) -> AdapterVersion:
        if "@" not in ref:
            versions = self.versions(ref)
            if not versions:
                raise AdapterError(f"adapter {ref!r} has no versions")
            ref = versions[-1].ref  # NAME alone promotes its newest version
        chosen = self.get(ref)
        check_adapter_files(chosen.path)
        state = self.state(chosen.name)
        history = [v for v in state.get("history", []) if v != chosen.version]
        if state.get("promoted") and state["promoted"] != chosen.version:
            history.append(state["promoted"])
        _write_json_atomically(self._dir(chosen.name) / STATE,
                               {"promoted": chosen.version, "history": history, "promoted_at": time.time()})
        return self.get(chosen.ref)

    def rollback(self, name: str) -> AdapterVersion:
        """Promote the version that was promoted before the current one."""
        state = self.state(name)
        available = {v.version for v in self.versions(name)}
        history = [v for v in state.get("history", []) if v in available]
        if not history:
            raise AdapterError(f"adapter {name!r} has no earlier promoted version to roll back to")
        previous = history.pop()
        _write_json_atomically(self._dir(name) / STATE,
                               {"promoted": previous, "history": history, "promoted_at": time.time()})
        return self.get(f"{name}@{previous}")

    def record_evaluation(self, ref: str, label: str, figures: dict) -> None:
        """Add an evaluation's headline figures to a version's card (e.g. label "acme-qa/test")."""
        chosen = self.get(ref)
        self.update_card(ref, {"evaluation": {**chosen.card.get("evaluation", {}), label: figures}})

    def update_card(self, ref: str, fields: dict) -> None:
        """Set top-level fields of a version's card (atomically)."""
        chosen = self.get(ref)
        _write_json_atomically(chosen.path / CARD, {**chosen.card, **fields})

    def remove(self, ref: str) -> None:
        """Remove one version (NAME@vN); the promoted version cannot be removed."""
        if "@" not in ref:
            raise AdapterError(f"name the version to remove, e.g. {ref}@v1")
        chosen = self.get(ref)
        if chosen.promoted:
            raise AdapterError(f"{chosen.ref} is promoted: promote another version or roll back first")
        trash = Path(tempfile.mkdtemp(prefix=".removed-", dir=chosen.path.parent))
        os.replace(chosen.path, trash / chosen.version)
        shutil.rmtree(trash, ignore_errors=True)
        state = self.state(chosen.name)
        if chosen.version in state.get("history", []):
            state["history"] = [v for v in state["history"] if v != chosen.version]
            _write_json_atomically(self._dir(chosen.name) / STATE, state)


def check_card_base(folder: Path, base_sha256: str | None, model_name: str) -> None:
    """Refuse an adapter whose card records a different base-model file hash than the model loaded."""
    trained_on = read_card(folder).get("base", {}).get("sha256")
    if trained_on and base_sha256 and trained_on != base_sha256:
        raise AdapterError(f"adapter {folder} was trained on a different base model (sha256 {trained_on[:12]}...) "
                           f"than {model_name!r} (sha256 {base_sha256[:12]}...)")


def read_card(folder: Path) -> dict:
    """An adapter folder's card.json, or {} when it has none."""
    try:
        return json.loads((folder / CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
