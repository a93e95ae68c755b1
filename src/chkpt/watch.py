"""The watch over one traced process: the hooks it needs from start-up, and its facts.

A Watch holds what must be known from the first instant (the script, its source as it was
when it started, argv, the start time, the status given to sys.exit) and sets the hooks
Python offers a process: atexit (exit and crash), sys.exit, SIGTERM, fork (children never
checkpoint), threading.excepthook (through a one-shot import hook) and the periodic timer.

Every decision is the Session's (session.py), and the Session is only made the first time
a checkpoint may be due: in the timer thread before its first tick (so the main thread
never imports in a signal handler, where it may be in the middle of an import), at exit,
on SIGTERM, when a thread crashes, or when the script calls chkpt's API. A script that ends
before the first tick with nothing but code and small values in its globals never loads
the session, the config or the checkpoint machinery: every traced script pays for this
module at start-up, so it only imports what Python has already loaded.
"""

import _signal
import _thread
import atexit
import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any

    from chkpt.config import Config
    from chkpt.session import Session

# The defaults start-up needs before any config is loaded; config.SETTINGS refers to them.
DEFAULT_INTERVAL = 60.0
DEFAULT_MIN_SIZE = 1024
# Delivered only through interrupt_main, never by the OS; a signal no program uses.
SIGNUM = getattr(_signal, "SIGRTMAX", getattr(_signal, "SIGVTALRM", 26))

_current: "Watch | None" = None
_CONTAINERS = (list, tuple, dict, set, frozenset)
_CODE_TYPE_NAMES = frozenset({"module", "function", "builtin_function_or_method", "type", "method"})


