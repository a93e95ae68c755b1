"""Layered configuration, and where each effective value came from.

Layers, lowest first: built-in defaults; the user's config.toml (platformdirs' user config
dir); the project's overrides (`chkpt.toml`, or `[tool.chkpt]` in `pyproject.toml`, in the
nearest directory at or above the script that has either); `CHKPT_<KEY>` environment
variables; options given to the runner. A bad file or value never stops the script: it
is reported as one warning naming the file and key, and the lower layer's value stays.

This runs at start-up when a config source exists, so TOML is parsed only when a file
actually holds chkpt settings. Its default values of the settings start-up needs come from
defaults.py.
"""

from __future__ import annotations

import os

from chkpt import paths
from chkpt.defaults import DEFAULT_INTERVAL, DEFAULT_MIN_SIZE

TYPE_CHECKING = False  # typing costs milliseconds at start-up; only type checkers import it
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

DEFAULT_MODULES = ["numpy", "pandas", "polars", "pyarrow", "torch", "scipy.sparse", "xarray"]
# Libraries whose objects are what a script shows, not what it computed: figures, widgets, bars.
DEFAULT_SKIP_MODULES = ["matplotlib", "seaborn", "plotly", "bokeh", "altair", "ipywidgets",
                        "IPython", "tqdm"]


class ConfigError(ValueError):
    """A value that cannot be used; the message says what was expected."""


_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SECONDS = {"": 1, "s": 1, "ms": 0.001, "m": 60, "min": 60, "h": 3600, "d": 86400}


def _number_and_unit(text: str) -> tuple[float, str] | None:
    """(64.0, "kib") from "64KiB"; None when the text is not a number with a unit."""
    text = text.strip()
    end = 0
    while end < len(text) and (text[end].isdigit() or text[end] == "."):
        end += 1
    try:
        return float(text[:end]), text[end:].strip().lower()
    except ValueError:
        return None


def parse_size(value: Any) -> int:
    """Bytes from 1048576, "64KiB", "250MB" or "5GiB"."""
    if isinstance(value, bool):
        raise ConfigError('expected a size like 1048576, "64KiB" or "5GiB"')
    if isinstance(value, int | float) and value >= 0:
        return int(value)
    if isinstance(value, str):
        parsed = _number_and_unit(value)
        if parsed is not None and parsed[1] in _UNITS:
            return int(parsed[0] * _UNITS[parsed[1]])
    raise ConfigError(f'expected a size like 1048576, "64KiB" or "5GiB", got {value!r}')


def parse_duration(value: Any) -> float:
    """Seconds from 30, 1.5, "30s", "5m", "2h" or "500ms"."""
    if isinstance(value, bool):
        raise ConfigError('expected a duration like 30, "30s" or "5m"')
    if isinstance(value, int | float) and value >= 0:
        return float(value)
    if isinstance(value, str):
        parsed = _number_and_unit(value)
        if parsed is not None and parsed[1] in _SECONDS:
            return parsed[0] * _SECONDS[parsed[1]]
    raise ConfigError(f'expected a duration like 30, "30s" or "5m", got {value!r}')


def parse_str_list(value: Any) -> list[str]:
    """A list of strings; from the environment, comma-separated."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ConfigError(f"expected a list of strings, got {value!r}")


def parse_path(value: Any) -> str:
    """A directory path; "~" is expanded, "" means the default."""
    if isinstance(value, str):
        return os.path.expanduser(value.strip()) if value.strip() else ""
    raise ConfigError(f"expected a path string, got {value!r}")


def parse_count(value: Any) -> int:
    """A whole number ≥ 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise ConfigError(f"expected a whole number ≥ 0, got {value!r}")


