"""The command line's grammar, in process: every subcommand's options and help, the script's
arguments passed through untouched, `-m`, `resume`, and one-line mistakes with exit status 2."""

from __future__ import annotations

import json
import sys

import pytest

from chkpt import cli, config
from chkpt.cli import parsing
from chkpt.cli.parsing import CliError, parse


def call(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`chkpt ARGV` in this process: (exit status, stdout, stderr)."""
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chkpt: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(autouse=True)
def in_work(work, monkeypatch):
    """Config is looked up from the cwd: the test's own empty directory."""
    monkeypatch.chdir(work)


def test_every_command_has_a_handler():
    assert set(cli.HANDLERS) == set(parsing.COMMANDS) == set(parsing.EXAMPLES)


# -- run ---------------------------------------------------------------------------------------

def test_every_setting_is_a_run_option_and_reaches_the_overrides():
    argv = ["run"]
    for key in config.SETTINGS:
        argv += [f"--{key.replace('_', '-')}", f"value-of-{key}"]
    args = parse([*argv, "prog.py"])
    assert args.overrides == {key: f"value-of-{key}" for key in config.SETTINGS}
    assert args.target == ["prog.py"]


def test_run_options_with_equals_and_none_given():
    assert parse(["run", "--interval=5s", "--keep", "3", "p.py"]).overrides == {"interval": "5s", "keep": "3"}
    assert parse(["run", "p.py"]).overrides == {}


def test_run_options_are_not_abbreviated():
    with pytest.raises(CliError, match=r"unrecognized arguments: --int .*chkpt run --help"):
        parse(["run", "--int", "5s", "p.py"])


def test_everything_after_the_script_goes_to_it_untouched():
    tail = ["--help", "--interval", "1s", "-m", "x", "--", "--keep", "-h"]
    args = parse(["run", "--interval", "5s", "prog.py", *tail])
    assert args.target == ["prog.py", *tail] and args.overrides == {"interval": "5s"}
    assert not args.module


def test_a_first_argument_that_is_no_command_runs_a_script(work):
    args = parse(["--interval", "5s", "prog.py", "a1", "--flag"])
    assert (args.command, args.overrides, args.target) == ("run", {"interval": "5s"}, ["prog.py", "a1", "--flag"])
    assert parse(["prog.py", "--help"]).target == ["prog.py", "--help"]
    (work / "job").write_text("")
    assert parse(["job", "x"]).target == ["job", "x"]  # an existing file, whatever its name


def test_dash_m_takes_the_module_and_passes_the_rest():
    args = parse(["run", "--interval", "5s", "-m", "pkg.mod", "--help", "--keep", "2"])
    assert args.module and args.target == ["pkg.mod", "--help", "--keep", "2"]
    assert args.overrides == {"interval": "5s"}
    shorthand = parse(["-m", "pkg.main", "x"])
    assert shorthand.command == "run" and shorthand.module and shorthand.target == ["pkg.main", "x"]


def test_dash_m_glued_to_its_module_is_refused():
    with pytest.raises(CliError, match="chkpt run --help"):
        parse(["run", "-mpkg.mod", "--keep", "3"])


def test_run_hands_the_script_its_arguments_and_the_options_as_config():
    args = parse(["--interval", "5s", "--modules", "numpy,torch", "prog.py", "--interval", "1s"])
    assert (args.command, args.module, args.target) == ("run", False, ["prog.py", "--interval", "1s"])
    cfg = config.load(None, args.overrides)
    assert cfg.interval == 5.0 and cfg.modules == ["numpy", "torch"]
    assert cfg.sources["interval"] == "command line" and cfg.sources["keep"] == "default"
    assert parse(["run", "--", "-odd.py", "-x"]).target[-2:] == ["-odd.py", "-x"]
    module = parse(["run", "--keep", "4", "-m", "pkg.mod", "--", "y"])
    assert module.module and module.target == ["pkg.mod", "--", "y"]
    assert config.load(None, module.overrides).keep == 4


@pytest.mark.parametrize(("argv", "fragment"), [
    (["run"], "run needs a script or -m module"),
    (["run", "--keep", "3"], "run needs a script"),
    (["run", "-m"], "-m needs a module name"),
    (["run", "--bogus", "p.py"], "unrecognized arguments: --bogus (see chkpt run --help)"),
    (["--interval"], "argument --interval: expected one argument"),
    (["run", "missing.py"], "can't open file 'missing.py'"),
])
def test_run_mistakes_are_one_line(capsys, argv, fragment):
    status, out, err = call(argv, capsys)
    assert status == 2 and out == ""
    one_line_error(err, fragment)


# -- resume ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "expected"), [
    (["x.py"], ("x.py", None, False, None)),
    (["x.py", "--force"], ("x.py", None, True, None)),
    (["--from", "latest@crash", "x.py"], ("x.py", "latest@crash", False, None)),
    (["x.py", "--from=3f2a@4", "--force", "--", "a", "--force", "--"],
     ("x.py", "3f2a@4", True, ["a", "--force", "--"])),
    (["x.py", "--"], ("x.py", None, False, [])),
])
def test_resume_arguments(argv, expected):
    args = parse(["resume", *argv])
    assert (args.script, args.ref, args.force, args.args) == expected


