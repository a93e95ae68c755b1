"""The README's 60-second tour works exactly as written: every `$` command of its console
blocks runs in order in a fresh directory, with the output the tour shows (run ids, clock
times, durations, paths and pids put aside), and its notebook code runs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, PYTHON, chkpt_json

README = Path(__file__).parent.parent / "README.md"
MARK = "@@chkpt-tour@@"


def tour_text() -> str:
    return README.read_text().split("## A 60-second tour", 1)[1].split("\n## ", 1)[0]


def blocks(kind: str, text: str) -> list[list[str]]:
    return [block.splitlines() for block in re.findall(rf"```{kind}\n(.*?)```", text, re.S)]


def steps(text: str) -> list[tuple[str, str, list[str]]]:
    """(command with any heredoc, stdin, expected output lines) for each `$` line."""
    result: list[tuple[str, str, list[str]]] = []
    for lines in blocks("console", text):
        i = 0
        while i < len(lines):
            command = lines[i].removeprefix("$ ")
            i += 1
            heredoc = re.search(r"<<'(\w+)'", command)
            if heredoc:
                end = lines.index(heredoc.group(1), i)
                command = "\n".join([command, *lines[i:end + 1]])
                i = end + 1
            stdin, expected = [], []
            while i < len(lines) and not lines[i].startswith("$ "):
                if lines[i].startswith(">>> "):
                    stdin.append(lines[i].removeprefix(">>> "))
                else:
                    expected.append(lines[i])
                i += 1
            result.append((command, "".join(s + "\n" for s in stdin), expected))
    return result


HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None


def normal(line: str, replacements: dict[str, str], parquet: bool = True) -> str:
    for old, new in replacements.items():
        line = line.replace(old, new)
    if not parquet:  # without pyarrow a frame exports as pickle plus CSV, as the tour says
        line = line.replace("df.parquet", "df.pkl")
    # sizes vary with the libraries' versions and with pyarrow's presence, as the tour says
    line = re.sub(r"\b\d+(\.\d+)? (B|KiB|MiB|GiB)\b", "SIZE", line)
    line = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "DATE", line)
    line = re.sub(r"\d\d:\d\d:\d\d", "TIME", line)
    line = re.sub(r"\+?\d+\.\d+s\b|\b\d+ms\b", "SECONDS", line)  # durations, pauses
    return " ".join(line.replace(">>> ", "").split())


def run_console(text: str, env: dict[str, str], work: Path) -> list[tuple[str, list[str], str, int]]:
    """Run the `$` commands of `text` in order: (command, expected lines, output, status)."""
    commands = steps(text)
    script = []
    for number, (command, stdin, _) in enumerate(commands):
        feed = f" <<'{MARK}'\n{stdin}{MARK}" if stdin else ""
        script.append(f"cd {work}/tour 2>/dev/null; echo {MARK} {number}\n{command}{feed}\necho {MARK} rc $? >&2")
    ran = subprocess.run(["bash", "-c", f"cd {work}\nexec 2>&1\n" + "\n".join(script)], env=env, cwd=work,
                         capture_output=True, text=True, timeout=300)
    outputs = re.split(rf"{MARK} \d+\n", ran.stdout)[1:]
    assert len(outputs) == len(commands), ran.stdout
    results = []
    for (command, _, expected), output in zip(commands, outputs, strict=True):
        body, status = output.rsplit(MARK + " rc ", 1)
        results.append((command, expected, body, int(status)))
    return results


def check(results: list[tuple[str, list[str], str, int]], replacements: dict[str, str],
          parquet: bool) -> None:
    for command, expected, body, status in results:
        assert status == (1 if command == "python analysis.py" else 0), (command, body)
        if command == "python analysis.py":
            assert body.strip().endswith("KeyError: 'volume'")
            continue
        actual = {normal(line, replacements) for line in body.splitlines()}
        for line in expected:
            if " pid " not in line:  # the process id and host differ
                assert normal(line, replacements, parquet) in actual, (command, line, body)


@pytest.mark.parametrize("pyarrow", ["installed", "absent"])
def test_the_tour_works_as_written(pyarrow, env, work, tmp_path):
    env = dict(env, PATH=f"{BIN}:{env['PATH']}")
    if pyarrow == "installed" and not HAS_PYARROW:
        pytest.skip("pyarrow is not installed here (the other case covers its absence)")
    # a module that cannot be imported shadows an installed one: the tour's venv has no IPython
    # (so `chkpt shell` is the plain prompt it shows), and pyarrow in one case
    absent = ["IPython"] + (["pyarrow"] if pyarrow == "absent" else [])
    for name in absent:
        stub = tmp_path / "absent" / name
        stub.mkdir(parents=True)
        (stub / "__init__.py").write_text(f"raise ImportError('{name} is absent in this test')\n")
    env["PYTHONPATH"] = str(tmp_path / "absent")
    before_notebook, rest = tour_text().split("```python", 1)
    notebook_block, after_notebook = rest.split("```", 1)
    first = run_console(before_notebook, env, work)
    tour_dir = work / "tour"
    [crashed] = chkpt_json(["ls"], env, tour_dir)
    replacements = {crashed["id"]: "e9a45e6a", env["CHKPT_DIR"]: "/home/you/.cache/chkpt",
                    str(work): "/home/you"}
    check(first, replacements, parquet=pyarrow == "installed")

    result = subprocess.run([PYTHON, "-c", notebook_block], env=env, cwd=tour_dir,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["1 explicit epoch 0 2.466", "2 explicit epoch 1 5.254",
                                          "3 explicit epoch 2 7.546", "4 crash  7.546"]

    later = run_console(after_notebook, env, work)
    resumed = chkpt_json(["ls"], env, tour_dir)[0]
    assert resumed["id"] != crashed["id"] and resumed["resumed_from"] == f"{crashed['id']}@4"
    check(later, {**replacements, resumed["id"]: "5b0c1f2d"}, parquet=pyarrow == "installed")
