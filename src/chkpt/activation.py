"""Which programs chkpt watches: the user's scripts, never the interpreter's own programs.

The rules of SPEC §3, in order: `-c`, stdin and the REPL are never watched (decided before
this module is even imported, in `_autoload`); a script matching an `exclude` glob is not
watched; one matching an `include` glob is, even inside the interpreter's prefix; any other
script inside sys.prefix, sys.base_prefix, sys.exec_prefix or a site-packages directory
(pip, pytest, console scripts, the stdlib) is not; everything else is.

Glob patterns that contain a "/" match the script's absolute path ("~" expanded); the
others match its file name.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from chkpt.config import Config


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
    """Whether the script at `path` matches one of the glob patterns."""
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
    real = os.path.realpath(path)
    return any(real == d or real.startswith(d.rstrip(os.sep) + os.sep) for d in directories)


def decide(path: str, config: Config) -> str | None:
    """None when the script at `path` is to be watched, else the reason it is not."""
    if matches(path, config.exclude):
        return "matches an exclude pattern"
    if matches(path, config.include):
        return None
    if is_inside(path, system_dirs()):
        return "lives inside the interpreter's prefix or site-packages"
    return None
