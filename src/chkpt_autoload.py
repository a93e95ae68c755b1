"""The start-up hook site.py runs in every interpreter: the cheap checks, then chkpt itself.

chkpt_autoload.pth (an import line) and, on Python 3.15+, chkpt_autoload.start (a PEP 829
entry point, which makes site.py skip the .pth's import line) both call `start()`. It
imports nothing but this module when CHKPT switches chkpt off or the process runs `-c`,
stdin or the REPL; otherwise chkpt.activation decides the rest.
"""

import os
import sys

OFF_VALUES = ("0", "false", "off", "no")


def disabled_by_env() -> bool:
    """True when CHKPT=0 (or false/off/no): chkpt must not even be imported."""
    return os.environ.get("CHKPT", "").strip().lower() in OFF_VALUES


def never_watched() -> bool:
    """CHKPT=0, `python -c`, stdin and the REPL: nothing of chkpt is imported for them."""
    return disabled_by_env() or (sys.argv or [""])[0] in ("", "-c", "-")


def start() -> None:
    """Start chkpt for this process unless it is never watched."""
    if never_watched():
        return
    from chkpt import activation

    activation.autoload()
