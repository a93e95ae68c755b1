"""The driver of one traced process: decides when checkpoints are taken.

A Session ties the effective config, the monitor (periodic safe points) and the process's
exit paths (atexit for normal exit, sys.exit and unhandled exceptions; SIGTERM; the
explicit API) to the checkpoint writer. Everything here is on the start-up path of every
traced script, so it only imports what Python has already loaded; capture, serialization
and the store are imported at the first checkpoint.

Forked children (multiprocessing's fork, os.fork) never checkpoint: the session switches
itself off in the child, so a child can never write into its parent's run.
"""

from __future__ import annotations

import _signal
import atexit
import os
import sys
import time

from chkpt import activation, guard
from chkpt import config as config_module
from chkpt.monitor import Monitor

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType, FrameType, TracebackType
    from typing import Any

    from chkpt.checkpoint import Writer
    from chkpt.config import Config

_active: Session | None = None
_CONTAINERS = (list, tuple, dict, set, frozenset)
_CODE_TYPE_NAMES = frozenset({"module", "function", "builtin_function_or_method", "type", "method"})


def _plainly_not_data(value: object, min_size: int) -> bool:
    """Code, or a builtin scalar or string smaller than min_size (no import needed to tell)."""
    cls = type(value)
    if cls.__module__ != "builtins" or isinstance(value, _CONTAINERS):
        return False
    if cls.__name__ in _CODE_TYPE_NAMES or isinstance(value, int | float | complex | type(None)):
        return True
    return isinstance(value, str | bytes) and sys.getsizeof(value) < min_size


def active() -> Session | None:
    """The session watching this process, if chkpt is on."""
    if _active is None or guard.disabled or _active.closed:
        return None
    return _active


