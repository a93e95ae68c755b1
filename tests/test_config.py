"""Every config layer, its precedence, `chkpt config`, and bad input; the parsing and
layering in-process, the warnings and their effect on a script in real interpreters."""

from __future__ import annotations

import marshal
import os
import stat

import pytest

from chkpt import config as config_module
from chkpt import paths
from conftest import chkpt, chkpt_json, python, runs, write

SCRIPT = "import numpy as np\nsmall = np.ones(300)\nprint('ran')\n"  # 2.4 KB of data


def user_config(env, text):
    path = os.path.join(env["XDG_CONFIG_HOME"], "chkpt", "config.toml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    return path


def effective(env, work):
    return chkpt_json(["config"], env, work)


def test_defaults_come_from_the_builtin_layer(env, work):
    shown = effective(env, work)
    assert shown["interval"] == {"value": 60.0, "source": "default"}
    assert shown["min_size"]["value"] == 1024
    assert shown["modules"]["value"][:2] == ["numpy", "pandas"]


def test_user_file_overrides_defaults(env, work):
    path = user_config(env, 'interval = "5m"\nmax_store_size = "5GiB"\n')
    shown = effective(env, work)
    assert shown["interval"] == {"value": 300.0, "source": f"user file {path}"}
    assert shown["max_store_size"]["value"] == 5 * 1024**3


def test_project_pyproject_overrides_user_file(env, work):
    user_config(env, 'interval = "5m"\n')
    write(work, "pyproject.toml", '[project]\nname = "x"\n\n[tool.chkpt]\ninterval = 10\n')
    write(work, "sub/deeper/job.py", SCRIPT)
    shown = chkpt_json(["config", "--script-dir", str(work / "sub" / "deeper")], env, work)
    assert shown["interval"] == {"value": 10.0,
                                 "source": f"project file {work / 'pyproject.toml'}"}


def test_chkpt_toml_wins_over_pyproject_in_the_same_directory(env, work):
    write(work, "pyproject.toml", "[tool.chkpt]\ninterval = 10\n")
    write(work, "chkpt.toml", "interval = 20\n")
    assert effective(env, work)["interval"]["value"] == 20.0


def test_env_overrides_project(env, work):
    write(work, "chkpt.toml", "min_size = 0\n")
    env["CHKPT_MIN_SIZE"] = "64KiB"
    shown = effective(env, work)
    assert shown["min_size"] == {"value": 65536, "source": "env CHKPT_MIN_SIZE"}


def test_runner_options_override_env(env, work):
    write(work, "job.py", SCRIPT)
    env["CHKPT_MIN_SIZE"] = "1MiB"  # would make `small` too small to save
    python(["-m", "chkpt", "--min-size", "0", "job.py"], env, work)
    assert runs(env, work)[0]["checkpoints"] == 1


def test_project_layer_changes_what_a_script_saves(env, work):
    write(work, "job.py", SCRIPT)
    python(["job.py"], env, work)
    assert len(runs(env, work)) == 1
    write(work, "pyproject.toml", '[tool.chkpt]\nmin_size = "1MiB"\n')
    python(["job.py"], env, work)
    assert len(runs(env, work)) == 1  # too small now: the second run saved nothing


def test_every_key_has_an_env_variable(work):
    samples = {"interval": "7s", "dir": "/tmp/elsewhere", "keep": "3", "modules": "numpy,torch",
               "include": "a*.py", "exclude": "b*.py", "include_names": "x*",
               "exclude_names": "y*", "user_code": "script", "user_code_include": "*/vendor/*",
               "user_code_exclude": "*/gen/*", "upload_wait": "30s", "notebooks": "false"}
    for key in config_module.SETTINGS:
        variable = f"CHKPT_{key.upper()}"
        loaded = config_module.load(str(work), environ={variable: samples.get(key, "3KiB")})
        assert loaded.sources[key] == f"env {variable}", key
        assert loaded.warnings == []


def test_syntax_error_warns_once_names_the_file_and_the_script_runs(env, work):
    path = user_config(env, 'interval = "5m\n')
    write(work, "job.py", SCRIPT)
    result = python(["job.py"], env, work)
    assert result.returncode == 0 and result.stdout == "ran\n"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and path in lines[0] and "not valid TOML" in lines[0]
    assert runs(env, work)[0]["checkpoints"] == 1  # defaults were used


@pytest.mark.parametrize("where", ["user", "chkpt.toml", "pyproject.toml"])
def test_undecodable_bytes_warn_once_name_the_file_and_the_lower_layers_apply(where, env, work):
    bad = b'min_size = "1MiB"\nexclude = ["caf\xe9*.py"]\n'  # Latin-1, not UTF-8
    if where == "user":
        path = user_config(env, "")
    else:
        user_config(env, "min_size = 0\n")  # the lower layer, which must still apply
        path = str(work / where)
        bad = b"[tool.chkpt]\n" + bad if where == "pyproject.toml" else bad
    with open(path, "wb") as handle:
        handle.write(bad)
    write(work, "job.py", "import numpy as np\ntiny = np.ones(4)\nsmall = np.ones(300)\nprint('ran')\n")
    result = python(["job.py"], env, work)
    assert (result.returncode, result.stdout) == (0, "ran\n")
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and path in lines[0] and "not valid UTF-8" in lines[0], result.stderr
    (run,) = runs(env, work)  # chkpt stayed on
    saved = {v["name"] for v in chkpt_json(["show", run["id"]], env, work)["checkpoints"][-1]["variables"]}
    assert saved == ({"small"} if where == "user" else {"tiny", "small"})


def test_layers_in_process(env, work, monkeypatch):
    user_config(env, 'interval = "5m"\nkeep = 3\n')
    write(work, "pyproject.toml", "[tool.chkpt]\nkeep = 4\nmin_size = \"2KiB\"\n")
    loaded = config_module.load(str(work / "deeper"), overrides={"min_size": 0},
                                environ={"CHKPT_KEEP": "5"})
    assert (loaded.interval, loaded.keep, loaded.min_size) == (300.0, 5, 0)
    assert loaded.sources["interval"].startswith("user file ")
    assert (loaded.sources["keep"], loaded.sources["min_size"]) == ("env CHKPT_KEEP", "command line")
    assert loaded.warnings == []


def test_a_bad_value_in_process_keeps_the_lower_layer_and_names_the_file(work):
    write(work, "chkpt.toml", "interval = true\nmax_run_size = \"lots\"\n")
    loaded = config_module.load(str(work))
    assert (loaded.interval, loaded.sources["interval"]) == (60.0, "default")
    assert len(loaded.warnings) == 2 and all(str(work / "chkpt.toml") in w for w in loaded.warnings)


def test_unknown_key_warns_with_a_suggestion(env, work):
    path = user_config(env, "intervall = 5\n")
    write(work, "job.py", SCRIPT)
    result = python(["job.py"], env, work)
    assert result.stdout == "ran\n"
    assert result.stderr == (f"chkpt: {path}: unknown key 'intervall' (ignored); "
                             "did you mean 'interval'?\n")


def test_wrong_type_warns_names_key_and_keeps_default(env, work):
    write(work, "pyproject.toml", "[tool.chkpt]\nmax_object_size = [1]\n")
    result = chkpt(["config"], env, work)
    assert "max_object_size" in result.stderr and "pyproject.toml" in result.stderr
    assert effective(env, work)["max_object_size"]["source"] == "default"


def test_bad_env_value_warns_and_keeps_lower_layer(env, work):
    env["CHKPT_INTERVAL"] = "soon"
    write(work, "job.py", SCRIPT)
    result = python(["job.py"], env, work)
    assert result.stdout == "ran\n"
    assert "CHKPT_INTERVAL" in result.stderr and "soon" in result.stderr


@pytest.mark.parametrize(("text", "expected"), [
    ("64KiB", 65536), ("250MB", 250_000_000), ("5GiB", 5 * 1024**3), (1024, 1024), ("0", 0),
])
def test_sizes(text, expected):
    assert config_module.parse_size(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0), (1.5, 1.5), ("500ms", 0.5),
])
def test_durations(text, expected):
    assert config_module.parse_duration(text) == expected