@pytest.mark.parametrize(("argv", "fragment"), [
    (["resume"], "resume needs either a script or -m MODULE"),
    (["resume", "x.py", "-m", "pkg.x"], "resume needs either a script or -m MODULE"),
    (["resume", "-m"], "argument -m: expected one argument"),
    (["resume", "x.py", "extra"], "unrecognized arguments: extra (see chkpt resume --help)"),
    (["resume", "x.py", "--from"], "argument --from: expected one argument"),
    (["resume", "nosuch.py"], "can't open file 'nosuch.py'"),
])
def test_resume_mistakes_are_one_line(capsys, argv, fragment):
    status, _, err = call(argv, capsys)
    assert status == 2
    one_line_error(err, fragment)


# -- the other commands --------------------------------------------------------------------------

def test_unknown_command_is_one_line_with_did_you_mean(capsys):
    status, out, err = call(["sho", "latest"], capsys)
    assert status == 2 and out == ""
    one_line_error(err, "unknown command 'sho'; did you mean show?", "chkpt run SCRIPT")
    status, _, err = call(["frobnicate"], capsys)
    assert status == 2 and "did you mean" not in err


def test_unknown_option_of_a_command_names_its_help(capsys):
    status, _, err = call(["ls", "--nope"], capsys)
    assert status == 2
    one_line_error(err, "unrecognized arguments: --nope", "chkpt ls --help")
    status, _, err = call(["ls", "-n", "many"], capsys)
    assert status == 2
    one_line_error(err, "invalid int value: 'many'")


@pytest.mark.parametrize("command", list(parsing.COMMANDS))
def test_every_subcommand_has_help_with_examples(capsys, command):
    status, out, _ = call([command, "--help"], capsys)
    assert status == 0
    assert "examples:" in out and f"chkpt {command.replace('load', 'export')}" in out


def test_run_and_resume_help(capsys):
    out = call(["run", "--help"], capsys)[1]
    assert "usage: chkpt run [OPTIONS] script.py [ARGS…]" in out
    assert all(f"--{key.replace('_', '-')}" in out for key in config.SETTINGS)
    assert "(default: 60s)" in out
    out = call(["resume", "--help"], capsys)[1]
    assert "chkpt resume train.py --from latest@crash" in out and "--force" in out


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"]])
def test_top_level_help_names_commands_and_references(capsys, argv):
    status, out, _ = call(argv, capsys)
    assert status == 0
    for word in ("run", "ls", "show", "export", "shell", "gc", "config", "doctor", "resume",
                 "latest:train.py", "@crash"):
        assert word in out


def test_config_json(capsys, env):
    status, out, _ = call(["config", "--json"], capsys)
    assert status == 0
    shown = json.loads(out)
    assert shown["dir"] == {"value": env["CHKPT_DIR"], "source": "env CHKPT_DIR"}
    assert set(shown) == set(config.SETTINGS) and shown["interval"]["source"] == "default"


def test_doctor_json(capsys):
    status, out, _ = call(["doctor", "--json"], capsys)
    doctor = json.loads(out)
    assert status == (0 if doctor["ok"] else 1)
    assert {c["topic"] for c in doctor["checks"]} >= {"python", "autoload", "store", "export", "shell"}


def test_chkpt_gc_is_chkpt_gc(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["chkpt-gc", "--dry-run", "--json"])
    status = cli.gc_main()
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["dry_run"] is True and report["runs"] == []


def test_a_bad_size_is_a_user_mistake(capsys):
    status, _, err = call(["gc", "--max-size", "lots"], capsys)
    assert status == 2
    one_line_error(err, "expected a size")
