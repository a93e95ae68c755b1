"""Shared fixtures: an isolated home/config/store per test, and helpers that run real
interpreters (this venv's, where chkpt is installed with its autoload .pth)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
PYTHON = str(BIN / "python")
CHKPT = str(BIN / "chkpt")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose HOME, XDG dirs and store all live in the test's temp dir."""
    home = tmp_path / "home"
    home.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CHKPT", "XDG_"))}
    clean.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_STATE_HOME=str(home / ".local/state"),
        CHKPT_DIR=str(tmp_path / "store"),
        PYTHONUNBUFFERED="1",
    )
    clean.pop("PYTHONPATH", None)
    return clean


@pytest.fixture(autouse=True)
def isolated_process(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Code under test in this process sees the same isolated home and store too."""
    for key in list(os.environ):
        if key.startswith(("CHKPT", "XDG_")):
            monkeypatch.delenv(key)
    for key in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME",
                "CHKPT_DIR"):
        monkeypatch.setenv(key, env[key])


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A directory for the test's scripts (the cwd of the processes it starts)."""
    directory = tmp_path / "work"
    directory.mkdir()
    return directory


def write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def run(args: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=cwd, input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def python(args: list[str], env: dict[str, str], cwd: Path, **kw) -> subprocess.CompletedProcess[str]:
    """Run this venv's python (autoload .pth installed) with `args`."""
    return run([PYTHON, *args], env, cwd, **kw)


def chkpt(args: list[str], env: dict[str, str], cwd: Path, **kw) -> subprocess.CompletedProcess[str]:
    """Run the `chkpt` console script."""
    return run([CHKPT, *args], env, cwd, **kw)


def chkpt_here(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`chkpt ARGS` through `cli.main` in this process, with `env` as its whole environment and
    `cwd` as its directory (both put back after): what `chkpt` prints, without starting an
    interpreter. For reading results; the CLI's own tests start the `chkpt` program."""
    from chkpt import cli

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(args)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["chkpt", *args], status, out.getvalue(), err.getvalue())


def chkpt_json(args: list[str], env: dict[str, str], cwd: Path):
    """`chkpt ARGS --json`, read in this process: the parsed output."""
    result = chkpt_here([*args, "--json"], env, cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def last_checkpoint(env: dict[str, str], work: Path, name: str, source: str, stdout: str) -> dict:
    """Run the script `source` as `name`, which must print `stdout` and nothing else and exit 0; its
    run's last checkpoint as `chkpt show --json` gives it."""
    write(work, name, source)
    result = python([name], env, work)
    assert (result.returncode, result.stdout, result.stderr) == (0, stdout, "")
    return chkpt_json(["show", "latest"], env, work)["checkpoints"][-1]


def runs(env: dict[str, str], cwd: Path) -> list[dict]:
    """`chkpt ls --json` (an empty list when the store does not exist yet)."""
    return chkpt_json(["ls"], env, cwd)


@pytest.fixture
def in_process(monkeypatch, capsys):
    """`chkpt ARGS` through `cli.main` in this process, from `cwd`: a CompletedProcess."""
    from chkpt import cli

    def call(args: list[str], cwd) -> subprocess.CompletedProcess[str]:
        monkeypatch.chdir(cwd)
        status = cli.main(args)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["chkpt", *args], status, out, err)

    return call
