"""Fuzzing what chkpt reads from files and the environment: store records (run.json and
checkpoint manifests, mutated from real ones or made of random JSON and bytes) and config
values (TOML documents, environment variables, the parsed-config cache). Whatever they hold,
reading them never raises past chkpt: `chkpt ls`, `ls --json` and `show` list the good run,
mark the bad one damaged and say so in `chkpt:` lines; config gives one-line warnings and
the lower layer's values.

hypothesis draws the inputs (JSON and TOML values of every type, NaN and the infinities,
integers past 2**64, control characters) and, when a property fails, shrinks the input to a
small one that still fails. Examples are derandomized: each run tries the same ones.
"""

from __future__ import annotations

import contextlib
import io
import json
import marshal
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chkpt import cli
from chkpt import config as config_module
from conftest import python, write

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

numbers = st.one_of(st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e300, -1e300, 2**63, 2**64, -1,
                                     -(2**63), 0, 1e-300]),
                    st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True))
texts = st.one_of(st.text(max_size=20), st.sampled_from(["", " ", "\n", "\x1b[2J", "../..", "crash", "64KiB", "5m",
                                                         "inf", "nan", "-1", "1e400", "9" * 50]))
json_values = st.recursive(st.one_of(st.none(), st.booleans(), numbers, texts),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(texts, inner, max_size=4)),
                           max_leaves=12)


