"""Settings: every command resolves its paths from the same GROUNDWORK_* variables (app/config.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_overrides() -> None:
    default = Settings.from_env({})
    assert default == Settings()
    assert default.index_dir == Path("groundwork-data/index") and default.models_dir == Path("groundwork-data/models")
    custom = Settings.from_env({"GROUNDWORK_DATA": "/d", "GROUNDWORK_ADAPTERS": "/a"})
    assert custom.index_dir == Path("/d/index") and custom.users_file == Path("/d/users.json")
    assert custom.adapters_dir == Path("/a") and custom.guardrails_file == Path("/d/guardrails.json")
    assert Settings.from_env({"GROUNDWORK_INDEX": "/i"}).index_dir == Path("/i")


def test_the_model_cache_follows_one_rule() -> None:
    """Settings.models_dir and load_model's fallback both come from finetune.models.default_cache_dir."""
    from finetune.models import default_cache_dir

    for env in ({}, {"GROUNDWORK_CACHE": ""}, {"GROUNDWORK_CACHE": "/m", "GROUNDWORK_DATA": "/d"}):
        assert Settings.from_env(env).models_dir == default_cache_dir(env)
    assert default_cache_dir({"GROUNDWORK_DATA": "/d"}) == Path("groundwork-data/models")
    assert default_cache_dir({"GROUNDWORK_CACHE": "/m"}) == Path("/m")


def test_every_command_uses_the_same_adapters_dir(tmp_path) -> None:
    """GROUNDWORK_ADAPTERS was honoured by `finetune` but ignored by `ask` and `serve`."""
    probe = (
        "import json, typer\n"
        "from app.cli import cli\n"
        "group = typer.main.get_command(cli)\n"
        "def default(path, name):\n"
        "    command = group\n"
        "    for part in path.split(): command = command.commands[part]\n"
        "    return str(next(p.default for p in command.params if p.name == name))\n"
        "print(json.dumps({f'{c} {n}': default(c, n) for c, n in [('ask', 'adapters'), ('serve', 'adapters'), "
        "('finetune', 'registry'), ('adapters list', 'registry'), ('ask', 'index'), ('serve', 'users_file')]}))\n"
    )
    data, registry = tmp_path / "data", tmp_path / "reg"
    env = {**os.environ, "GROUNDWORK_DATA": str(data), "GROUNDWORK_ADAPTERS": str(registry)}
    env.pop("GROUNDWORK_INDEX", None)
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "ask adapters": str(registry), "serve adapters": str(registry), "finetune registry": str(registry),
        "adapters list registry": str(registry), "ask index": str(data / "index"),
        "serve users_file": str(data / "users.json")}
