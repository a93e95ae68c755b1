"""The activation rules, one test each in a real interpreter of this venv, and the pure
rules (decide, matches, module_from_orig_argv) in-process."""

from __future__ import annotations

import os
import sysconfig
import uuid
from pathlib import Path

import pytest

from chkpt import activation, paths, watch
from conftest import python, runs, write

MAKES_DATA = """\
import sys
import numpy as np
big = np.ones(200_000)
print(any(m.startswith('chkpt') for m in sys.modules))
"""


def test_file_script_is_traced(env, work):
    write(work, "job.py", MAKES_DATA)
    assert python(["job.py"], env, work).stdout == "True\n"
    assert [r["script"] for r in runs(env, work)] == [str(work / "job.py")]


def test_script_in_a_subdirectory_by_relative_path(env, work):
    write(work, "sub/job.py", MAKES_DATA)
    python(["./sub/../sub/job.py"], env, work)
    assert runs(env, work)[0]["script_name"] == "job.py"


def test_user_module_under_dash_m_is_traced(env, work):
    write(work, "pkg/__init__.py", "")
    write(work, "pkg/helper.py", "FACTOR = 3\n")
    write(work, "pkg/mod.py", "from .helper import FACTOR\n" + MAKES_DATA + "print(__name__, FACTOR)\n")
    result = python(["-m", "pkg.mod", "x"], env, work)
    assert result.stdout == "True\n__main__ 3\n", result.stderr
    assert runs(env, work)[0]["script"] == str(work / "pkg" / "mod.py")
    assert runs(env, work)[0]["argv"] == ["-m", "pkg.mod", "x"]  # recorded as run, so resume can run it so


def test_dash_c_is_not_traced_and_imports_nothing(env, work):
    result = python(["-c", MAKES_DATA], env, work)
    assert result.stdout == "False\n"
    assert runs(env, work) == []


def test_stdin_is_not_traced(env, work):
    assert python(["-"], env, work, stdin=MAKES_DATA).stdout == "False\n"
    assert runs(env, work) == []


def test_repl_is_not_traced(env, work):
    result = python(["-i"], env, work, stdin=MAKES_DATA)
    assert "False" in result.stdout
    assert runs(env, work) == []


@pytest.fixture
def site_module():
    """A module that makes data, installed into this venv's site-packages for one test."""
    name = f"chkpt_test_tool_{uuid.uuid4().hex[:8]}"
    path = Path(sysconfig.get_paths()["purelib"]) / f"{name}.py"
    path.write_text(MAKES_DATA)
    yield name, path
    path.unlink()


def test_programs_inside_the_interpreter_prefix_are_not_traced(env, work, site_module):
    name, path = site_module
    assert python(["-m", name], env, work).returncode == 0
    assert python([str(path)], env, work).returncode == 0
    assert runs(env, work) == []


def test_pytest_is_never_traced(env, work):
    write(work, "test_data.py", """
        import numpy as np
        big = np.ones(200_000)
        def test_x():
            assert big.sum() == 200_000
    """)
    result = python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_data.py"], env, work)
    assert "1 passed" in result.stdout, result.stdout + result.stderr
    assert runs(env, work) == []


def test_include_glob_traces_a_program_inside_the_prefix(env, work, site_module):
    name, path = site_module
    env["CHKPT_INCLUDE"] = f"{name}.py"
    python([str(path)], env, work)
    assert [r["script"] for r in runs(env, work)] == [str(path)]


def test_exclude_glob_keeps_a_user_script_untraced(env, work):
    write(work, "scratch_job.py", MAKES_DATA)
    write(work, "chkpt.toml", 'exclude = ["scratch_*.py"]\n')
    assert python(["scratch_job.py"], env, work).stdout == "True\n"
    assert runs(env, work) == []


