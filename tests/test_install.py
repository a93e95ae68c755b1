"""Packaging: `pip install .` and `pip install -e .` each put the autoload .pth (and the
PEP 829 .start file) at the root of site-packages, both calling the start-up hook
chkpt_autoload.start, with working console scripts, and a script run in that fresh venv is
traced."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run, write

REPO = Path(__file__).resolve().parent.parent


def pip(venv: Path, *args: str) -> None:
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *args],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module", params=["regular", "editable"])
def installed(request, tmp_path_factory) -> tuple[str, Path, Path]:
    """A fresh venv with chkpt installed the given way; (mode, venv, site-packages)."""
    venv = tmp_path_factory.mktemp(request.param) / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip(venv, "hatchling", "editables")
    if request.param == "editable":
        pip(venv, "--no-build-isolation", "-e", str(REPO))
    else:
        pip(venv, "--no-build-isolation", str(REPO))
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    return request.param, venv, Path(purelib)


def test_pth_and_start_files_sit_at_the_root_of_site_packages(installed):
    _, _, site = installed
    assert (site / "chkpt_autoload.pth").read_text() == (REPO / "chkpt_autoload.pth").read_text()
    assert (site / "chkpt_autoload.start").read_text().strip() == "chkpt_autoload:start"
    assert (site / "chkpt_autoload.pth").read_text().strip() == "import chkpt_autoload; chkpt_autoload.start()"


def test_the_hook_module_is_importable_and_not_a_stale_copy(installed, env, work):
    mode, venv, site = installed
    found = run([str(venv / "bin" / "python"), "-c", "import chkpt_autoload; print(chkpt_autoload.__file__)"],
                env, work).stdout.strip()
    # a regular install has it at the root of site-packages; an editable one reads it from src/
    assert Path(found) == (site / "chkpt_autoload.py" if mode == "regular" else REPO / "src" / "chkpt_autoload.py")


def test_the_hook_imports_nothing_of_chkpt_when_off(installed, env, work):
    _, venv, _ = installed
    code = ("import sys; sys.argv[0] = 'job.py'; import chkpt_autoload; chkpt_autoload.start(); "
            "print(sorted(m for m in sys.modules if m.startswith('chkpt')))")
    env["CHKPT"] = "0"
    assert run([str(venv / "bin" / "python"), "-c", code], env, work).stdout == "['chkpt_autoload']\n"


def test_the_start_entry_names_a_callable(installed, env, work):
    _, venv, _ = installed
    module, _, attribute = (REPO / "chkpt_autoload.start").read_text().strip().partition(":")
    code = f"import importlib; print(callable(getattr(importlib.import_module({module!r}), {attribute!r})))"
    assert run([str(venv / "bin" / "python"), "-c", code], env, work).stdout == "True\n"


def test_console_scripts_work(installed, env, work):
    _, venv, _ = installed
    assert "ls" in run([str(venv / "bin" / "chkpt"), "--help"], env, work).stdout
    gc = run([str(venv / "bin" / "chkpt-gc"), "--dry-run"], env, work)
    assert gc.returncode == 0, gc.stderr


def test_a_script_in_the_fresh_venv_is_traced(installed, env, work):
    mode, venv, _ = installed
    write(work, "job.py", "table = [[float(i)] * 10 for i in range(2000)]\nprint('done')\n")
    result = run([str(venv / "bin" / "python"), "job.py"], env, work)
    assert (result.returncode, result.stdout, result.stderr) == (0, "done\n", ""), mode
    listed = json.loads(run([str(venv / "bin" / "chkpt"), "ls", "--json"], env, work).stdout)
    assert [r["script_name"] for r in listed] == ["job.py"]
