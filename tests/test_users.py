"""The users file: hashed passwords, roles, groups, clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.users import UserError, UserStore


def test_add_authenticate_and_remove(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    store.add("hannah", "correct horse", role="employee", groups=["hr"])
    raw = (tmp_path / "users.json").read_text()
    assert "correct horse" not in raw and "scrypt$" in raw
    assert (tmp_path / "users.json").stat().st_mode & 0o077 == 0
    user = store.authenticate("hannah", "correct horse")
    assert user is not None and user.groups == ("everyone", "hr") and not user.is_admin
    assert store.authenticate("hannah", "wrong password") is None
    assert store.authenticate("nobody", "correct horse") is None
    store.remove("hannah")
    assert store.list() == []


def test_salts_differ_so_equal_passwords_have_different_hashes(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    store.add("a", "same password")
    store.add("b", "same password")
    users = json.loads((tmp_path / "users.json").read_text())["users"]
    assert users["a"]["password"] != users["b"]["password"]


@pytest.mark.parametrize("name, password, role, message", [
    ("bad name!", "long enough", "employee", "invalid user name"),
    ("ok", "short", "employee", "too short"),
    ("ok", "long enough", "root", "invalid role"),
])
def test_bad_input_is_refused(tmp_path: Path, name, password, role, message) -> None:
    with pytest.raises(UserError, match=message):
        UserStore(tmp_path / "users.json").add(name, password, role=role)


def test_duplicate_needs_replace(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    store.add("frank", "password1", groups=["finance"])
    with pytest.raises(UserError, match="already exists"):
        store.add("frank", "password2")
    store.add("frank", "password2", role="admin", replace=True)
    assert store.get("frank").is_admin and store.authenticate("frank", "password2")


def test_update_changes_role_and_groups_but_keeps_the_password(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    store.add("gina", "password1", groups=["hr"])
    assert store.update("gina", "admin", ["finance", " "]) == store.get("gina")
    assert store.get("gina").is_admin and store.get("gina").groups == ("everyone", "finance")
    assert store.authenticate("gina", "password1") is not None
    assert (tmp_path / "users.json").stat().st_mode & 0o077 == 0
    with pytest.raises(UserError, match="no user"):
        store.update("nobody", "employee")