def test_exclude_glob_with_a_path(env, work):
    write(work, "tmp/job.py", MAKES_DATA)
    env["CHKPT_EXCLUDE"] = str(work / "tmp") + "/*"
    result = python(["tmp/job.py"], env, work)
    assert (result.returncode, result.stdout) == (0, "True\n"), result.stderr  # it ran, chkpt loaded
    assert runs(env, work) == []


def test_a_watched_script_that_makes_no_data_loads_only_the_start_up_hooks(env, work):
    # Every script start in the environment pays for what is imported here (docs/benchmarks.md).
    write(work, "small.py", "import os\nname = 'report.csv'\nsizes = [1, 2, 3]\nprint(len(name))\n")
    result = python(["-X", "importtime", "small.py"], env, work)
    assert result.stdout == "10\n"
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert sorted(m for m in imported if m.startswith("chkpt")) == [
        "chkpt", "chkpt.activation", "chkpt.defaults", "chkpt.paths", "chkpt.unseen", "chkpt.watch"]
    assert "__future__" not in imported
    assert runs(env, work) == []


# -- the rules in-process ----------------------------------------------------------------------


@pytest.mark.parametrize(("orig_argv", "module"), [
    (["python", "-m", "pkg.mod", "x"], "pkg.mod"),
    (["python", "-mpkg.mod"], "pkg.mod"),
    (["python", "-X", "importtime", "-W", "error", "-m", "tool"], "tool"),
    (["python", "-Ximporttime", "-Werror", "-u", "-m", "tool"], "tool"),
    (["python", "-Im", "tool"], "tool"),
    (["python", "script.py", "-m", "x"], None),
    (["python", "-c", "pass"], None),
    (["python", "-"], None),
    (["python", "--version"], None),
    (["python", "-m"], None),
])
def test_module_from_orig_argv(orig_argv, module):
    assert activation.module_from_orig_argv(orig_argv) == module


def test_matches_names_and_paths(tmp_path):
    script = tmp_path / "sub" / "scratch_1.py"
    assert paths.matches(str(script), ["scratch_*.py"])
    assert paths.matches(str(script), [str(tmp_path) + "/sub/*"])
    assert not paths.matches(str(script), ["other*.py", str(tmp_path) + "/else/*"])
    assert not paths.matches(str(script), [])


def test_decide_exclude_wins_over_include_and_the_prefix_is_left_alone(tmp_path):
    user = str(tmp_path / "job.py")
    system = os.path.join(sysconfig.get_paths()["purelib"], "tool.py")
    assert activation.decide(user, [], []) is None
    assert activation.decide(user, ["job.py"], ["job.py"]) == "matches an exclude pattern"
    assert activation.decide(system, [], []) == "lives inside the interpreter's prefix or site-packages"
    assert activation.decide(system, ["tool.py"], []) is None


def test_configured_only_with_a_config_source(tmp_path, monkeypatch):
    assert not activation.configured(str(tmp_path))
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert not activation.configured(str(tmp_path))  # a pyproject without chkpt settings
    (tmp_path / "pyproject.toml").write_text("[tool.chkpt]\nkeep = 2\n")
    assert activation.configured(str(tmp_path))
    (tmp_path / "pyproject.toml").unlink()
    monkeypatch.setenv("CHKPT_DIR", str(tmp_path))  # alone, it does not count
    assert not activation.configured(str(tmp_path))
    monkeypatch.setenv("CHKPT_KEEP", "2")
    assert activation.configured(str(tmp_path))


def test_nothing_to_save():
    import numpy as np

    assert watch.nothing_to_save({"__name__": "__main__", "os": os, "n": 3, "name": "a.csv",
                                  "sizes": [1, 2, 3], "f": test_nothing_to_save}, 1024)
    assert not watch.nothing_to_save({"a": np.ones(3)}, 1024)
    assert not watch.nothing_to_save({"text": "x" * 2000}, 1024)
    assert not watch.nothing_to_save({"many": list(range(101))}, 1024)
    assert not watch.nothing_to_save({"nested": [[1]]}, 1024)
