"""Which code is the user's: the script and the user's own modules, not the interpreter's or chkpt's.

With `user_code = "project"` (the default) a file is the user's unless it lives inside the
interpreter's prefix, exec prefix or base prefix (the stdlib, the venv), in a site-packages
or dist-packages directory, or in chkpt itself: so the script, the modules of its project
(`sys.path[0]`'s tree, a package beside it) and editable installs (whose files stay in the
project) are, and numpy or pip are not. With `"script"` only the script is. Then
`user_code_exclude` globs take files out and `user_code_include` globs put files in (exclude
wins); the script itself always counts. Globs follow `paths.matches`.

The answer is cached per file name, and asked by the timer thread when a checkpoint falls
due and by the checkpoint itself, never between checkpoints.
"""

from __future__ import annotations

import os

from chkpt import paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType

_PACKAGE_DIRS = frozenset({"site-packages", "dist-packages"})


class UserCode:
    """Tells the user's frames from the others, for one watched process."""

    def __init__(self, main_globals: dict | None, script: str | None, mode: str,
                 include: list[str], exclude: list[str]) -> None:
        self._main_globals = main_globals
        self._script = os.path.realpath(script) if script else None
        self._mode = mode
        self._include = include
        self._exclude = exclude
        self._not_users = [*paths.system_dirs(), os.path.dirname(os.path.realpath(__file__))]
        self._files: dict[str, bool] = {}

    def close(self) -> None:
        """Let go of the script's namespace (after the final checkpoint)."""
        self._main_globals = None

    def frame(self, frame: FrameType) -> bool:
        """Whether `frame` runs the user's code (the script's namespace always does)."""
        return frame.f_globals is self._main_globals or self.file(frame.f_code.co_filename)

    def file(self, filename: str) -> bool:
        """Whether the code compiled from `filename` is the user's (cached)."""
        known = self._files.get(filename)
        if known is None:
            known = self._files[filename] = self._judge(filename)
        return known

    def _judge(self, filename: str) -> bool:
        if not filename or filename.startswith("<"):  # <frozen …>, <string>, <stdin>
            return False
        real = os.path.realpath(filename)
        if real == self._script:
            return True
        if paths.matches(real, self._exclude):
            return False
        if paths.matches(real, self._include):
            return True
        if self._mode == "script":
            return False
        if _PACKAGE_DIRS.intersection(real.split(os.sep)):
            return False
        return not paths.is_inside(real, self._not_users)

