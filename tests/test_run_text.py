"""Text from a run is escaped on the terminal and intact in JSON; broken config and skips recorded."""

from __future__ import annotations

import json
import re

import pytest

from conftest import PYTHON, chkpt, python, run, runs, write

BODY = """
import sys, numpy as np, chkpt
results = {KEY: np.arange(2_000.0)}
weights = np.ones(3_000)
chkpt.snapshot(LABEL)
raise ValueError(MESSAGE)
"""

PLAIN = {"name": "prog.py", "argv": ["arg"], "key": "train", "label": "first",
         "message": "bad value"}

# Each case puts control characters in one piece of text a run records.
CASES = {
    "script_name_escape": {"name": "evil\x1b[31m.py"},
    "script_name_newline": {"name": "two\nlines.py"},
    "argv_osc_title": {"argv": ["\x1b]0;title\x07", "x"]},
    "exception_message": {"message": "screen \x1b[2J wiped\r"},
    "snapshot_label": {"label": "\x1b[31mred"},
    "dict_key": {"key": "a\x1bb"},
}

BAD_BYTES = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def bad_bytes(text: str) -> list[str]:
    return sorted({repr(c) for c in BAD_BYTES.findall(text)})


@pytest.mark.parametrize("case", sorted(CASES))
def test_control_characters_from_a_run_are_escaped(case, env, work):
    spec = dict(PLAIN, **CASES[case])
    source = (BODY.replace("KEY", repr(spec["key"])).replace("LABEL", repr(spec["label"]))
              .replace("MESSAGE", repr(spec["message"])))
    write(work, "other.py", "import numpy as np\nkept = np.arange(3_000.0)\n")
    assert python(["other.py"], env, work).returncode == 0
    write(work, spec["name"], source)
    crashed = run([PYTHON, spec["name"], *spec["argv"]], env, work)
    assert crashed.returncode == 1 and "ValueError" in crashed.stderr

    problems = []
    outputs = {
        "ls": chkpt(["ls"], env, work),
        "show latest": chkpt(["show", "latest"], env, work),
        "show latest@crash": chkpt(["show", "latest@crash"], env, work),
        "shell banner": chkpt(["shell", "latest@crash"], env, work, stdin=""),
    }
    for label, result in outputs.items():
        if result.returncode != 0:
            problems.append(f"{label}: exit status {result.returncode}: {result.stderr[-200:]!r}")
        for stream in ("stdout", "stderr"):
            found = bad_bytes(getattr(result, stream))
            if found:
                problems.append(f"{label}: control characters {found} on {stream}")
    table = outputs["ls"].stdout.splitlines()
    if len(table) != 1 + 2 + 1:  # header, one row per run, footer
        problems.append(f"ls: {len(table)} lines for 2 runs: {table!r}")

    latest = runs(env, work)[0]
    if latest["argv"] != [spec["name"], *spec["argv"]]:
        problems.append(f"ls --json: argv {latest['argv']!r}")
    if not latest["script"].endswith("/" + spec["name"]):
        problems.append(f"ls --json: script {latest['script']!r}")
    if latest["exception"] != f"ValueError: {spec['message']}":
        problems.append(f"ls --json: exception {latest['exception']!r}")
    shown = json.loads(chkpt(["show", "latest", "--json"], env, work).stdout)
    labels = [c.get("label") for c in shown["checkpoints"]]
    if spec["label"] not in labels:
        problems.append(f"show --json: labels {labels!r}")
    names = {v["name"] for c in shown["checkpoints"] for v in c["variables"]}
    if not names & {f"results[{spec['key']!r}]", f"results['{spec['key']}']"}:
        problems.append(f"show --json: names {sorted(names)!r}")
    assert not problems, "\n".join(problems)


# -- config files that are not UTF-8 ---------------------------------------------------------

SCRIPT = "import numpy as np\ndata = np.arange(40_000.0)\nprint('total', int(data.sum()))\n"
BROKEN = b'interval = "30s"\n# caf\xff\xfe notes\n'


@pytest.mark.parametrize("where", ["user_config", "project_config"])
def test_a_config_file_with_invalid_utf8_gives_one_warning(where, env, work, tmp_path):
    user_file = tmp_path / "home" / ".config" / "chkpt" / "config.toml"
    path = user_file if where == "user_config" else work / "chkpt.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(BROKEN)
    write(work, "prog.py", SCRIPT)
    plain = python(["prog.py"], dict(env, CHKPT="0"), work)
    traced = python(["prog.py"], env, work)
    assert (traced.returncode, traced.stdout) == (plain.returncode, plain.stdout)
    lines = traced.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chkpt:"), traced.stderr
    assert str(path) in lines[0] and "Traceback" not in traced.stderr
    recorded = [r for r in runs(env, work) if r["checkpoints"] >= 1]
    assert len(recorded) == 1  # chkpt was not switched off: the data was saved


# -- a run whose every value is skipped ------------------------------------------------------

def test_a_run_whose_every_value_is_skipped_is_recorded_with_the_reasons(env, work):
    write(work, "prog.py", "import numpy as np\nbig = np.zeros(12_500)\nprint('done')\n")
    result = python(["prog.py"], dict(env, CHKPT_MAX_OBJECT_SIZE="1KiB"), work)
    assert (result.returncode, result.stdout, result.stderr) == (0, "done\n", "")
    [only] = runs(env, work)
    assert only["status"] == "finished"
    shown = chkpt(["show", "latest"], env, work)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    lines = shown.stdout.splitlines()
    assert "skipped:" in lines, shown.stdout
    after = lines[lines.index("skipped:") + 1:]
    [row] = [line for line in after if line.split()[:1] == ["big"]]
    assert "max_object_size" in row or "larger" in row or "KiB" in row, row