class Session:
    """Everything chkpt does for one traced process."""

    def __init__(self, config: Config, main_globals: dict, argv: list[str]) -> None:
        self.config = config
        self.main_globals = main_globals
        self.argv = list(argv)
        self.target_file: str | None = None
        self.source: bytes | None = None  # the script as it was when it started
        self.started = time.time()
        self.exit_status: Any = None
        self.closed = False
        self.tracked: dict[str, Any] = {}
        self.run_meta: dict[str, Any] = {}  # extra run metadata (e.g. resumed_from)
        self._pause_depth = 0
        self._busy = False
        self._last_checkpoint = time.monotonic()
        self._writer: Writer | None = None
        self._boundary_lines: dict[int, str] | None = None
        self.monitor = Monitor(main_globals, self._on_safe_point)

    # -- lifetime -----------------------------------------------------------------------------

    def set_target(self, path: str) -> None:
        """The file being watched; its source is kept as it is now (it may be edited later)."""
        self.target_file = path
        try:
            with open(path, "rb") as handle:
                self.source = handle.read()
        except OSError:
            self.source = None

    def begin(self) -> None:
        """Hook the exit paths and start the periodic timer."""
        global _active
        _active = self
        guard.on_disable(self.close)
        atexit.register(self._at_exit)
        os.register_at_fork(after_in_child=self._in_forked_child)
        if _signal.getsignal(_signal.SIGTERM) == _signal.SIG_DFL:
            _signal.signal(_signal.SIGTERM, self._on_sigterm)
        self._wrap_sys_exit()
        self._watch_thread_crashes()
        self.monitor.start_timer(self.config.interval, self._on_tick)

    def _wrap_sys_exit(self) -> None:
        """Remember the status given to sys.exit: atexit cannot see it otherwise."""
        original = sys.exit
        session = self

        def exit(status: object = None) -> None:
            session.exit_status = status
            original(status)

        exit.__doc__ = original.__doc__
        sys.exit = exit

    def _watch_thread_crashes(self) -> None:
        """Checkpoint when a thread dies of an exception, through threading.excepthook.

        `threading` costs milliseconds to import, so when the script has not imported it
        yet, a one-shot import hook wraps the hook the moment the script does.
        """
        threading = sys.modules.get("threading")
        if threading is not None:
            self._wrap_threading_excepthook(threading)
        else:
            sys.meta_path.insert(0, _ThreadingImportHook(self._wrap_threading_excepthook))

    def _wrap_threading_excepthook(self, threading: Any) -> None:
        original = threading.excepthook
        session = self

        def excepthook(args: Any) -> None:
            if args.exc_type is not SystemExit and args.exc_value is not None:
                name = getattr(args.thread, "name", "?")
                session.take("crash", None, exc=args.exc_value, label=f"thread {name}")
            original(args)

        threading.excepthook = excepthook

    def close(self) -> None:
        """Stop watching; later triggers do nothing."""
        if self.closed:
            return
        self.closed = True
        self.monitor.close()
        if _signal.getsignal(_signal.SIGTERM) == self._on_sigterm:
            _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)

    def _in_forked_child(self) -> None:
        self._writer = None  # the parent's open run must never be written by a child
        self.close()

    # -- the user's API -------------------------------------------------------------------------

    def explicit_snapshot(self, label: str) -> None:
        self.take("explicit", sys._getframe(2), label=label)

    def track(self, obj: Any, name: str) -> None:
        self.tracked[name] = obj

    def pause(self) -> None:
        self._pause_depth += 1

    def resume(self) -> None:
        self._pause_depth = max(0, self._pause_depth - 1)

    # -- triggers -------------------------------------------------------------------------------

    def _on_tick(self, frame: FrameType | None) -> None:
        try:
            due = time.monotonic() - self._last_checkpoint >= self.config.interval * 0.5
            if due and not self._busy and not self._pause_depth and not self.closed:
                self.monitor.request_safe_point(frame, self._boundaries)
        except Exception as exc:
            guard.fail(exc, "periodic checkpoint")

    def _boundaries(self) -> dict[int, str]:
        """The script's top-level statement and loop lines (parsed once, at the first need)."""
        if self._boundary_lines is None:
            from chkpt.monitor import top_level_boundaries

            self._boundary_lines = top_level_boundaries(self.source) if self.source else {}
        return self._boundary_lines

    def _on_safe_point(self, frame: FrameType, position: dict[str, Any]) -> None:
        if not self._pause_depth:
            self.take("periodic", frame, position=position)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.take("signal", frame, label="SIGTERM", final_status="killed")
        self.close()
        _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
        os.kill(os.getpid(), _signal.SIGTERM)

    def _at_exit(self) -> None:
        exc = getattr(sys, "last_exc", None)
        if exc is not None and self._died_of(exc):
            self.take("crash", None, exc=exc, final_status="crashed")
            self.close()
            if isinstance(exc, KeyboardInterrupt):
                die_of_sigint()
        else:
            self.take("exit", None, final_status="finished")
            self.close()

    def _died_of(self, exc: BaseException) -> bool:
        """Whether `exc` is the exception the script itself died of (not one shown by a REPL)."""
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_globals is self.main_globals:
                return True
            tb = tb.tb_next
        return False

    # -- taking a checkpoint --------------------------------------------------------------------

    def _nothing_to_save(self) -> bool:
        """Whether every global is plainly not data (code, small builtin values).

        A script that made no data then exits without importing the checkpoint machinery
        (tens of milliseconds); anything else is left to the real capture to judge.
        """
        if self.tracked:
            return False
        limit = self.config.min_size
        for name, value in self.main_globals.items():
            if name.startswith("__") or _plainly_not_data(value, limit):
                continue
            if isinstance(value, _CONTAINERS) and len(value) <= 100 and sys.getsizeof(value) < limit:
                items = value.values() if isinstance(value, dict) else value
                if all(_plainly_not_data(item, limit) for item in items):
                    continue
            return False
        return True

    def target_frames(self, frame: FrameType | None, tb: TracebackType | None) -> list[FrameType]:
        """Frames of the target file, innermost first, from a stack or a traceback."""
        frames: list[FrameType] = []
        if tb is not None:
            while tb is not None:
                frames.append(tb.tb_frame)
                tb = tb.tb_next
            frames.reverse()
        while frame is not None:
            frames.append(frame)
            frame = frame.f_back
        target = self.target_file
        return [f for f in frames if f.f_code.co_filename == target or f.f_globals is self.main_globals]

    def _position(self, trigger: str, frames: list[FrameType],
                  position: dict[str, Any] | None) -> dict[str, Any]:
        """Where the checkpoint stands: module or function frame, resume boundary, and the
        script's frames outermost first (resume finds the running top-level statement there)."""
        if position is None:
            at_top = bool(frames) and frames[0].f_code.co_name == "<module>"
            position = {"frame": "module" if at_top else "function", "boundary": None,
                        # a top-level snapshot() is a resume point (right after it)
                        "resumable": at_top and trigger == "explicit"}
        position["stack"] = [{"function": f.f_code.co_name, "line": f.f_lineno} for f in reversed(frames)]
        return position

    def take(
        self,
        trigger: str,
        frame: FrameType | None,
        *,
        label: str = "",
        exc: BaseException | None = None,
        final_status: str | None = None,
        position: dict[str, Any] | None = None,
    ) -> None:
        """Take one checkpoint now; chkpt's own failure never reaches the user's code."""
        if self.closed or self._busy:
            return
        if trigger == "exit" and self._writer is None and self._nothing_to_save():
            self.close()
            return
        self._busy = True
        try:
            from chkpt.checkpoint import Writer

            if self._writer is None:
                self._writer = Writer(self)
            frames = self.target_frames(frame, exc.__traceback__ if exc is not None else None)
            self._writer.write(trigger, frames, label=label, exc=exc,
                               position=self._position(trigger, frames, position))
            if final_status is not None:
                self._writer.finish(final_status, exc=exc, exit_status=self.exit_status)
        except Exception as error:
            guard.fail(error, f"the {trigger} checkpoint")
        finally:
            self._busy = False
            self._last_checkpoint = time.monotonic()


