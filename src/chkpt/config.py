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


class OutOfRange(ConfigError):
    """A number that is well formed but too large (or infinite, or not a number) to be meant."""


MAX_SIZE = 2**63 - 1  # 8 EiB: what a file offset can be
# 100 years: longer is no interval anyone means, and waits must stay under threading.TIMEOUT_MAX
MAX_DURATION = 100 * 365 * 86400.0
MAX_COUNT = 1_000_000


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


def _shown(value: Any) -> str:
    """A value for a one-line message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _amount(value: Any, units: dict[str, float], maximum: float, noun: str, limit: str, examples: str) -> float:
    """A number of `units` from a number or a string like "64KiB", checked to lie in 0…maximum
    (NaN, infinities, negatives and 1e400 fail); ConfigError says what was expected."""
    number = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        parsed = _number_and_unit(value)
        if parsed is not None and parsed[1] in units:
            number = parsed[0] * units[parsed[1]]
    if number is None:
        raise ConfigError(f"expected {noun} like {examples}, got {_shown(value)}")
    if not 0 <= number <= maximum:
        raise OutOfRange(f"expected {noun} from 0 to {limit}, got {_shown(value)}")
    return number


def parse_size(value: Any) -> int:
    """Bytes from 1048576, "64KiB", "250MB" or "5GiB" (at most 8 EiB)."""
    return int(_amount(value, _UNITS, MAX_SIZE, "a size", "8 EiB", '1048576, "64KiB" or "5GiB"'))


def parse_duration(value: Any) -> float:
    """Seconds from 30, 1.5, "30s", "5m", "2h" or "500ms" (at most 100 years)."""
    return float(_amount(value, _SECONDS, MAX_DURATION, "a duration", "100 years", '30, "30s" or "5m"'))


def parse_str_list(value: Any) -> list[str]:
    """A list of strings; from the environment, comma-separated."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ConfigError(f"expected a list of strings, got {_shown(value)}")


def parse_path(value: Any) -> str:
    """A directory path; "~" is expanded, "" means the default."""
    if isinstance(value, str) and "\0" not in value:
        return os.path.expanduser(value.strip()) if value.strip() else ""
    raise ConfigError(f"expected a path string, got {_shown(value)}")


def parse_count(value: Any) -> int:
    """A whole number from 0 to a million."""
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal():
        digits = value.strip().lstrip("0") or "0"
        number = int(digits) if len(digits) <= 18 else MAX_COUNT + 1
    if number is None:
        raise ConfigError(f"expected a whole number, got {_shown(value)}")
    if not 0 <= number <= MAX_COUNT:
        raise OutOfRange(f"expected a whole number from 0 to {MAX_COUNT:,}, got {_shown(value)}")
    return number


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
    raise ConfigError(f'expected "project" or "script", got {_shown(value)}')


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
                "to compress and write in the background); past it, data is written during the pause, "
                "then compressed in the background"),
        Setting("reuse_memory", "512MiB", parse_size,
                "memory for pickles kept from one checkpoint to the next, so that unchanged object "
                "columns and record lists are not pickled again; past it they are"),
        Setting("keep", 10, parse_count,
                "checkpoints kept per run (the first, the exit/crash one and the latest stay)"),
        Setting("dir", "", parse_path,
                "store root, or s3://, gs:// or az://bucket/prefix for a shared store; empty means ~/.cache/chkpt"),
        Setting("cache_size", "10GiB", parse_size,
                "cap of the local read cache of a bucket store (least recently used data goes first)"),
        Setting("upload_wait", "60s", parse_duration,
                "how long a run's end waits for its upload to a bucket store (then it goes on in the background)"),
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


_parsed_defaults: dict[str, Any] = {}  # every setting's default, parsed once (by the first Config)


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
        self.sources: dict[str, str] = dict.fromkeys(SETTINGS, "default")
        self.warnings: list[str] = []
        if not _parsed_defaults:
            _parsed_defaults.update((s.key, s.parse(s.default)) for s in SETTINGS.values())
        for key, value in _parsed_defaults.items():  # a list of its own for each config
            setattr(self, key, list(value) if type(value) is list else value)

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
        """The local store root checkpoints are written to (a bucket's staging store for a bucket)."""
        if self.remote:
            return os.path.join(paths.remote_home(self.remote), "staging")
        return self.dir or paths.user_cache_dir()

    @property
    def remote(self) -> str | None:
        """The `s3://`, `gs://` or `az://bucket/prefix` URL of a shared store, None for a local one."""
        return paths.remote_url(self.dir) if paths.is_remote(self.dir) else None

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
        return tomllib.loads(paths.read_file(path).decode())
    except paths.Refused as exc:
        return f"{exc}; chkpt does not apply it"
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte {exc.start}); the file is ignored"
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError, or an integer of 5,000 digits
        return f"not valid TOML ({exc}); the file is ignored"
    except OSError as exc:
        return f"cannot be read ({exc.strerror}); the file is ignored"