def current() -> "Watch | None":
    """The watch over this process, if chkpt watches it."""
    return _current


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

    A script that made no data then exits without importing the checkpoint machinery
    (tens of milliseconds); anything else is left to the real capture to judge.
    """
    for name, value in main_globals.items():
        if name.startswith("__") or _plainly_not_data(value, min_size):
            continue
        if isinstance(value, _CONTAINERS) and len(value) <= 100 and sys.getsizeof(value) < min_size:
            items = value.values() if isinstance(value, dict) else value
            if all(_plainly_not_data(item, min_size) for item in items):
                continue
        return False
    return True


def _other_threads() -> int:
    """OS threads besides the calling one, as CPython counts them for its fork warning."""
    try:
        with open("/proc/self/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return int(fields[17]) - 1  # num_threads, field 20 of stat(5)
    except (OSError, IndexError, ValueError):
        return -1


class _ForkWarningFilter:
    """A warnings filter entry that matches only CPython's fork-with-threads warning
    (warnings calls `.match(text)` on a filter's message object, so no regex is needed)."""

    def __init__(self) -> None:
        self.entry = ("ignore", self, DeprecationWarning, None, 0)

    def match(self, text: str) -> bool:
        return text.startswith("This process (pid=") and "is multi-threaded, use of " in text

    def install(self, warnings: "Any") -> None:
        if self.entry not in warnings.filters:
            warnings.filters.insert(0, self.entry)
            warnings._filters_mutated()

    def remove(self, warnings: "Any") -> None:
        if self.entry in warnings.filters:
            warnings.filters.remove(self.entry)
            warnings._filters_mutated()


_FORK_WARNING_FILTER = _ForkWarningFilter()


class Watch:
    """The hooks and facts of one watched process; makes its Session on first need."""

    def __init__(self, main_globals: dict, argv: list[str], *, config: "Config | None" = None,
                 config_dir: str | None = None, run_meta: "dict[str, Any] | None" = None) -> None:
        self.main_globals = main_globals
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
        self._timer_stop: _thread.LockType | None = None

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
        global _current
        _current = self
        atexit.register(self._at_exit)
        os.register_at_fork(after_in_child=self._in_forked_child)
        if _signal.getsignal(_signal.SIGTERM) == _signal.SIG_DFL:
            _signal.signal(_signal.SIGTERM, self._on_sigterm)
        self._wrap_sys_exit()
        self._watch_thread_crashes()
        self._start_timer(self.interval)

    def _wrap_sys_exit(self) -> None:
        """Remember the status given to sys.exit: atexit cannot see it otherwise."""
        original = sys.exit
        watch = self

        def exit(status: object = None) -> None:
            watch.exit_status = status
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
            sys.meta_path.insert(0, _ThreadingImportHook(self))

    def _wrap_threading_excepthook(self, threading: "Any") -> None:
        original = threading.excepthook
        watch = self

        def excepthook(args: "Any") -> None:
            if args.exc_type is not SystemExit and args.exc_value is not None:
                watch.on_thread_crash(args)
            original(args)

        threading.excepthook = excepthook

    def on_thread_crash(self, args: "Any") -> None:
        try:
            session = self.session()
            if session is not None:
                session.take("crash", None, exc=args.exc_value, label=f"thread {getattr(args.thread, 'name', '?')}")
        except Exception as exc:
            self.fail(exc, "the crash checkpoint of a thread")

    def _at_exit(self) -> None:
        if self.closed:
            return
        try:
            exc = getattr(sys, "last_exc", None)
            min_size = self.config.min_size if self.config is not None else DEFAULT_MIN_SIZE
            if exc is None and self._session is None and nothing_to_save(self.main_globals, min_size):
                self.close()
                return
            session = self.session()
            if session is not None:
                session.at_exit(exc)
        except Exception as error:
            self.fail(error, "the exit checkpoint")
        self.close()

    def _on_sigterm(self, signum: int, frame: "FrameType | None") -> None:
        try:
            session = self.session()
            if session is not None:
                session.take("signal", frame, label="SIGTERM", final_status="killed")
        except Exception as exc:
            self.fail(exc, "the SIGTERM checkpoint")
        self.close()
        _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
        os.kill(os.getpid(), _signal.SIGTERM)

    def _in_forked_child(self) -> None:
        if self._session is not None:
            self._session.forget_run()  # the parent's open run must never be written by a child
        self.close()

    # -- the periodic timer -----------------------------------------------------------------------

    def _start_timer(self, interval: float) -> None:
        """Every `interval` seconds, have the Session's `on_tick(frame)` run on the main thread.

        A sleeping bare `_thread` (invisible to `threading`) wakes, makes the Session if
        needed, and calls `_thread.interrupt_main(SIGNUM)`: the handler then runs on the main
        thread at its next bytecode boundary. No OS signal is sent, so no system call of the
        program is interrupted.
        """
        if interval <= 0:
            return
        _signal.signal(SIGNUM, self._on_tick_signal)
        stop = _thread.allocate_lock()
        stop.acquire()
        self._timer_stop = stop

        def sleep_and_interrupt() -> None:
            # Signals sent to the process must reach the main thread: Python's own exit
            # through SIGINT (after an unhandled KeyboardInterrupt) races exit(1) otherwise.
            _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
            while not stop.acquire(timeout=interval):
                if self.closed:
                    return
                try:
                    if self.session() is None:
                        return
                except Exception as exc:
                    self.fail(exc, "the periodic checkpoint")
                    return
                _thread.interrupt_main(SIGNUM)

        _thread.start_new_thread(sleep_and_interrupt, ())
        os.register_at_fork(before=self._before_fork, after_in_parent=self._after_fork_in_parent)

    def _on_tick_signal(self, signum: int, frame: "FrameType | None") -> None:
        session = self._session
        if session is not None and not self.closed:
            session.on_tick(frame)

    def _before_fork(self) -> None:
        """Python 3.12+ warns after fork() when the process has other OS threads, counted
        after the fork (when libraries such as OpenBLAS have stopped theirs): chkpt's timer
        thread must not cause that warning. It is filtered out from here on, and let
        through again after the fork if plain Python would have warned too."""
        if self.closed or _other_threads() < 0:
            return
        import warnings

        _FORK_WARNING_FILTER.install(warnings)

    def _after_fork_in_parent(self) -> None:
        if self.closed or _other_threads() <= 1:  # only the timer: plain Python is silent
            return
        import warnings

        _FORK_WARNING_FILTER.remove(warnings)
        if sys.version_info < (3, 13):  # 3.12 warned before this hook, into the filter
            warnings.warn(f"This process (pid={os.getpid()}) is multi-threaded, use of fork() "
                          "may lead to deadlocks in the child.", DeprecationWarning, stacklevel=2)

    # -- shutting down ----------------------------------------------------------------------------

    def fail(self, exc: BaseException, where: str) -> None:
        """An internal error: report it once and switch chkpt off for this process."""
        from chkpt import guard

        self.close()
        guard.fail(exc, where)

    def close(self) -> None:
        """Stop watching: later triggers do nothing (idempotent, from any thread)."""
        if self.closed:
            return
        self.closed = True
        if self._timer_stop is not None:
            self._timer_stop.release()
        if self._session is not None:
            self._session.close()
        try:  # only the main thread may set signal handlers
            if _signal.getsignal(SIGNUM) == self._on_tick_signal:
                _signal.signal(SIGNUM, _signal.SIG_DFL)
            if _signal.getsignal(_signal.SIGTERM) == self._on_sigterm:
                _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
        except ValueError:
            pass


class _ThreadingImportHook:
    """A meta path finder that only waits for `threading`, wraps its excepthook once it
    has loaded, and removes itself; every other import costs it one method call."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch

    def find_spec(self, name: str, path: "Any" = None, target: "Any" = None) -> "Any":
        if name != "threading":
            return None
        sys.meta_path.remove(self)
        finder = sys.modules["_frozen_importlib_external"].PathFinder
        spec = finder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module
        watch = self.watch

        def exec_then_hook(module: "Any") -> None:
            exec_module(module)
            try:
                watch._wrap_threading_excepthook(module)
            except Exception as exc:
                watch.fail(exc, "watching threads")

        loader.exec_module = exec_then_hook
        return spec

