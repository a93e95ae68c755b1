"""Explicit mode: `python -m chkpt [options] script.py args…` and `chkpt run …`.

Runs the script or module exactly as `python script.py` / `python -m pkg.mod` would:
`__name__ == "__main__"` in a fresh `__main__` module (so classes defined in the script
pickle), `__file__`, `sys.argv`, `sys.path[0]`, relative imports under -m, the exit code,
and the traceback text, from which chkpt's own frames are removed.
"""

from __future__ import annotations

import os
import sys
import types

from chkpt import activation, watch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec
    from types import CodeType

    from chkpt.config import Config


class UsageError(Exception):
    """The script or module cannot be run (missing, unreadable); the message says why."""


def _fresh_main() -> types.ModuleType:
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = sys.modules["builtins"]
    sys.modules["__main__"] = main
    return main


def _script_code(path: str) -> CodeType:
    filename = os.path.join(os.getcwd(), path)  # as CPython names the main code
    try:
        with open(path, "rb") as handle:
            source = handle.read()
    except OSError as exc:
        raise UsageError(f"can't open file {path!r}: [Errno {exc.errno}] {exc.strerror}") from None
    return compile(source, filename, "exec", dont_inherit=True)


def prepare_script(path: str, args: list[str]) -> dict:
    """A fresh __main__ for the script at `path`, and sys.argv / sys.path[0] as
    `python path args…` sets them; returns the module's globals."""
    import importlib.machinery

    filename = os.path.join(os.getcwd(), path)  # as CPython names the main code
    main = _fresh_main()
    main.__dict__.update(
        __file__=filename,
        __loader__=importlib.machinery.SourceFileLoader("__main__", filename),
        __spec__=None,
        __package__=None,
        __cached__=None,
    )
    sys.argv[:] = [path, *args]
    sys.path[0] = os.path.dirname(filename)
    return main.__dict__


def run_script(path: str, args: list[str], config: Config) -> None:
    """Run the file at `path` as __main__ under a session; returns only via SystemExit."""
    if os.path.isdir(path):
        path = os.path.join(path, "__main__.py")
    code = _script_code(path)
    execute(code, prepare_script(path, args), config)


def run_module(module: str, args: list[str], config: Config) -> None:
    """Run `module` as `python -m module` would."""
    code, main_globals = prepare_module(module, args)
    execute(code, main_globals, config, argv=["-m", module, *args])


def prepare_module(module: str, args: list[str]) -> tuple[CodeType, dict]:
    """The code of `module` and a fresh __main__ for it, with sys.argv / sys.path[0] as
    `python -m module args…` sets them (its parent packages are imported, as Python does)."""
    sys.argv[:] = [module, *args]  # runpy replaces argv[0] with the file name
    spec, code = find_module(module)
    main = _fresh_main()
    sys.argv[0] = spec.origin or module
    main.__dict__.update(
        __file__=spec.origin,
        __loader__=spec.loader,
        __spec__=spec,
        __package__=spec.parent,
        __cached__=spec.cached,
    )
    return code, main.__dict__


def find_module(module: str) -> tuple[ModuleSpec, CodeType]:
    """The spec and code `python -m module` runs, found from the current directory."""
    import runpy

    sys.path[0] = os.getcwd()
    try:
        _, spec, code = runpy._get_module_details(module)  # type: ignore[attr-defined]
    except ImportError as exc:
        raise UsageError(f"{exc}") from None
    return spec, code


def execute(code: CodeType, main_globals: dict, config: Config, run_meta: dict | None = None,
            argv: list[str] | None = None) -> None:
    """Run `code` in `main_globals` under a new session, with Python's exit semantics; the
    run records `argv` (default: sys.argv; `["-m", module, …]` for a module)."""
    activation.start_explicit(config, main_globals, code.co_filename, run_meta, argv)
    try:
        exec(code, main_globals)
    except SystemExit:
        raise
    except BaseException as exc:
        report_unhandled(exc)
        if isinstance(exc, KeyboardInterrupt):
            # Python ends the process by SIGINT once it has finalized (the watch's exit
            # checkpoint sets the flag again if its imports cleared it).
            watch.keep_dying_of_sigint()
        raise SystemExit(1) from None


def report_unhandled(exc: BaseException) -> None:
    """Print the traceback as Python would, without chkpt's own frames at its top."""
    package = os.path.dirname(__file__) + os.sep
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(package):
        tb = tb.tb_next
    exc.__traceback__ = tb
    sys.last_exc = exc
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, tb
    sys.excepthook(type(exc), exc, tb)

