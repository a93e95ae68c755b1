"""The watch over one traced process: the hooks it sets from start-up, and its facts.

A Watch keeps what must be known from the first instant (the script, its source as it was
when it started, argv, the start time, the status given to sys.exit) and sets the hooks
Python offers a process: atexit (exit and crash), sys.exit, SIGTERM, fork (children never
checkpoint), threading.excepthook (through a one-shot import hook) and the timer thread.

Every decision is the Session's (session.py), made the first time a checkpoint may be due:
in the timer thread before its first tick, at exit, on SIGTERM, when a thread crashes, or
when the script calls chkpt's API. Every traced script pays for this module at start-up,
so it only imports what Python has already loaded.

Once the exit, crash or signal checkpoint is taken, `close()` lets go of everything of the
program's (namespace, session, tracked objects) and undoes the hooks that can be undone,
so that finalization frees the program's objects as it would without chkpt (files are
flushed, `__del__` and `weakref.finalize` run). The registrations that cannot be undone
(atexit, os.register_at_fork) are module-level functions that look up the current watch.
"""

import _signal
import _thread
import atexit
import functools
import os
import sys
import time

from chkpt.defaults import DEFAULT_INTERVAL, DEFAULT_MIN_SIZE, FIRST_CHECKPOINT_AFTER

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any

    from chkpt.config import Config
    from chkpt.session import Session

_current: "Watch | None" = None
_fork_hooks_registered = False
_CONTAINERS = (list, tuple, dict, set, frozenset)
_CODE_TYPE_NAMES = frozenset({"module", "function", "builtin_function_or_method", "type", "method"})


def current() -> "Watch | None":
    """The watch over this process, if chkpt watches it."""
    return _current


def active() -> "Session | None":
    """The session of this process if chkpt watches it (made now if it was not yet)."""
    watch = _current
    if watch is None or watch.closed:
        return None
    return watch.session()


def _plainly_not_data(value: object, min_size: int) -> bool:
    """Code, or a builtin scalar or string smaller than min_size (no import needed to tell)."""
    cls = type(value)
    if cls.__module__ != "builtins" or isinstance(value, _CONTAINERS):
        return False
    if cls.__name__ in _CODE_TYPE_NAMES or isinstance(value, int | float | complex | type(None)):
        return True
    return isinstance(value, str | bytes) and sys.getsizeof(value) < min_size


def nothing_to_save(main_globals: dict, min_size: int) -> bool:
    """Whether every global is plainly not data (code, small builtin values).

    A script that made no data then exits without importing the checkpoint machinery;
    anything else is left to the real capture to judge.
    """
    for name, value in main_globals.items():
        if name.startswith("__") or _plainly_not_data(value, min_size):
            continue
        # exact types only: a subclass's len(), sizeof or values() could be the program's code
        if type(value) in _CONTAINERS and len(value) <= 100 and sys.getsizeof(value) < min_size:
            items = value.values() if type(value) is dict else value
            if all(_plainly_not_data(item, min_size) for item in items):
                continue
        return False
    return True


def keep_dying_of_sigint() -> None:
    """Have CPython end the process by SIGINT after finalizing, as after an unhandled
    KeyboardInterrupt.

    Up to 3.13, any exec of a string (namedtuple and dataclasses do one, so importing the
    checkpoint machinery does) clears CPython's flag for it, and sets it again when the
    executed code raises KeyboardInterrupt. From 3.14 only printing an unhandled
    KeyboardInterrupt sets it (and nothing clears it): the C API's PyRun_SimpleString does
    that print, through a silenced sys.excepthook, and sys.last_* are put back after it.
    """
    if sys.version_info < (3, 14):
        try:
            exec("raise KeyboardInterrupt")
        except KeyboardInterrupt:
            pass
        return
    try:
        import ctypes
    except ImportError:  # a Python built without ctypes: the status stays 1
        return
    names = ("last_exc", "last_type", "last_value", "last_traceback", "excepthook")
    saved = {name: getattr(sys, name) for name in names if hasattr(sys, name)}
    sys.excepthook = lambda *args: None
    try:
        ctypes.pythonapi.PyRun_SimpleString(b"raise KeyboardInterrupt")
    finally:
        for name in names:
            if name in saved:
                setattr(sys, name, saved[name])
            elif hasattr(sys, name):
                delattr(sys, name)