class _ThreadingImportHook:
    """A meta path finder that only waits for `threading`, calls back once it has loaded,
    and removes itself; every other import costs it one method call."""

    def __init__(self, on_loaded: Any) -> None:
        self.on_loaded = on_loaded

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "threading":
            return None
        sys.meta_path.remove(self)
        finder = sys.modules["_frozen_importlib_external"].PathFinder
        spec = finder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module
        on_loaded = self.on_loaded

        def exec_then_hook(module: Any) -> None:
            exec_module(module)
            try:
                on_loaded(module)
            except Exception as exc:
                guard.fail(exc, "watching threads")

        loader.exec_module = exec_then_hook
        return spec


def die_of_sigint() -> None:
    """End the process as Python does after an unhandled KeyboardInterrupt (killed by SIGINT).

    Python does it after the atexit handlers, but an import inside an atexit handler (as a
    first checkpoint makes) turns its exit status into 1; chkpt's handler runs last, so it
    ends the process itself, the same way.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
    os.kill(os.getpid(), _signal.SIGINT)


def _warn_config(config: Config) -> None:
    for warning in config.warnings:
        guard.warn(warning)


def start_for_script(path: str) -> Session | None:
    """Autoload for `python path.py`: watch it if it is a user script."""
    config = config_module.load(os.path.dirname(path))
    _warn_config(config)
    if activation.decide(path, config) is not None:
        return None
    session = Session(config, sys.modules["__main__"].__dict__, sys.argv)
    session.set_target(path)
    session.begin()
    return session


def start_for_module(module: str) -> Session | None:
    """Autoload for `python -m module`: the file is known when runpy starts it."""
    config = config_module.load(os.getcwd())
    _warn_config(config)
    session = Session(config, sys.modules["__main__"].__dict__, ["-m", module, *sys.argv[1:]])

    def on_main_start(code: CodeType) -> bool:
        if activation.decide(code.co_filename, config) is not None:
            session.close()
            return False
        session.set_target(code.co_filename)
        session.argv = list(sys.argv)
        return True

    session.monitor.watch_for_main_start(on_main_start)
    session.begin()
    return session


def start_explicit(config: Config, main_globals: dict, target_file: str,
                   run_meta: dict | None = None) -> Session:
    """For the runner (`python -m chkpt script.py`): watch whatever it is given.

    `run_meta` adds fields to the run's metadata (resume records `resumed_from`).
    """
    _warn_config(config)
    session = Session(config, main_globals, sys.argv)
    session.run_meta = dict(run_meta or {})
    session.set_target(target_file)
    session.begin()
    return session