def paths_in(value, prefix=()):
    """Every path (a tuple of keys and indexes) to a value inside a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths_in(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths_in(item, (*prefix, index))


def _at(value, path):
    for step in path:
        value = value[step]
    return value


@st.composite
def mutated(draw, original: dict) -> bytes:
    """`original` with one value replaced by a random one, or deleted, or a key added; or
    random bytes; as the bytes of a JSON file (NaN and Infinity written as Python's json does)."""
    kind = draw(st.sampled_from(["number", "number", "numbers", "replace", "delete", "add", "bytes", "json"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    record = json.loads(json.dumps(original))
    every = [p for p in paths_in(record) if p]
    numeric = [p for p in every if isinstance(_at(record, p), int | float) and not isinstance(_at(record, p), bool)]
    if kind == "number":  # one number (a time, size or count) another, often one of its own level
        top = [path for path in numeric if len(path) <= 2]
        path = draw(st.sampled_from(top if top and draw(st.booleans()) else numeric))
        _at(record, path[:-1])[path[-1]] = draw(numbers)
        return json.dumps(record).encode()
    if kind == "numbers":  # each number another one, or itself
        for path in numeric:
            _at(record, path[:-1])[path[-1]] = draw(st.one_of(st.just(_at(record, path)), numbers))
        return json.dumps(record).encode()
    where = draw(st.sampled_from(numeric if numeric and draw(st.booleans()) else every))
    parent = _at(record, where[:-1])
    if kind == "replace":  # a number is replaced by a number half the time: times, sizes and counts
        number = isinstance(parent[where[-1]], int | float) and draw(st.booleans())
        parent[where[-1]] = draw(numbers if number else json_values)
    elif kind == "delete":
        del parent[where[-1]]
    elif isinstance(parent, dict):
        parent[draw(texts)] = draw(json_values)
    else:
        parent.append(draw(json_values))
    return json.dumps(record).encode()


SCRIPT = """
import numpy as np
import chkpt
weights = np.arange(3000.0)
table = {"a": np.ones(500), "b": list(range(300))}
chkpt.snapshot("first")
weights = weights * 2
"""


@pytest.fixture(scope="module")
def real_store(tmp_path_factory):
    """A store made by two real runs of one script (isolated as the `env` fixture does, for the
    whole module): a good one, and one whose record and first manifest the tests overwrite."""
    base = tmp_path_factory.mktemp("fuzz")
    home = base / "home"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("CHKPT", "XDG_"))}
    environment.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
                       CHKPT_DIR=str(base / "store"), PYTHONUNBUFFERED="1")
    environment.pop("PYTHONPATH", None)
    work = base / "work"
    write(work, "job.py", SCRIPT)
    for _ in range(2):
        assert python(["job.py"], environment, work).returncode == 0
    runs_dir = base / "store" / "runs"
    good, victim = sorted(os.listdir(runs_dir), key=lambda r: os.stat(runs_dir / r / "run.json").st_mtime)
    files = {"run": runs_dir / victim / "run.json", "manifest": runs_dir / victim / "checkpoints" / "000001.json"}
    return {"env": environment, "work": work, "good": good, "victim": victim, "files": files,
            "original": {name: path.read_bytes() for name, path in files.items()}}


def chkpt_in_process(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def in_store(real_store, monkeypatch):
    for key in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "CHKPT_DIR"):
        monkeypatch.setenv(key, real_store["env"][key])
    monkeypatch.chdir(real_store["work"])
    yield real_store
    for name, path in real_store["files"].items():
        path.write_bytes(real_store["original"][name])


def check_readers(store) -> None:
    """`chkpt ls`, `ls --json`, `show` of both runs: no exception escapes, every stderr line is
    one `chkpt:` line, and the good run is listed and shown as ever."""
    status, out, err = chkpt_in_process(["ls", "--json"])
    assert status == 0, err
    listed = {run["id"]: run["status"] for run in json.loads(out)}
    assert listed[store["good"]] == "finished"
    assert store["victim"] in listed  # as it is, or damaged: never dropped
    for argv in (["ls"], ["show", store["victim"]], ["show", store["victim"], "--json"], ["show", store["good"]],
                 ["diff", f"{store['victim']}@2"], ["show", store["victim"], "weights"]):
        status, out, err = chkpt_in_process(argv)
        assert all(line.startswith("chkpt: ") for line in err.splitlines()), (argv, err)
        if argv[1:2] == [store["good"]]:
            assert status == 0 and not err, (argv, err)
        else:
            assert status in (0, 1, 2), (argv, status, err)
    status, out, _ = chkpt_in_process(["ls"])
    assert status == 0 and store["good"] in out


@FUZZ
@given(data=st.data())
def test_any_run_record_is_read_or_marked_damaged(in_store, data):
    original = json.loads(in_store["original"]["run"])
    in_store["files"]["run"].write_bytes(data.draw(mutated(original)))
    check_readers(in_store)


@FUZZ
@given(data=st.data())
def test_any_manifest_is_read_or_marked_damaged(in_store, data):
    original = json.loads(in_store["original"]["manifest"])
    path = in_store["files"]["manifest"]
    path.write_bytes(data.draw(mutated(original)))
    later = os.stat(in_store["files"]["run"]).st_mtime + 10  # newer than the run's summary: it is read
    os.utime(path, (later, later))
    check_readers(in_store)


# -- config ----------------------------------------------------------------------------------

toml_scalars = st.one_of(st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=True, allow_infinity=True), texts)
toml_values = st.recursive(toml_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                  st.dictionaries(texts, inner, max_size=3)),
                           max_leaves=8)
keys = st.one_of(st.sampled_from(sorted(config_module.SETTINGS)), texts.filter(bool))
amounts = st.one_of(numbers.filter(lambda n: not isinstance(n, int) or -(2**63) <= n < 2**64),  # TOML's integers
                    st.builds(lambda n, unit: f"{n}{unit}", numbers, st.sampled_from(["", "s", "m", "h", "d", "ms",
                                                                                      "KiB", "GiB", "TB", " MiB"])))


