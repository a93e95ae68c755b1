"""Where files are: chkpt's config files and store, and the interpreter's own directories;
which of those files chkpt may apply.

The user's config file and the default store live in platformdirs' user dirs. On Linux
the XDG rules are applied directly (as platformdirs does, checked by a test), because every
script start would pay for importing platformdirs; other systems ask platformdirs.

A config file (or chkpt's cache of one) is applied only if it is a regular file of the
user's (or root's) that nobody else can write, not reached through another user's symbolic
link (`check_own_file`, `read_file`); it is opened without blocking, so a FIFO planted in its
place cannot hang a script's start.
"""

import os
import stat
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


# The URL schemes of a bucket store, as users write them → the scheme chkpt names it by
# (fsspec's and object_store's spellings: gcs:// is gs://; abfs[s]://, adl://, azure:// are az://).
REMOTE_SCHEMES = {"s3://": "s3://", "gs://": "gs://", "gcs://": "gs://", "az://": "az://", "azure://": "az://",
                  "abfs://": "az://", "abfss://": "az://", "adl://": "az://"}


def is_remote(store_dir: str) -> bool:
    """Whether a `dir` setting names a bucket (`s3://`, `gs://` or `az://bucket/prefix`) rather
    than a directory."""
    return store_dir.startswith(tuple(REMOTE_SCHEMES))


def remote_url(store_dir: str) -> str:
    """The URL chkpt knows a bucket store by: its scheme's usual spelling, no trailing slash
    (`gcs://b/p/` is `gs://b/p`), so that every spelling of it shares one staging store."""
    scheme = next(s for s in REMOTE_SCHEMES if store_dir.startswith(s))
    return REMOTE_SCHEMES[scheme] + store_dir[len(scheme):].rstrip("/")


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


class Refused(Exception):
    """A file chkpt does not read or apply; the message says why, after the file's path."""


MAX_FILE_SIZE = 1 << 20  # a config file (or its cache) larger than this is no config file

# Checked on every open: O_NONBLOCK makes opening a FIFO return at once instead of waiting for
# a writer (fstat then refuses it); it changes nothing for a regular file.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def trusted_owner(uid: int) -> bool:
    """Whether files of `uid` may be applied: the user's own, and root's (who could change
    anything of the user's anyway)."""
    return not hasattr(os, "getuid") or uid in (os.getuid(), 0)


def _private_group(gid: int) -> bool:
    """Whether `gid` is the user's private group (their primary group, named after them, with
    no other member): with a umask of 002 their own files are group-writable, and that is no
    one else's write."""
    if not hasattr(os, "getgid") or gid != os.getgid():
        return False
    import grp
    import pwd

    try:
        group, user = grp.getgrgid(gid), pwd.getpwuid(os.getuid())
    except KeyError:
        return False
    return group.gr_name == user.pw_name and all(member == user.pw_name for member in group.gr_mem)


def foreign_link(path: str) -> tuple[str, int] | None:
    """The first symbolic link on the way to `path` (an existing component of its absolute
    form) that belongs to another user than the user or root, and its owner; None if none."""
    parts = os.path.abspath(path).split(os.sep)
    for end in range(2, len(parts) + 1):
        component = os.sep.join(parts[:end])
        try:
            info = os.lstat(component)
        except OSError:
            return None
        if stat.S_ISLNK(info.st_mode) and not trusted_owner(info.st_uid):
            return component, info.st_uid
    return None


def _own_file_problem(info: os.stat_result) -> str | None:
    """Why a file with this stat may not be applied; None when it may."""
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if not trusted_owner(info.st_uid):
        return f"belongs to uid {info.st_uid}, not you"
    if info.st_mode & stat.S_IWOTH or (info.st_mode & stat.S_IWGRP and not _private_group(info.st_gid)):
        return "is writable by other users"
    return None


def check_own_file(path: str) -> os.stat_result:
    """The stat of `path` if chkpt may apply it: a regular file of the user's (or root's) that
    nobody else can write, not a symbolic link of another user. Refused says why not;
    OSError when it cannot be looked at."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        if not trusted_owner(info.st_uid):
            raise Refused(f"is a symbolic link of uid {info.st_uid}; chkpt does not follow it")
        info = os.stat(path)
    problem = _own_file_problem(info)
    if problem:
        raise Refused(problem)
    return info


def read_file(path: str, own: bool = True) -> bytes:
    """The bytes of the regular file `path`, checked on the open descriptor (nothing can be
    swapped in after the check). With `own`, only a file `check_own_file` allows. Refused for
    a FIFO, device or directory (never waited on) and for a file over MAX_FILE_SIZE."""
    if own:
        check_own_file(path)
    fd = os.open(path, _READ_FLAGS)
    try:
        info = os.fstat(fd)
        problem = _own_file_problem(info) if own else None if stat.S_ISREG(info.st_mode) else "is not a regular file"
        if problem:
            raise Refused(problem)
        if info.st_size > MAX_FILE_SIZE:
            raise Refused(f"is larger than {MAX_FILE_SIZE >> 20} MiB; no config file is")
        chunks, total = [], 0
        while chunk := os.read(fd, info.st_size + 1):  # all at once; os.read allocates what it is asked
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_FILE_SIZE:  # grown since fstat
                raise Refused(f"is larger than {MAX_FILE_SIZE >> 20} MiB; no config file is")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _present(path: str) -> bool:
    """Whether something other than a directory is at `path` (a FIFO too: reading refuses it,
    saying so, where a silent skip would apply another layer's settings unexplained)."""
    try:
        return not stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def find_project_file(start_dir: str) -> str | None:
    """The nearest chkpt.toml or pyproject.toml at or above start_dir."""
    current = os.path.abspath(start_dir)
    while True:
        for name in ("chkpt.toml", "pyproject.toml"):
            candidate = os.path.join(current, name)
            if _present(candidate):
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
    if _present(user_file):
        found.append(("user", user_file))
    project = find_project_file(start_dir)
    if project is not None and os.path.basename(project) == "pyproject.toml":
        try:
            if b"tool.chkpt" not in read_file(project, own=False):
                project = None
        except Refused:
            pass  # reading it for its settings says why it is not applied
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