class Watch:
    """The hooks and facts of one watched process; makes its Session on first need."""

    def __init__(self, main_globals: dict, argv: list[str], *, config: "Config | None" = None,
                 config_dir: str | None = None, run_meta: "dict[str, Any] | None" = None) -> None:
        self.main_globals: dict | None = main_globals
        self.main_thread = _thread.get_ident()
        self.argv = list(argv)
        self.config = config  # None until needed when no config source exists (defaults)
        self.config_dir = config_dir or os.getcwd()
        self.run_meta: dict[str, Any] = dict(run_meta or {})  # extra run metadata (resumed_from)
        self.started = time.time()
        self.target_file: str | None = None
        self.source: bytes | None = None  # the script as it was when it started
        self.exit_status: Any = None
        self.closed = False
        self._session: Session | None = None
        self._making = _thread.RLock()
        self._timer: _Timer | None = None
        self._timer_after_fork = False
        self._cancel_restart: Any = None  # the pending one-shot that restarts the timer
        self._undo: list[Any] = []  # what close() undoes

    def set_target(self, path: str) -> None:
        """The file being watched; its source is kept as it is now (it may be edited later)."""
        self.target_file = path
        try:
            with open(path, "rb") as handle:
                self.source = handle.read()
        except OSError:
            self.source = None

    @property
    def interval(self) -> float:
        return self.config.interval if self.config is not None else DEFAULT_INTERVAL

    def nothing_to_save(self) -> bool:
        """Whether the script's globals plainly hold no data (see `nothing_to_save`)."""
        min_size = self.config.min_size if self.config is not None else DEFAULT_MIN_SIZE
        return self.main_globals is None or nothing_to_save(self.main_globals, min_size)

    def session(self) -> "Session | None":
        """The Session, made now if this is its first need (None once the watch closed)."""
        if self._session is None and not self.closed:
            with self._making:
                if self._session is None and not self.closed:
                    from chkpt.session import Session

                    self._session = Session(self)
        return self._session

    # -- the hooks --------------------------------------------------------------------------------

    def begin(self) -> None:
        """Hook the exit paths and start the periodic timer."""
        global _current, _fork_hooks_registered
        _current = self
        atexit.register(_at_exit)
        if not _fork_hooks_registered:  # they can never be unregistered: once per process
            _fork_hooks_registered = True
            os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                                after_in_child=_in_forked_child)
        if _signal.getsignal(_signal.SIGTERM) == _signal.SIG_DFL:
            _signal.signal(_signal.SIGTERM, _on_sigterm)
        self._wrap_sys_exit()
        self._watch_thread_crashes()
        self.start_timer()

    def _wrap_sys_exit(self) -> None:
        """Remember the status given to sys.exit (atexit cannot see it otherwise)."""
        original = sys.exit
        exit = _SysExit(original)
        sys.exit = exit
        self._undo.append(lambda: setattr(sys, "exit", original) if sys.exit is exit else None)

    def _watch_thread_crashes(self) -> None:
        """Checkpoint when a thread dies of an exception, through threading.excepthook.

        `threading` costs milliseconds to import, so when the script has not imported it
        yet, a one-shot import hook wraps the hook the moment the script does.
        """
        threading = sys.modules.get("threading")
        if threading is not None:
            self._wrap_threading_excepthook(threading)
        else:
            hook = ImportHook("threading", _threading_imported)
            sys.meta_path.insert(0, hook)
            self._undo.append(lambda: sys.meta_path.remove(hook) if hook in sys.meta_path else None)

    def _wrap_threading_excepthook(self, threading: "Any") -> None:
        original = threading.excepthook

        def excepthook(args: "Any") -> None:
            watch = _current
            if watch is not None and args.exc_type is not SystemExit and args.exc_value is not None:
                watch.on_thread_crash(args)
            original(args)

        threading.excepthook = excepthook

        def restore() -> None:
            if threading.excepthook is excepthook:
                threading.excepthook = original

        self._undo.append(restore)

    def on_thread_crash(self, args: "Any") -> None:
        try:
            session = self.session()
            if session is not None:
                session.take("crash", None, exc=args.exc_value, label=f"thread {getattr(args.thread, 'name', '?')}")
        except Exception as exc:
            self.fail(exc, "the crash checkpoint of a thread")

    # -- the periodic timer -----------------------------------------------------------------------

    def start_timer(self) -> None:
        """Every `interval` seconds (or as the session's `on_tick` asks), `on_tick` with the main
        thread's stack."""
        if self.interval > 0 and not self.closed and self._timer is None:
            self._timer = _Timer(self.interval)

    def _stop_timer_for_fork(self) -> None:
        """No chkpt thread may exist when CPython counts threads for its fork warning (3.12
        counts before the after-fork hooks, 3.13 after them): the timer ends before fork."""
        timer, self._timer = self._timer, None
        if timer is not None:
            self._timer_after_fork = True
            timer.stop(wait_gone=True)

    def _restart_timer_after_fork(self) -> None:
        """Start the timer again at the next line of the user's code on the main thread (a
        one-shot LINE event), after CPython has counted threads for its fork warning."""
        if not self._timer_after_fork or self.closed or self.main_globals is None:
            return
        self._timer_after_fork = False
        from chkpt import monitor

        main_globals, session = self.main_globals, self._session
        is_user = session.user_code.frame if session is not None else lambda f: f.f_globals is main_globals
        frame = sys._current_frames().get(self.main_thread)
        codes = monitor.user_codes(frame, is_user)
        del frame
        cancel = monitor.call_at_next_line(codes, self.main_thread, self.start_timer) if codes else None
        if cancel is not None:
            self._cancel_restart = cancel  # close() (in a forked child too) frees its tool id
        elif sys.version_info < (3, 13):
            # No script frame on the main thread (its code has not started or has ended), or
            # no free tool id: 3.12 has counted threads already; 3.13 would count the timer.
            self.start_timer()

    # -- shutting down ----------------------------------------------------------------------------

    def fail(self, exc: BaseException, where: str) -> None:
        """An internal error: report it once and switch chkpt off for this process."""
        from chkpt import guard

        self.close()
        guard.fail(exc, where)

    def close(self) -> None:
        """Stop watching, let go of the program's objects and undo the hooks (idempotent;
        signal handlers are only restored from the main thread)."""
        if self.closed:
            return
        self.closed = True
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.stop()
        session, self._session = self._session, None
        if session is not None:
            session.close()
        self.main_globals = None
        if self._cancel_restart is not None:
            self._undo.append(self._cancel_restart)
            self._cancel_restart = None
        for undo in reversed(self._undo):  # each is idempotent
            try:
                undo()
            except Exception:
                pass
        self._undo = []
        try:  # only the main thread may set signal handlers
            if _signal.getsignal(_signal.SIGTERM) is _on_sigterm:
                _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
        except ValueError:
            pass