def parse_bool(value: Any) -> bool:
    """true/false (also yes/no, on/off, 1/0)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ConfigError(f"expected true or false, got {value!r}")


USER_CODE_MODES = ("project", "script")


def parse_user_code(value: Any) -> str:
    """"project" (the script and the user's own modules) or "script" (the script alone)."""
    if isinstance(value, str) and value.strip().lower() in USER_CODE_MODES:
        return value.strip().lower()
    raise ConfigError(f'expected "project" or "script", got {value!r}')


class Setting:
    """One config key: its default (as a user would write it), parser and meaning."""

    __slots__ = ("default", "doc", "key", "parse")

    def __init__(self, key: str, default: Any, parse: Callable[[Any], Any], doc: str) -> None:
        self.key = key
        self.default = default
        self.parse = parse
        self.doc = doc


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in [
        Setting("interval", f"{DEFAULT_INTERVAL:g}s", parse_duration,
                "how often a periodic checkpoint may be taken while the script runs"),
        Setting("min_size", f"{DEFAULT_MIN_SIZE // 1024}KiB", parse_size,
                "smaller values are not saved by periodic/exit checkpoints (crash keeps them)"),
        Setting("max_object_size", "2GiB", parse_size,
                "larger values are skipped, and listed as skipped"),
        Setting("max_checkpoint_size", "4GiB", parse_size,
                "new data one checkpoint may write; the largest values are dropped first"),
        Setting("max_run_size", "20GiB", parse_size,
                "data one run may write in all; later checkpoints are skipped past it"),
        Setting("max_store_size", "20GiB", parse_size,
                "the store's cap; least recently used runs are evicted past it"),
        Setting("memory_budget", "64MiB", parse_size,
                "memory a checkpoint may hold beyond the program's own (copies of changed chunks, "
                "to compress and write in the background); past it, data is written during the pause"),
        Setting("reuse_memory", "512MiB", parse_size,
                "memory for pickles kept from one checkpoint to the next, so that unchanged object "
                "columns and record lists are not pickled again; past it they are"),
        Setting("keep", 10, parse_count,
                "checkpoints kept per run (the first, the exit/crash one and the latest stay)"),
        Setting("dir", "", parse_path,
                "store root, or s3://bucket/prefix for a shared store; empty means ~/.cache/chkpt"),
        Setting("cache_size", "10GiB", parse_size,
                "cap of the local read cache of an s3:// store (least recently used data goes first)"),
        Setting("upload_wait", "60s", parse_duration,
                "how long a run's end waits for its upload to an s3:// store (then it goes on in the background)"),
        Setting("modules", DEFAULT_MODULES, parse_str_list,
                "module prefixes whose objects are salient data"),
        Setting("skip_modules", DEFAULT_SKIP_MODULES, parse_str_list,
                "module prefixes whose objects are never saved (figures, widgets, progress bars)"),
        Setting("include", [], parse_str_list,
                "script globs to trace even inside the interpreter's prefix (pip, pytest…)"),
        Setting("exclude", [], parse_str_list,
                "script globs never to trace (notebook paths too)"),
        Setting("notebooks", True, parse_bool,
                "whether Jupyter/IPython kernels of the environment are checkpointed after their cells"),
        Setting("user_code", "project", parse_user_code,
                'whose frames are checkpointed: "project" (the script and your own modules) or "script"'),
        Setting("user_code_include", [], parse_str_list,
                "file globs whose code counts as yours even in site-packages"),
        Setting("user_code_exclude", [], parse_str_list,
                "file globs whose code never counts as yours (the script always does)"),
        Setting("include_names", [], parse_str_list,
                "variable-name globs always saved, whatever their type (within max sizes)"),
        Setting("exclude_names", [], parse_str_list,
                "variable-name globs never saved"),
    ]
}


