"""Keeps chkpt's own failures out of the user's program.

Any internal error disables chkpt for the rest of the process with one short stderr
line; the user's output, exit code and tracebacks stay exactly as without chkpt.
"""

from __future__ import annotations

import sys

from chkpt.fmt import printable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

_on_disable: list[Callable[[], None]] = []
disabled = False


def warn(message: str) -> None:
    """Print one chkpt warning line on stderr (never raises). Its control characters are shown
    as escapes (`fmt.printable`): a path or text holding a newline or an escape sequence (a
    `CHKPT_DIR`, a file name, a run's exception) can neither split the line nor restyle the
    terminal. Every `chkpt:` line is printed here."""
    try:
        sys.stderr.write(f"chkpt: {printable(message)}\n")
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
