"""Keeps chkpt's own failures out of the user's program.

Any internal error disables chkpt for the rest of the process with one short stderr
line; the user's output, exit code and tracebacks stay exactly as without chkpt.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

_on_disable: list[Callable[[], None]] = []
disabled = False


def warn(message: str) -> None:
    """Print one chkpt warning line on stderr (never raises)."""
    try:
        sys.stderr.write(f"chkpt: {message}\n")
        sys.stderr.flush()
    except Exception:
        pass


def on_disable(callback: Callable[[], None]) -> None:
    """Register what to undo (monitoring, timers, hooks) when chkpt switches itself off."""
    _on_disable.append(callback)


def fail(exc: BaseException, where: str) -> None:
    """Report an internal error once and switch chkpt off for this process."""
    global disabled
    if disabled:
        return
    disabled = True
    warn(f"internal error during {where} ({type(exc).__name__}: {exc}); "
         "chkpt is off for this run, your script is not affected")
    for callback in reversed(_on_disable):
        try:
            callback()
        except Exception:
            pass
    _on_disable.clear()
