"""Text a run saved is shown with its control characters escaped: `fmt.printable` in process,
then a run whose script name, argv, exception and label hold escape sequences and newlines,
listed, shown and opened in the shell."""

from __future__ import annotations

import json

import pytest

from chkpt import fmt
from conftest import chkpt, python, write

CONTROLS = [chr(code) for code in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]]


def visible(text: str) -> bool:
    """No character a terminal would act on, except the newlines between lines."""
    return all(char == "\n" or char not in CONTROLS for char in text)


@pytest.mark.parametrize("char", CONTROLS)
def test_printable_escapes_every_control_character(char):
    shown = fmt.printable(f"a{char}b")
    assert shown.startswith("a\\") and shown.endswith("b") and len(shown) > 3
    assert all(c.isprintable() for c in shown)


def test_printable_uses_the_familiar_escapes():
    assert fmt.printable("x\x1b[31my") == "x\\x1b[31my"
    assert fmt.printable("line\nnext\ttab\rback\x00\x7f\x9b") == "line\\nnext\\ttab\\rback\\x00\\x7f\\x9b"
    assert fmt.printable("para\u2028graph\u2029") == "para\\u2028graph\\u2029"
    assert fmt.printable("evil\u202egnp.py") == "evil\\u202egnp.py"  # a right-to-left override


def test_printable_keeps_printable_text_of_every_script():
    for text in ["", "analysis.py", "données été.py", "日本語の名前.py", "ελληνικά", "emoji 🎉", r"C:\path\x1b",
                 "results['train']", "step:batch"]:
        assert fmt.printable(text) == text


def test_a_table_of_escaped_cells_keeps_one_line_per_row():
    paint = fmt.Painter(True)
    rows = [[paint(fmt.printable("id\n1"), "cyan"), fmt.printable("a\x1b[2Jb.py")],
            ["2", fmt.printable("two\r\nlines")]]
    lines = fmt.table(["RUN", "SCRIPT"], rows, paint=paint).split("\n")
    assert len(lines) == 3
    assert fmt.visible_len(lines[1]) == len("id\\n1  a\\x1b[2Jb.py")


ESC_SCRIPT = "evil\x1b[31m.py"
ARGV_WITH_NEWLINE = "two\nlines"
EXCEPTION = "bad\x1b[2Jthing"
LABEL = "\x1b]0;t\x07"
KEY = "k\x1bey"


@pytest.fixture
def hostile(env, work):
    """One crashed run whose every saved text holds control characters."""
    write(work, ESC_SCRIPT, f"""
        import numpy as np
        import chkpt

        data = {{{KEY!r}: np.arange(2000.0)}}
        weights = np.ones(1000)
        chkpt.snapshot({LABEL!r})
        raise RuntimeError({EXCEPTION!r})
    """)
    result = python([ESC_SCRIPT, ARGV_WITH_NEWLINE], env, work)
    assert result.returncode == 1 and "RuntimeError" in result.stderr
    return work


def test_ls_show_and_shell_escape_run_text_and_json_keeps_it_exact(env, hostile):
    listed = chkpt(["ls"], env, hostile)
    assert listed.returncode == 0, listed.stderr
    assert visible(listed.stdout + listed.stderr)
    header, row, footer = listed.stdout.splitlines()  # one row for the run
    assert header.startswith("RUN") and footer.startswith("1 run,")
    assert "evil\\x1b[31m.py" in row and "RuntimeError: bad\\x1b[2Jthing" in row

    shown = chkpt(["show", "latest"], env, hostile)
    assert shown.returncode == 0, shown.stderr
    assert visible(shown.stdout + shown.stderr)
    assert "command  python evil\\x1b[31m.py two\\nlines" in shown.stdout
    assert "explicit (\\x1b]0;t\\x07)" in shown.stdout
    assert "data['k\\x1bey']" in shown.stdout  # the key's repr: a backslash, not an ESC
    checkpoint_rows = [line for line in shown.stdout.splitlines() if line.lstrip(">").split()[:1] in (["1"], ["2"])]
    assert len(checkpoint_rows) == 2

    shell = chkpt(["shell", "latest"], env, hostile, stdin="")
    assert shell.returncode == 0, shell.stderr
    assert visible(shell.stdout + shell.stderr)
    assert "(evil\\x1b[31m.py)" in shell.stderr and "RuntimeError: bad\\x1b[2Jthing" in shell.stderr

    [run] = json.loads(chkpt(["ls", "--json"], env, hostile).stdout)
    assert run["script"] == str(hostile / ESC_SCRIPT)
    assert run["argv"] == [ESC_SCRIPT, ARGV_WITH_NEWLINE]
    assert run["exception"] == f"RuntimeError: {EXCEPTION}"
    checkpoints = json.loads(chkpt(["show", "latest", "--json"], env, hostile).stdout)["checkpoints"]
    assert checkpoints[0]["label"] == LABEL



# -- text from the environment and from paths: every chkpt: line stays one line ---------------

def test_a_warning_shows_control_characters_as_escapes(capsys):
    from chkpt import guard

    guard.warn("store /tmp/a\nb\x1b[2J: \u2028gone")
    assert capsys.readouterr().err == "chkpt: store /tmp/a\\nb\\x1b[2J: \\u2028gone\n"


ODD_DIR = "odd\nname\x1b[31m\rx"


def test_a_store_path_with_a_newline_never_splits_a_line(env, work, tmp_path):
    odd = tmp_path / ODD_DIR
    odd.mkdir()
    (odd / "notes.txt").write_text("not a store\n")
    env["CHKPT_DIR"] = str(odd)
    write(work, "prog.py", "import numpy as np\ndata = np.arange(4000.0)\nprint('done')\n")
    traced = python(["prog.py"], env, work)
    assert (traced.returncode, traced.stdout) == (0, "done\n")
    [line] = traced.stderr.splitlines()
    assert line.startswith("chkpt: ") and "odd\\nname\\x1b[31m\\rx" in line and visible(traced.stderr)
    for args in (["ls"], ["config"], ["doctor"], ["show", "latest"], ["gc", "--dry-run"]):
        result = chkpt(args, env, work)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert visible(result.stdout + result.stderr), (args, result.stdout + result.stderr)
        assert "odd\\nname" in result.stdout + result.stderr, args


def test_a_config_file_in_a_folder_with_a_newline_warns_on_one_line(env, tmp_path):
    project = tmp_path / "proj\nect"
    project.mkdir()
    write(project, "chkpt.toml", "interval = soon\n")
    write(project, "prog.py", "print('done')\n")
    traced = python(["prog.py"], env, project)
    assert (traced.returncode, traced.stdout) == (0, "done\n")
    [line] = traced.stderr.splitlines()
    assert "proj\\nect/chkpt.toml" in line and "not valid TOML" in line