class _Timer:
    """A bare `_thread` (invisible to `threading`) that ticks after FIRST_CHECKPOINT_AFTER (or
    `interval`, if sooner), then when the session's `on_tick` says (every `interval`)."""

    def __init__(self, interval: float) -> None:
        self._stop = _thread.allocate_lock()
        self._stop.acquire()
        self._ended = _thread.allocate_lock()
        self._ended.acquire()
        self.native_id: int | None = None
        from chkpt import unseen

        unseen.start_thread(functools.partial(_tick, self, interval))

    def stop(self, wait_gone: bool = False) -> None:
        """End the thread; with `wait_gone`, return once its OS thread is gone (Linux shows
        it in /proc until then)."""
        if self._stop.locked():
            self._stop.release()
        if not wait_gone:
            return
        if self._ended.acquire(timeout=1.0):
            self._ended.release()
        deadline = time.monotonic() + 1.0
        while self.native_id is not None and time.monotonic() < deadline:
            if not os.path.exists(f"/proc/self/task/{self.native_id}"):
                return
            time.sleep(0.0005)


def _tick(timer: _Timer, interval: float) -> None:
    try:
        timer.native_id = _thread.get_native_id()
        # Signals sent to the process must reach the main thread: Python's own exit
        # through SIGINT (after an unhandled KeyboardInterrupt) races exit(1) otherwise.
        _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
        wait = min(interval, FIRST_CHECKPOINT_AFTER)
        # a lock's timeout is at most TIMEOUT_MAX (an interval of 1e10 or inf would raise)
        while not timer._stop.acquire(timeout=min(wait, _thread.TIMEOUT_MAX)):
            watch = _current
            if watch is None or watch._timer is not timer:
                return
            try:
                session = watch.session()
                if session is None:
                    return
                wait = session.on_tick(sys._current_frames().get(watch.main_thread))
            except Exception as exc:
                watch.fail(exc, "the periodic checkpoint")
                return
            del watch, session
    finally:
        timer._ended.release()