def _chkpt_table(data: dict[str, Any]) -> dict[str, Any] | str:
    """The [tool.chkpt] table of a parsed pyproject.toml ({} when there is none), or an error sentence."""
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        return "key 'tool' is not a table, so it holds no [tool.chkpt] (ignored)"
    settings = tool.get("chkpt", {})
    if not isinstance(settings, dict):
        return "key 'tool.chkpt' is not a table: write it as [tool.chkpt] (ignored)"
    return settings


def _parsed_cache_path(path: str) -> str:
    return os.path.join(paths.user_cache_dir(), paths.CONFIG_CACHE, path.replace(os.sep, "%") + ".marshal")


def _cached_settings(cache: str, key: tuple[int, int], warnings: list[str]) -> dict[str, Any] | None:
    """The settings the cache file holds for a config file whose (mtime, size) is `key`; None
    when it holds none for it: missing, stale, damaged (the config file is parsed again and the
    cache replaced), or not the user's own regular file (said in `warnings`)."""
    import marshal

    try:
        data = paths.read_file(cache)
    except paths.Refused as exc:
        warnings.append(f"{cache}: {exc}; not used (the config file is read instead)")
        return None
    except OSError:
        return None
    try:
        cached = marshal.loads(data)
    except (ValueError, EOFError, TypeError, MemoryError):
        return None
    if type(cached) is not tuple or len(cached) != 2 or type(cached[1]) is not dict or cached[0] != key:
        return None
    settings: dict[str, Any] = cached[1]
    return settings if all(type(name) is str for name in settings) else None


def _cache_settings(cache: str, key: tuple[int, int], settings: dict[str, Any]) -> None:
    """Keep `settings` in the cache file: a new file of the user's only (never written through a
    link someone planted), renamed into place."""
    import marshal

    tmp = f"{cache}.{os.urandom(6).hex()}.tmp"
    try:
        data = marshal.dumps((key, settings))
        os.makedirs(os.path.dirname(cache), mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, cache)
    except (OSError, ValueError):  # a read-only or odd cache dir only costs the parse next time
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _read_settings(path: str, table: str | None, warnings: list[str]) -> dict[str, Any] | str:
    """The chkpt settings of a TOML file (a whole file, or its [tool.chkpt] table), or an
    error sentence; the cache's problems go to `warnings`.

    Importing tomllib costs milliseconds at every script start, so the settings are cached
    (marshal, keyed by the file's mtime and size) in the user cache dir and parsed again
    only when the file changes. Either way the file must be the user's (`paths.check_own_file`).
    """
    try:
        info = paths.check_own_file(path)
    except paths.Refused as exc:
        return f"{exc}; chkpt does not apply it"
    except (OSError, ValueError) as exc:
        return f"cannot be read ({getattr(exc, 'strerror', None) or exc}); the file is ignored"
    key = (info.st_mtime_ns, info.st_size)
    cache = _parsed_cache_path(path)
    cached = _cached_settings(cache, key, warnings)
    if cached is not None:
        return cached
    data = _read_toml(path)
    if isinstance(data, str):
        return data
    settings = _chkpt_table(data) if table else data
    if isinstance(settings, str):
        return settings
    _cache_settings(cache, key, settings)
    return settings


def _layer_file(config: Config, path: str, source: str) -> None:
    table = "tool.chkpt" if os.path.basename(path) == "pyproject.toml" else None
    settings = _read_settings(path, table, config.warnings)
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
    # one pass over the names: each look-up in os.environ encodes and decodes
    present = {variable for variable in env if variable.startswith("CHKPT_")}
    for key in SETTINGS:
        variable = f"CHKPT_{key.upper()}"
        if variable in present:
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