class Config:
    """Effective settings (attributes named as the keys) and the layer each came from."""

    interval: float
    min_size: int
    max_object_size: int
    max_checkpoint_size: int
    max_run_size: int
    max_store_size: int
    memory_budget: int
    reuse_memory: int
    keep: int
    dir: str
    cache_size: int
    upload_wait: float
    modules: list[str]
    skip_modules: list[str]
    include: list[str]
    exclude: list[str]
    notebooks: bool
    user_code: str
    user_code_include: list[str]
    user_code_exclude: list[str]
    include_names: list[str]
    exclude_names: list[str]

    def __init__(self) -> None:
        self.sources: dict[str, str] = {}
        self.warnings: list[str] = []
        for setting in SETTINGS.values():
            setattr(self, setting.key, setting.parse(setting.default))
            self.sources[setting.key] = "default"

    def apply(self, values: Mapping[str, Any], source: str, origin: str | None = None) -> None:
        """Lay `values` over the current ones; bad keys/values become warnings."""
        where = origin or source
        for key, raw in values.items():
            setting = SETTINGS.get(key)
            if setting is None:
                self.warnings.append(f"{where}: unknown key {key!r} (ignored){_did_you_mean(key)}")
                continue
            try:
                setattr(self, key, setting.parse(raw))
            except ConfigError as exc:
                self.warnings.append(f"{where}: key {key!r}: {exc} (kept {self.sources[key]} value)")
                continue
            self.sources[key] = source

    @property
    def store_dir(self) -> str:
        """The local store root checkpoints are written to (a bucket's staging store for s3://)."""
        if self.remote:
            return os.path.join(paths.remote_home(self.dir), "staging")
        return self.dir or paths.user_cache_dir()

    @property
    def remote(self) -> str | None:
        """The `s3://bucket/prefix` URL of a shared store, None for a local one."""
        return self.dir.rstrip("/") if paths.is_remote(self.dir) else None

    def as_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in SETTINGS}


def _did_you_mean(key: str) -> str:
    from chkpt.fmt import closest_matches

    close = closest_matches(key, SETTINGS)
    return f"; did you mean {close[0]!r}?" if close else ""


def _read_toml(path: str) -> dict[str, Any] | str:
    """The parsed file, or an error sentence."""
    import tomllib

    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        return f"not valid TOML ({exc}); the file is ignored"
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte {exc.start}); the file is ignored"
    except OSError as exc:
        return f"cannot be read ({exc.strerror}); the file is ignored"


def _parsed_cache_path(path: str) -> str:
    return os.path.join(paths.user_cache_dir(), "parsed-config", path.replace(os.sep, "%") + ".marshal")


def _read_settings(path: str, table: str | None) -> dict[str, Any] | str:
    """The chkpt settings of a TOML file (a whole file, or its [tool.chkpt] table).

    Importing tomllib costs milliseconds at every script start, so the settings are cached
    (marshal, keyed by the file's mtime and size) in the user cache dir and parsed again
    only when the file changes.
    """
    import marshal

    try:
        info = os.stat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror}); the file is ignored"
    key = (info.st_mtime_ns, info.st_size)
    cache = _parsed_cache_path(path)
    try:
        with open(cache, "rb") as handle:
            cached_key, settings = marshal.load(handle)
        if tuple(cached_key) == key:
            return settings
    except (OSError, ValueError, EOFError, TypeError):
        pass
    data = _read_toml(path)
    if isinstance(data, str):
        return data
    settings = data.get("tool", {}).get("chkpt") if table else data
    if settings is None:
        settings = {}
    elif not isinstance(settings, dict):
        return "[tool.chkpt] must be a table (ignored)"
    try:
        os.makedirs(os.path.dirname(cache), mode=0o700, exist_ok=True)
        tmp = f"{cache}.{os.getpid()}"
        with open(tmp, "wb") as handle:
            marshal.dump((key, settings), handle)
        os.replace(tmp, cache)
    except (OSError, ValueError):
        pass  # a read-only or odd cache dir only costs the parse next time
    return settings


def _layer_file(config: Config, path: str, source: str) -> None:
    table = "tool.chkpt" if os.path.basename(path) == "pyproject.toml" else None
    settings = _read_settings(path, table)
    if isinstance(settings, str):
        config.warnings.append(f"{path}: {settings}")
        return
    config.apply(settings, source, origin=path)


def load(
    start_dir: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """The effective config for a script in `start_dir` (cwd when None)."""
    config = Config()
    for layer, path in paths.config_files(start_dir or os.getcwd()):
        _layer_file(config, path, f"{layer} file {path}")
    env = os.environ if environ is None else environ
    for key in SETTINGS:
        variable = f"CHKPT_{key.upper()}"
        if variable in env:
            config.apply({key: env[variable]}, f"env {variable}")
    if overrides:
        config.apply(overrides, "command line")
    return config


def report(config: Config) -> Config:
    """Print each problem found in the config sources (one `chkpt:` line each); returns it."""
    from chkpt import guard

    for warning in config.warnings:
        guard.warn(warning)
    return config
