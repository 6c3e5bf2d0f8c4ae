"""API tokens as an admin manages them: `groundwork users token NAME`, `users tokens`, `--revoke`; stored hashed,
checked against the user's current entry (removed user, re-created name, password change)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.api_tokens import ApiTokens
from app.cli import cli
from app.users import UserStore


@pytest.fixture()
def users_file(tmp_path: Path) -> Path:
    store = UserStore(tmp_path / "users.json")
    store.add("admin", "admin-password", role="admin")
    store.add("alice", "alice-password")
    store.add("hannah", "hannah-password", groups=["hr"])
    return store.path


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def new_token(users_file: Path, name: str, *extra: str) -> str:
    result = run("users", "token", name, *extra, "--users", str(users_file))
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_a_token_is_printed_once_stored_hashed_and_acts_as_its_user(users_file: Path) -> None:
    token = new_token(users_file, "hannah", "--label", "slack bot")
    assert token.startswith("gw_") and len(token.split("_", 2)[2]) >= 43  # 32 random bytes
    stored = users_file.read_text()
    secret = token.split("_", 2)[2]
    assert secret not in stored and token not in stored  # only a digest is kept
    user = ApiTokens(UserStore(users_file)).authenticate(token)
    assert user is not None and user.name == "hannah" and "hr" in user.groups
    assert new_token(users_file, "hannah") != token  # a new secret each time


def test_listing_shows_ids_users_and_labels_never_secrets(users_file: Path) -> None:
    alice = new_token(users_file, "alice", "--label", "notebook")
    hannah = new_token(users_file, "hannah", "--label", "slack bot")
    listing = run("users", "tokens", "--users", str(users_file)).stdout
    for token, name, label in ((alice, "alice", "notebook"), (hannah, "hannah", "slack bot")):
        token_id = token.split("_")[1]
        line = next(line for line in listing.splitlines() if line.startswith(token_id))
        assert name in line and label in line
        assert token.split("_", 2)[2] not in listing
    only_alice = run("users", "tokens", "alice", "--users", str(users_file)).stdout
    assert "notebook" in only_alice and "slack bot" not in only_alice
    assert "No API tokens" in run("users", "tokens", "admin", "--users", str(users_file)).stdout


def test_a_revoked_token_no_longer_authenticates_and_others_still_do(users_file: Path) -> None:
    kept = new_token(users_file, "alice", "--label", "kept")
    revoked = new_token(users_file, "alice", "--label", "lost laptop")
    result = run("users", "token", "alice", "--revoke", revoked.split("_")[1], "--users", str(users_file))
    assert result.exit_code == 0 and "Revoked" in result.stdout
    tokens = ApiTokens(UserStore(users_file))
    assert tokens.authenticate(revoked) is None
    assert tokens.authenticate(kept).name == "alice"
    assert "lost laptop" not in run("users", "tokens", "--users", str(users_file)).stdout


def test_a_token_cannot_be_revoked_through_another_user(users_file: Path) -> None:
    token = new_token(users_file, "alice")
    result = CliRunner().invoke(cli, ["users", "token", "hannah", "--revoke", token.split("_")[1], "--users",
                                      str(users_file)])
    assert result.exit_code != 0
    assert ApiTokens(UserStore(users_file)).authenticate(token).name == "alice"


def test_removing_the_user_kills_their_tokens_even_if_the_name_comes_back(users_file: Path) -> None:
    token = new_token(users_file, "alice")
    store = UserStore(users_file)
    store.remove("alice")
    assert ApiTokens(store).authenticate(token) is None
    store.add("alice", "another-password")
    assert ApiTokens(store).authenticate(token) is None


def test_a_password_change_keeps_tokens_and_a_group_change_applies_to_them(users_file: Path) -> None:
    token = new_token(users_file, "alice")
    store = UserStore(users_file)
    store.add("alice", "a-new-password", replace=True)
    assert ApiTokens(store).authenticate(token).name == "alice"
    store.update("alice", "employee", ["hr"])
    assert "hr" in ApiTokens(store).authenticate(token).groups  # the user's groups now, not at creation


@pytest.mark.parametrize("forged", ["", "gw_", "Bearer x", "gw_00000000_" + "A" * 43, "gw_{id}_" + "A" * 43,
                                    "gw_{id}_{secret}x", "{token}\n", "gw_{ID}_{secret}"])
def test_malformed_unknown_or_altered_tokens_are_refused(users_file: Path, forged: str) -> None:
    token = new_token(users_file, "alice")
    token_id, secret = token.split("_", 2)[1:]
    # the id in capitals (ids are lower-case hex; one of digits only gets a capital "A" for its last digit)
    capitals = token_id.upper() if token_id.upper() != token_id else token_id[:-1] + "A"
    candidate = forged.format(id=token_id, ID=capitals, secret=secret, token=token)
    assert ApiTokens(UserStore(users_file)).authenticate(candidate) is None


def test_a_token_for_an_unknown_user_is_refused_and_nothing_is_written(users_file: Path) -> None:
    result = CliRunner().invoke(cli, ["users", "token", "bob", "--users", str(users_file)])
    assert result.exit_code != 0
    assert "bob" in str(result.exception)
    assert "tokens" not in json.loads(users_file.read_text())["users"].get("alice", {})


def test_the_command_prints_only_the_token_on_stdout_and_errors_in_one_line(users_file: Path) -> None:
    import subprocess
    import sys

    def groundwork(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "app.cli", "users", *args, "--users", str(users_file)],
                              capture_output=True, text=True, timeout=120)

    made = groundwork("token", "alice", "--label", "ci")
    assert made.returncode == 0 and made.stdout.count("\n") == 1  # TOKEN=$(groundwork users token alice)
    assert ApiTokens(UserStore(users_file)).authenticate(made.stdout.strip()).name == "alice"
    refused = groundwork("token", "bob")
    assert refused.returncode == 2 and refused.stderr.startswith("error: no user 'bob'")
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
