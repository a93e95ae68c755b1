"""Start-up hook run by chkpt_autoload.pth (and chkpt_autoload.start on Python 3.15+).

It runs while site.py processes .pth files, in every interpreter of the environment, so it
must decide in microseconds and without heavy imports whether this process runs a user
script. Only then does it import the session and start watching. At this point sys.argv is
set, __main__ exists but is empty, and sys.path[0] is not yet the script's directory.
"""

from __future__ import annotations

import os
import sys

OFF_VALUES = ("0", "false", "off", "no")
_called = False  # site.py processes a venv's .pth files twice on some Pythons


def disabled_by_env() -> bool:
    """True when CHKPT=0 (or false/off/no): chkpt must not even be imported."""
    return os.environ.get("CHKPT", "").strip().lower() in OFF_VALUES


def module_from_orig_argv(orig_argv: list[str]) -> str | None:
    """The module name of `python [opts] -m NAME …`, read from sys.orig_argv."""
    i = 1
    while i < len(orig_argv):
        arg = orig_argv[i]
        if not arg.startswith("-") or arg == "-" or arg.startswith("--"):
            return None
        if arg in ("-X", "-W"):
            i += 2
            continue
        letters = arg[1:]
        if letters[:1] in ("X", "W"):
            i += 1
            continue
        if "m" in letters:
            rest = letters[letters.index("m") + 1 :]
            if rest:
                return rest
            return orig_argv[i + 1] if i + 1 < len(orig_argv) else None
        i += 1
    return None


def autoload() -> None:
    """Start chkpt for this process if it runs a user script; never raise."""
    global _called
    if _called:
        return
    _called = True
    try:
        if disabled_by_env():
            return
        argv0 = (sys.argv or [""])[0]
        if argv0 in ("", "-c", "-"):
            return
        if argv0 == "-m":
            module = module_from_orig_argv(getattr(sys, "orig_argv", []))
            if module is None or module == "chkpt" or module.startswith("chkpt."):
                return
            from chkpt import session

            session.start_for_module(module)
        else:
            # CPython names the main code os.path.join(cwd, argv0), unnormalised.
            from chkpt import session

            session.start_for_script(os.path.join(os.getcwd(), argv0))
    except Exception as exc:  # chkpt must never break the program it watches
        from chkpt import guard

        guard.fail(exc, "start-up")