@pytest.mark.parametrize("bad", [True, -1, "5 parsecs", "", [1], None])
def test_bad_sizes_and_durations_are_config_errors(bad):
    with pytest.raises(config_module.ConfigError):
        config_module.parse_size(bad)
    with pytest.raises(config_module.ConfigError):
        config_module.parse_duration(bad)


def test_xdg_dirs_match_platformdirs(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "k"))
    assert paths.user_config_dir() == platformdirs.user_config_dir("chkpt", appauthor=False)
    assert paths.user_cache_dir() == platformdirs.user_cache_dir("chkpt", appauthor=False)
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert paths.user_config_dir() == platformdirs.user_config_dir("chkpt", appauthor=False)
    assert paths.user_cache_dir() == platformdirs.user_cache_dir("chkpt", appauthor=False)


def test_an_s3_dir_stages_checkpoints_in_a_local_store_of_its_own_per_host(tmp_path):
    import urllib.parse

    loaded = config_module.load(str(tmp_path), environ={"CHKPT_DIR": "s3://team-bucket/chkpt/"})
    assert loaded.remote == "s3://team-bucket/chkpt"
    host = urllib.parse.quote(os.uname().nodename, safe="")
    assert loaded.store_dir == os.path.join(paths.user_cache_dir() + "-remote", host,
                                            "s3%3A%2F%2Fteam-bucket%2Fchkpt", "staging")
    odd = "s3://b/ä ö/%x~y"  # the directory name is urllib's quote of the URL, without importing it
    assert paths.remote_home(odd).endswith(urllib.parse.quote(odd, safe=""))
    assert config_module.load(str(tmp_path), environ={"CHKPT_DIR": str(tmp_path)}).remote is None


