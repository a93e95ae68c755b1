"""Where files are: chkpt's config files and store, and the interpreter's own directories.

The user's config file and the default store live in platformdirs' user dirs. On Linux
the XDG rules are applied directly (as platformdirs does, checked by a test), because every
script start would pay for importing platformdirs; other systems ask platformdirs.
"""

import os
import sys

APP = "chkpt"
CONFIG_CACHE = "parsed-config"  # the folder of parsed config files, in the default store's root


def _xdg(variable: str, fallback: str) -> str:
    value = os.environ.get(variable, "").strip()
    base = value if value else os.path.expanduser(fallback)
    return os.path.join(base, APP)


def user_config_dir() -> str:
    """The directory of the user's config.toml (honours XDG_CONFIG_HOME)."""
    if sys.platform.startswith("linux"):
        return _xdg("XDG_CONFIG_HOME", "~/.config")
    import platformdirs

    return platformdirs.user_config_dir(APP, appauthor=False)


def user_cache_dir() -> str:
    """The default store root (honours XDG_CACHE_HOME)."""
    if sys.platform.startswith("linux"):
        return _xdg("XDG_CACHE_HOME", "~/.cache")
    import platformdirs

    return platformdirs.user_cache_dir(APP, appauthor=False)


REMOTE_SCHEME = "s3://"


def is_remote(store_dir: str) -> bool:
    """Whether a `dir` setting names a bucket (`s3://bucket/prefix`) rather than a directory."""
    return store_dir.startswith(REMOTE_SCHEME)


def remote_home(url: str) -> str:
    """This machine's files for the bucket store `url`: its staging store, read cache and upload
    state. Per host, so that nodes sharing a home directory (NFS) never share them."""
    host = _quote(os.uname().nodename if hasattr(os, "uname") else "") or "host"
    return os.path.join(user_cache_dir() + "-remote", host, _quote(url.rstrip("/")))


def _quote(text: str) -> str:
    """`text` as one file name: what is not a letter, digit or -_.~ as %XX (urllib's quote)."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.~") else
                   "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def user_config_file() -> str:
    return os.path.join(user_config_dir(), "config.toml")


def find_project_file(start_dir: str) -> str | None:
    """The nearest chkpt.toml or pyproject.toml at or above start_dir."""
    current = os.path.abspath(start_dir)
    while True:
        for name in ("chkpt.toml", "pyproject.toml"):
            candidate = os.path.join(current, name)
            if os.path.isfile(candidate):
                return candidate
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def config_files(start_dir: str) -> list[tuple[str, str]]:
    """("user" or "project", path) of each config file that may hold chkpt settings for a
    script in start_dir, lowest layer first. A pyproject.toml counts only when its text
    mentions tool.chkpt (the common pyproject has no chkpt settings and is not parsed)."""
    found = []
    user_file = user_config_file()
    if os.path.isfile(user_file):
        found.append(("user", user_file))
    project = find_project_file(start_dir)
    if project is not None and os.path.basename(project) == "pyproject.toml":
        try:
            with open(project, "rb") as handle:
                if b"tool.chkpt" not in handle.read():
                    project = None
        except OSError:
            project = None
    if project is not None:
        found.append(("project", project))
    return found


def system_dirs() -> list[str]:
    """Directories whose programs belong to the interpreter, not to the user."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    site = sys.modules.get("site")
    if site is not None:
        try:
            dirs.update(site.getsitepackages())
            dirs.add(site.getusersitepackages())
        except Exception:
            pass
    return sorted({os.path.realpath(d) for d in dirs if d})


def matches(path: str, patterns: list[str]) -> bool:
    """Whether the file at `path` matches one of the glob patterns: a pattern with a "/"
    matches its absolute path ("~" expanded), any other its file name."""
    if not patterns:
        return False
    import fnmatch

    real = os.path.realpath(path)
    name = os.path.basename(real)
    for pattern in patterns:
        if "/" in pattern or os.sep in pattern:
            expanded = os.path.expanduser(pattern)
            if fnmatch.fnmatch(real, expanded) or fnmatch.fnmatch(path, expanded):
                return True
        elif fnmatch.fnmatch(name, pattern):
            return True
    return False


def is_inside(path: str, directories: list[str]) -> bool:
    """Whether `path` is one of `directories` or below one (symbolic links resolved)."""
    real = os.path.realpath(path)
    return any(real == d or real.startswith(d.rstrip(os.sep) + os.sep) for d in directories)
