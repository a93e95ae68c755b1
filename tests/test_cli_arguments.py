"""Arguments that name nothing (an unset shell variable, a blank, a bare `@`, a folder) or
that are out of range are one-line errors, never a default: every command that takes a run
reference, a variable name, a path or a filter, and the Python API's `run=`, `script=`,
`status=` and names. The store is checked to be left as it was after each."""

from __future__ import annotations

import pytest

import chkpt
from chkpt import api
from conftest import python, write

FIRST = "import numpy as np\nweights = np.arange(5000.0)\n"
SECOND = "import numpy as np\nbias = np.ones(3000)\nraise ValueError('second crashed')\n"

# What `"$RUN"` and friends become when a variable is unset or holds only blanks, and
# references whose run or checkpoint part is empty.
NAMES_NOTHING = ["", " ", "\t", "\n", "@", "@crash", "@1", " @exit", "latest@", "latest:", "latest:@crash",
                 "first.py@", "latest:@"]


@pytest.fixture
def two_runs(env, work, monkeypatch):
    """first.py (finished), then second.py (crashed); the cwd is their folder."""
    write(work, "first.py", FIRST)
    write(work, "second.py", SECOND)
    assert python(["first.py"], env, work).returncode == 0
    assert python(["second.py"], env, work).returncode == 1
    monkeypatch.chdir(work)
    return work


def state() -> list[tuple[str, str, bool, int]]:
    """Every run's id, script, pin and number of checkpoints: what a command must not change."""
    return [(r.id, r.script, r.pinned, r.checkpoint_count) for r in chkpt.runs()]


def one_line_problem(result, status: int = 2) -> str | None:
    """What is wrong, if anything: it must exit with `status` and say one `chkpt:` line."""
    lines = result.stderr.strip().splitlines()
    if "Traceback" in result.stderr or len(lines) != 1 or not lines[0].startswith("chkpt: "):
        return f"not one chkpt: line: {result.stderr[-300:]!r}"
    if result.returncode != status:
        return f"exit status {result.returncode}, not {status} ({lines[0]})"
    return None


def problems_of(in_process, cwd, commands: list[list[str]], status: int = 2) -> list[str]:
    before = state()
    problems = []
    for argv in commands:
        result = in_process(argv, cwd)
        problem = one_line_problem(result, status)
        if problem is None and state() != before:
            problem = "changed the store"
        if problem:
            problems.append(f"chkpt {' '.join(map(repr, argv))}: {problem}")
            before = state()
    return problems


def test_a_reference_that_names_nothing_is_an_error_for_every_command(two_runs, in_process):
    latest = chkpt.runs()[0].id
    commands = []
    for ref in NAMES_NOTHING:
        commands += [["rm", ref], ["rm", ref, "--dry-run"], ["rm", latest, ref], ["pin", ref], ["unpin", ref],
                     ["show", ref], ["show", ref, "--json"], ["diff", ref], ["diff", f"{latest}@1", ref],
                     ["export", ref, "--to", "out"], ["shell", ref], ["resume", "first.py", "--from", ref]]
    problems = problems_of(in_process, two_runs, commands)
    assert not problems, f"{len(problems)} of {len(commands)}:\n" + "\n".join(problems)
    assert not (two_runs / "out").exists()


def test_a_folder_is_no_reference_to_the_latest_run_of_its_scripts(two_runs, in_process):
    (two_runs / "sub").mkdir()
    commands = [[command, folder] for command in ("rm", "pin", "show", "shell")
                for folder in (".", "/", str(two_runs), "./", "sub")]
    problems = problems_of(in_process, two_runs, commands)
    assert not problems, "\n".join(problems)
    said = in_process(["rm", str(two_runs)], two_runs).stderr
    assert "is a folder" in said and "first.py" in said  # names a script in it to use instead


def test_an_unknown_checkpoint_selector_suggests_the_closest(two_runs, in_process):
    result = in_process(["show", "second.py@crsh"], two_runs)
    assert one_line_problem(result) is None
    assert "did you mean crash?" in result.stderr


def test_names_paths_and_filters_that_name_nothing_are_errors(two_runs, in_process):
    latest = chkpt.runs()[0].id
    commands = []
    for blank in ["", " ", "\t"]:
        commands += [["show", latest, blank], ["export", latest, blank, "--to", "out"],
                     ["export", latest, "--to", blank], ["ls", "--script", blank], ["ls", "--status", blank],
                     ["ls", "--since", blank], ["ls", "--until", blank], ["gc", "--script", blank],
                     ["gc", "--max-size", blank], ["gc", "--older-than", blank], ["config", "--script-dir", blank],
                     ["sync", blank], ["sync", "--timeout", blank]]
    commands += [["ls", "-n", "-1"], ["ls", "--status", ","], ["ls", "--status", "crashd"],
                 ["config", "--script-dir", str(two_runs / "no-such-folder")]]
    problems = problems_of(in_process, two_runs, commands)
    assert not problems, f"{len(problems)} of {len(commands)}:\n" + "\n".join(problems)
    assert not (two_runs / "out").exists()


HUGE = "9" * 400  # a float of it is inf


@pytest.mark.parametrize("argv", [
    ["gc", "--max-size", HUGE], ["gc", "--max-size", "nan"], ["gc", "--older-than", HUGE],
    ["gc", "--max-size", "1" + "0" * 5000], ["ls", "--since", HUGE + "d"], ["ls", "--until", HUGE],
    ["sync", "s3://b/p", "--timeout", HUGE], ["show", "latest@" + HUGE], ["show", "latest@--1"],
    ["show", "latest@\u00b2"], ["show", "latest@-" + "9" * 5000],
])
def test_numbers_out_of_range_are_one_line(two_runs, in_process, argv):
    before = state()
    problem = one_line_problem(in_process(argv, two_runs))
    assert problem is None, problem
    assert state() == before


def test_the_api_refuses_references_scripts_and_names_that_name_nothing(two_runs):
    for blank in ["", " ", "\n"]:
        calls = [(chkpt.load, ("weights",), {"run": blank}), (chkpt.load, ("weights",), {"script": blank}),
                 (chkpt.history, ("weights",), {"run": blank}), (chkpt.runs, (), {"script": blank}),
                 (chkpt.load, (blank,), {}), (chkpt.load, (blank,), {"run": "latest:first.py"}),
                 (chkpt.runs, (), {"status": blank}), (chkpt.diff, (blank,), {}),
                 (api.resolve, (blank + "@crash",), {})]
        for function, args, kwargs in calls:
            with pytest.raises(api.BadReference) as raised:
                function(*args, **kwargs)
            assert "\n" not in str(raised.value)
    with pytest.raises(api.BadReference, match="did you mean crashed"):
        chkpt.runs(status="crashd")
    with pytest.raises(ValueError, match="Unix time"):
        chkpt.runs(since=float("nan"))
    with pytest.raises(TypeError, match="run="):
        chkpt.load("weights", run=3)
    assert isinstance(api.BadReference("x"), ValueError | api.NotFound)  # callers may catch either
    assert chkpt.load("weights", run=" latest:first.py ").shape == (5000,)  # blanks around a name are fine