def test_example_config_lists_every_key_with_its_default():
    import tomllib

    here = os.path.dirname(os.path.dirname(__file__))
    with open(os.path.join(here, "config.example.toml"), "rb") as handle:
        example = tomllib.load(handle)
    assert set(example) == set(config_module.SETTINGS)
    for key, setting in config_module.SETTINGS.items():
        assert setting.parse(example[key]) == setting.parse(setting.default), key


# -- numbers out of range, and config files of the wrong shape ---------------------------------

@pytest.mark.parametrize(("key", "toml", "lower"), [
    ("interval", "inf", "5m"), ("interval", "1e10", "5m"), ("interval", "nan", "5m"), ("interval", "-5", "5m"),
    ("interval", '"' + "9" * 400 + 's"', "5m"), ("upload_wait", "-inf", "10s"),
    ("max_object_size", "inf", "1MiB"), ("max_object_size", "-1", "1MiB"), ("max_store_size", "1e300", "1GiB"),
    ("memory_budget", "nan", "1MiB"), ("cache_size", '"99999999999999999999 TiB"', "1GiB"),
    ("reuse_memory", "-0.5", "1MiB"), ("keep", "10000001", "3"), ("keep", '"\u00b2"', "3"),
    ("keep", '"' + "9" * 5000 + '"', "3"), ("min_size", "18446744073709551616", "1KiB"),
    ("dir", '"/tmp/a\\u0000b"', "/tmp/lower"),
])
def test_a_number_out_of_range_warns_names_the_file_and_key_and_keeps_the_lower_layer(
        key, toml, lower, env, work):
    user_config(env, f"{key} = {lower if key == 'keep' else repr(lower)}\n")
    write(work, "chkpt.toml", f"{key} = {toml}\n")
    loaded = config_module.load(str(work), environ={})
    [warning] = loaded.warnings
    assert str(work / "chkpt.toml") in warning and repr(key) in warning
    assert loaded.sources[key].startswith("user file ")
    assert getattr(loaded, key) == config_module.SETTINGS[key].parse(lower)
    assert "\n" not in warning and "9" * 100 not in warning  # a huge value is cut short


def test_a_number_out_of_range_in_the_environment_keeps_the_file_value(work):
    write(work, "chkpt.toml", "interval = 30\n")
    loaded = config_module.load(str(work), environ={"CHKPT_INTERVAL": "9" * 400, "CHKPT_KEEP": "-1",
                                                    "CHKPT_MAX_RUN_SIZE": "1e400"})
    assert (loaded.interval, loaded.sources["interval"]) == (30.0, f"project file {work / 'chkpt.toml'}")
    assert sorted(w.split(":")[0] for w in loaded.warnings) == ["env CHKPT_INTERVAL", "env CHKPT_KEEP",
                                                                "env CHKPT_MAX_RUN_SIZE"]


@pytest.mark.parametrize("setting", ["interval = inf", "max_object_size = inf", "interval = 1e10"])
def test_an_infinite_setting_costs_one_warning_and_the_script_runs_as_ever(setting, env, work):
    write(work, "chkpt.toml", setting + "\n")
    write(work, "job.py", SCRIPT)
    result = python(["job.py"], env, work)
    assert (result.returncode, result.stdout) == (0, "ran\n")
    [line] = result.stderr.splitlines()
    assert str(work / "chkpt.toml") in line and repr(setting.split()[0]) in line and "Traceback" not in line
    assert runs(env, work)[0]["checkpoints"] == 1  # chkpt stayed on


