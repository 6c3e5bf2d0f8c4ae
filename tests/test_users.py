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


def test_replace_keeps_role_and_groups_unless_given(tmp_path: Path) -> None:
    """`users add NAME --replace` to reset a password used to make the user a plain employee in 'everyone' only."""
    store = UserStore(tmp_path / "users.json")
    store.add("root", "password1", role="admin", groups=["it"])
    store.add("hana", "password1", groups=["hr", "finance"])
    store.add("hana", "password2", replace=True)
    assert store.get("hana").groups == ("everyone", "finance", "hr") and not store.get("hana").is_admin
    store.add("hana", "password3", role="admin", groups=[], replace=True)  # given explicitly: changed
    assert store.get("hana").is_admin and store.get("hana").groups == ("everyone",)
    assert store.add("new", "password1").role == "employee"


def test_the_last_admin_is_kept(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    store.add("root", "password1", role="admin")
    for change in (lambda: store.remove("root"), lambda: store.update("root", "employee"),
                   lambda: store.add("root", "password2", role="employee", replace=True)):
        with pytest.raises(UserError, match="last admin"):
            change()
    store.add("second", "password1", role="admin")
    store.update("root", "employee")
    store.remove("root")
    assert [u.name for u in store.list()] == ["second"]


def test_session_stamp_changes_with_password_role_groups_and_recreation(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    store.add("root", "password1", role="admin")
    store.add("ann", "password1", groups=["hr"])
    seen = [store.session_stamps()["ann"]]
    for change in (lambda: store.add("ann", "password2", replace=True), lambda: store.update("ann", "admin", ["hr"]),
                   lambda: store.update("ann", "admin", ["it"]),
                   lambda: (store.remove("ann"), store.add("ann", "password2", groups=["it"]))):
        change()
        seen.append(store.session_stamps()["ann"])
    assert len(set(seen)) == len(seen)
    store.update("ann", "employee", ["it"])
    before = store.session_stamps()["ann"]
    store.update("ann", "employee", ["it"])  # no change: sessions go on
    assert store.session_stamps()["ann"] == before


def test_cli_replace_and_last_admin(tmp_path: Path) -> None:
    import subprocess
    import sys

    users = tmp_path / "users.json"
    store = UserStore(users)
    store.add("root", "password1", role="admin", groups=["it"])

    def run(*args: str) -> subprocess.CompletedProcess:
        code = "import sys; from app.cli import main; sys.argv = ['groundwork', *sys.argv[1:]]; main()"
        return subprocess.run([sys.executable, "-c", code, "users", *args, "--users", str(users)],
                              capture_output=True, text=True, timeout=120)

    result = run("add", "root", "--password", "password2", "--replace")
    assert result.returncode == 0 and "Updated root (admin; groups: everyone, it)" in result.stdout
    result = run("remove", "root")
    assert result.returncode == 2 and "last admin" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert store.get("root").is_admin