def toml_text(value) -> str:
    """`value` as a TOML value (inline tables and arrays; json's string escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_text, value)) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_text(v)}" for k, v in value.items()) + "}"


def assert_sound(loaded: config_module.Config, origin: str | None = None) -> None:
    """Every effective value is one its key can have; every warning is one line."""
    for key, setting in config_module.SETTINGS.items():
        value = getattr(loaded, key)
        setting.parse(value)  # an effective value is one the key accepts
        if setting.parse is config_module.parse_size:
            assert isinstance(value, int) and 0 <= value < 2**63, (key, value)
        if setting.parse is config_module.parse_duration:  # waits take at most threading.TIMEOUT_MAX
            assert isinstance(value, float) and 0 <= value <= 100 * 365 * 86400, (key, value)
    for warning in loaded.warnings:
        assert "\n" not in warning and "\r" not in warning
        assert origin is None or warning.startswith(origin)


@FUZZ
@given(settings_=st.dictionaries(keys, st.one_of(amounts, toml_values), max_size=4),
       where=st.sampled_from(["chkpt.toml", "pyproject"]))
def test_any_toml_settings_give_sound_values_and_one_line_warnings(tmp_path, settings_, where):
    lines = [f"{json.dumps(key)} = {toml_text(value)}" for key, value in settings_.items()]
    name = "chkpt.toml" if where == "chkpt.toml" else "pyproject.toml"
    folder = tmp_path / f"p{len(os.listdir(tmp_path))}"
    write(folder, name, ("[tool.chkpt]\n" if name == "pyproject.toml" else "") + "\n".join(lines) + "\n")
    loaded = config_module.load(str(folder), environ={})
    assert_sound(loaded, str(folder / name))


shaped = st.builds(lambda head, value: f"{head}{toml_text(value)}\n".encode(),
                   st.sampled_from(["tool = ", "tool.chkpt = ", "[tool]\nchkpt = ", "[tool.chkpt]\ninterval = ",
                                    "[[tool.chkpt]]\nkeep = ", "interval = ", "[interval]\nx = "]), toml_values)


@FUZZ
@given(document=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode), shaped),
       where=st.sampled_from(["chkpt.toml", "pyproject.toml"]))
def test_any_config_file_bytes_give_sound_values(tmp_path, document, where):
    folder = tmp_path / f"p{len(os.listdir(tmp_path))}"
    folder.mkdir()
    (folder / where).write_bytes((b"# tool.chkpt\n" if where == "pyproject.toml" else b"") + document)
    assert_sound(config_module.load(str(folder), environ={}), str(folder / where))


@FUZZ
@given(environ=st.dictionaries(st.sampled_from([f"CHKPT_{key.upper()}" for key in config_module.SETTINGS]),
                               st.one_of(texts, numbers.map(str)), max_size=5))
def test_any_environment_gives_sound_values(tmp_path, environ):
    if any("\0" in value for value in environ.values()):
        return  # an environment variable cannot hold a NUL
    assert_sound(config_module.load(str(tmp_path), environ=environ))


@FUZZ
@given(data=st.data())
def test_any_config_cache_is_believed_only_in_its_one_shape(tmp_path, data):
    folder = tmp_path / f"p{len(os.listdir(tmp_path))}"
    write(folder, "chkpt.toml", "interval = 20\nkeep = 4\n")
    info = os.stat(folder / "chkpt.toml")
    key = (info.st_mtime_ns, info.st_size)  # a cache made for this very file, holding anything
    held = data.draw(json_values)
    cached = data.draw(st.sampled_from([marshal.dumps((key, held)), marshal.dumps(held),
                                        marshal.dumps((key, held))[:-1], bytes(reversed(marshal.dumps(held)))]))
    cache = config_module._parsed_cache_path(str(folder / "chkpt.toml"))
    os.makedirs(os.path.dirname(cache), mode=0o700, exist_ok=True)
    with open(cache, "wb") as handle:
        handle.write(cached)
    os.chmod(cache, 0o600)
    loaded = config_module.load(str(folder), environ={})
    if cached == marshal.dumps((key, held)) and isinstance(held, dict) and all(isinstance(k, str) for k in held):
        assert_sound(loaded)  # a cache of the user's own, well formed: believed, each value checked as ever
        return
    assert (loaded.interval, loaded.keep, loaded.warnings) == (20.0, 4, [])  # else the file is parsed again
    with open(cache, "rb") as handle:  # and the cache replaced by a good one
        assert marshal.load(handle)[1] == {"interval": 20, "keep": 4}