PYPROJECT_SHAPES = {
    "tool is text": 'tool = "tool.chkpt"\n',
    "tool is a list": 'tool = ["tool.chkpt"]\n',
    "tool.chkpt is a number": "tool.chkpt = 5\n",
    "tool.chkpt is a list": 'tool.chkpt = ["interval"]\n',
    "tool.chkpt is an array of tables": "[[tool.chkpt]]\ninterval = 5\n",
}


@pytest.mark.parametrize("shape", sorted(PYPROJECT_SHAPES))
def test_a_pyproject_whose_tool_table_has_another_shape_warns_once_and_the_lower_layer_applies(shape, env, work):
    user_config(env, 'interval = "5m"\n')
    write(work, "pyproject.toml", PYPROJECT_SHAPES[shape] + '[project]\nname = "x"\n')
    loaded = config_module.load(str(work), environ={})
    [warning] = loaded.warnings
    assert str(work / "pyproject.toml") in warning and "'tool" in warning and "not a table" in warning
    assert (loaded.interval, loaded.sources["interval"].split()[0]) == (300.0, "user")
    write(work, "job.py", SCRIPT)
    result = python(["job.py"], env, work)
    assert (result.returncode, result.stdout) == (0, "ran\n")
    assert result.stderr == f"chkpt: {warning}\n"


def planted_cache(work, content) -> str:
    """The parsed-config cache of work/chkpt.toml holding `content` (a callable of the right key)."""
    path = str(work / "chkpt.toml")
    info = os.stat(path)
    cache = config_module._parsed_cache_path(path)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    with open(cache, "wb") as handle:
        handle.write(content((info.st_mtime_ns, info.st_size)))
    os.chmod(cache, 0o600)
    return cache


@pytest.mark.parametrize("content", [
    lambda key: marshal.dumps([1, 2, 3]), lambda key: marshal.dumps((key, [1, 2])),
    lambda key: marshal.dumps((key, "interval")), lambda key: marshal.dumps((key, {1: 2})),
    lambda key: marshal.dumps((key, {"interval": 7}, "more")), lambda key: marshal.dumps(list(key)),
    lambda key: b"", lambda key: b"\xff" * 64, lambda key: marshal.dumps((key, {"interval": 7}))[:-3],
    lambda key: b"[\xff\xff\xff\x7f",  # a list of two billion items, then nothing
], ids=["list", "key-and-list", "key-and-text", "int-keys", "three-items", "key-only", "empty", "garbage",
        "cut-short", "huge-length"])
def test_a_damaged_config_cache_is_parsed_again_and_replaced(content, env, work):
    write(work, "chkpt.toml", "interval = 20\nkeep = 4\n")
    cache = planted_cache(work, content)
    loaded = config_module.load(str(work), environ={})
    assert (loaded.interval, loaded.keep, loaded.warnings) == (20.0, 4, [])
    with open(cache, "rb") as handle:
        _, settings = marshal.load(handle)
    assert settings == {"interval": 20, "keep": 4}
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600


# -- a FIFO (or another non-file) where a config file or its cache belongs never hangs a start ---

def fifo_in_place_of(where: str, env, work) -> str:
    if where == "cache":
        write(work, "chkpt.toml", "interval = 20\n")
        path = config_module._parsed_cache_path(str(work / "chkpt.toml"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
    elif where == "user":
        path = user_config(env, "")
        os.unlink(path)
    else:
        path = str(work / where)
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("where", ["chkpt.toml", "pyproject.toml", "user", "cache"])
def test_a_fifo_in_place_of_a_config_file_or_its_cache_is_refused_without_waiting(where, env, work):
    path = fifo_in_place_of(where, env, work)
    write(work, "job.py", SCRIPT)
    result = python(["job.py"], env, work, timeout=60)  # a start waiting on the FIFO would time out
    assert (result.returncode, result.stdout) == (0, "ran\n")
    [line] = result.stderr.splitlines()
    assert line.startswith(f"chkpt: {path}: is not a regular file"), line
    assert runs(env, work)[0]["checkpoints"] == 1
    if where == "cache":  # replaced by a file of its own, and no word about it next time
        assert stat.S_ISREG(os.lstat(path).st_mode)
        assert python(["job.py"], env, work, timeout=60).stderr == ""
    else:
        shown = chkpt(["config"], env, work, timeout=60)
        assert shown.returncode == 0 and "is not a regular file" in shown.stderr