# -- process hooks: module-level functions that look up the current watch ---------------------


class _SysExit:
    """sys.exit that notes its status for the run record.

    It calls the original with whatever it was given, so errors are Python's; its own
    traceback entry is dropped (a bare re-raise adds none), so tracebacks are Python's too;
    and it shows and pickles as the builtin (a Python function would show as
    `<function exit at 0x…>` wherever Python prints a callable, e.g. for an atexit callback).
    """

    def __init__(self, original: "Any") -> None:
        self._original = original
        self.__name__ = self.__qualname__ = "exit"
        self.__module__ = "sys"
        self.__doc__ = original.__doc__

    def __call__(self, *args: "Any", **kwargs: "Any") -> None:
        watch = _current
        if watch is not None and not kwargs and len(args) <= 1:
            watch.exit_status = args[0] if args else None
        try:
            self._original(*args, **kwargs)
        except BaseException as exc:
            exc.__traceback__ = None
            raise

    def __repr__(self) -> str:
        return repr(self._original)

    def __reduce__(self) -> str:
        return "exit"  # pickles by name, as the builtin does: sys.exit


def _at_exit() -> None:
    """The exit or crash checkpoint; registered before any user code, so it runs last."""
    watch = _current
    if watch is None or watch.closed:
        return
    exc = getattr(sys, "last_exc", None)
    died_of_keyboard_interrupt = False
    try:
        if exc is not None or watch._session is not None or not watch.nothing_to_save():
            session = watch.session()
            if session is not None and session.at_exit(exc):
                died_of_keyboard_interrupt = issubclass(type(exc), KeyboardInterrupt)
    except Exception as error:
        watch.fail(error, "the exit checkpoint")
    watch.close()
    if died_of_keyboard_interrupt:
        keep_dying_of_sigint()


def _on_sigterm(signum: int, frame: "FrameType | None") -> None:
    watch = _current
    if watch is not None and not watch.closed:
        try:
            session = watch.session()
            if session is not None:
                session.take("signal", frame, label="SIGTERM", final_status="killed")
        except Exception as exc:
            watch.fail(exc, "the SIGTERM checkpoint")
        watch.close()
    del frame
    _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
    os.kill(os.getpid(), _signal.SIGTERM)


def _before_fork() -> None:
    watch = _current
    if watch is not None and not watch.closed:
        watch._stop_timer_for_fork()


def _after_fork_in_parent() -> None:
    watch = _current
    if watch is not None:
        try:
            watch._restart_timer_after_fork()
        except Exception as exc:
            watch.fail(exc, "restarting the timer after fork")


def _in_forked_child() -> None:
    watch = _current
    if watch is None:
        return
    if watch._session is not None:
        watch._session.forget_run()  # the parent's open run must never be written by a child
    watch._timer_after_fork = False
    watch.close()


class ImportHook:
    """A meta path finder that waits for the module `name`, calls `after(module)` once that module
    has been executed, and removes itself; every other import costs it one method call."""

    def __init__(self, name: str, after: "Any") -> None:
        self.name = name
        self.after = after

    def find_spec(self, name: str, path: "Any" = None, target: "Any" = None) -> "Any":
        if name != self.name:
            return None
        sys.meta_path.remove(self)
        finder = sys.modules["_frozen_importlib_external"].PathFinder
        spec = finder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module
        after = self.after

        def exec_then_hook(module: "Any") -> None:
            exec_module(module)
            after(module)

        loader.exec_module = exec_then_hook
        return spec


def _threading_imported(module: "Any") -> None:
    """Wrap the excepthook of `threading`, just imported by the script."""
    watch = _current
    if watch is not None and not watch.closed:
        try:
            watch._wrap_threading_excepthook(module)
        except Exception as exc:
            watch.fail(exc, "watching threads")
