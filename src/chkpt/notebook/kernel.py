"""The driver of one IPython kernel (or shell): checkpoints its user namespace between cells.

Loaded as an IPython extension (by the autoload once the kernel's shell exists, or by
`%load_ext chkpt`), it hooks IPython's `pre_run_cell` and `post_run_cell` events, so chkpt runs
only between cells, never while one executes:

- after a cell, when pauses so far leave room (the scripts' rule: at most MAX_PAUSE_SHARE of
  the time), the namespace is captured and hashed; a checkpoint is written only if something
  differs from the last one (data, what was skipped, the names bound to modules, functions and
  classes). When there is no room, the capture waits for the kernel's event loop to be idle
  long enough (cancelled when the next cell starts, which takes it after itself instead);
- before a cell, the background part of the last checkpoint (compressing and committing) is
  waited for, so no thread of chkpt exists while a cell runs;
- each checkpoint records the cells since the one before (source and execution count) and
  the state of each; at the kernel's exit a last checkpoint is taken if the state changed.

The run is named after the notebook when the frontend tells its path (`__vsc_ipynb_file__`,
`__session__`, `JPY_SESSION_NAME`), else `<kernel>` in the kernel's folder.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
import time

from chkpt import guard
from chkpt.session import MAX_PAUSE_SHARE, within_pause_share

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from chkpt.config import Config
    from chkpt.writer import Writer

UNNAMED = "<kernel>"  # the run's name when the frontend does not tell the notebook's path
# IPython's output caching names: _, _i, _ii, _iii, _N, _iN, _dh, _ih, _oh (__ and ___ are dunders)
_IPYTHON_NAME = re.compile(r"_(?:i{0,3}|i?\d+|[dio]h)\Z")
_current: KernelSession | None = None
_exit_hooked = False


def current() -> KernelSession | None:
    """The session of this process's shell, if chkpt watches one."""
    return _current


def notebook_path(user_ns: dict[str, Any], environ: dict[str, str] | os._Environ[str], cwd: str) -> str | None:
    """The notebook's path, as the frontend tells it: VS Code sets `__vsc_ipynb_file__`, Jupyter
    Server `JPY_SESSION_NAME` (which ipykernel copies to `__session__`)."""
    for value in (user_ns.get("__vsc_ipynb_file__"), user_ns.get("__session__"), environ.get("JPY_SESSION_NAME")):
        if isinstance(value, str) and value.strip() and "\0" not in value:
            path = value.strip()
            return path if os.path.isabs(path) else os.path.join(cwd, path)
    return None


def run_name(user_ns: dict[str, Any], cwd: str) -> str:
    """What the run of a kernel in `cwd` is named: its notebook's path, or `<kernel>` in `cwd`."""
    return notebook_path(user_ns, os.environ, cwd) or os.path.join(cwd, UNNAMED)


def user_namespace(user_ns: dict[str, Any], hidden: dict[str, Any]) -> dict[str, Any]:
    """The user's own names: IPython's (In, Out, get_ipython, exit, the output caching `_N`,
    `_iN`) left out, unless the user bound one of them to something else."""
    missing = object()
    return {name: value for name, value in list(user_ns.items())
            if hidden.get(name, missing) is not value and not _IPYTHON_NAME.match(name)}


def load(shell: Any) -> KernelSession | None:
    """Start checkpointing `shell`'s cells, unless CHKPT=0, `notebooks = false` or `exclude`
    says not to."""
    global _current
    if _current is not None and not _current.closed:
        return _current
    from chkpt import config as config_module
    from chkpt import paths
    from chkpt_autoload import disabled_by_env

    if disabled_by_env():
        guard.warn("checkpoints are off in this kernel (CHKPT=0); %chkpt restore and checkout work")
        return None
    cwd = os.getcwd()
    config = config_module.report(config_module.load(cwd))
    name = notebook_path(shell.user_ns, os.environ, cwd)
    if not config.notebooks or (name is not None and paths.matches(name, config.exclude)):
        return None
    _current = KernelSession(shell, config)
    return _current


def unload(shell: Any) -> None:
    """Stop checkpointing (`%unload_ext chkpt`); the last changes are saved first."""
    session = _current
    if session is not None and session.shell is shell:
        session.finish()


class KernelSession:
    """Everything chkpt does for one shell: checkpoints between cells, the run it writes."""

    def __init__(self, shell: Any, config: Config) -> None:
        from chkpt import salience
        from chkpt.usercode import UserCode

        self.shell = shell
        self.config = config
        self.closed = False
        self.started = time.time()
        self.tracked: dict[str, Any] = {}
        self.user_code = UserCode(None, None, config.user_code, config.user_code_include, config.user_code_exclude)
        self.rules = salience.Rules(config, is_user_file=self.user_code.file)
        self.restored_from: str | None = None  # the checkpoint this kernel restored, for its run record
        self._writer: Writer | None = None
        self._cells: list[dict[str, Any]] = []  # run since the last checkpoint, with their state
        self._saved_any = False
        self.captured: int | None = None  # the cell after which the namespace was last captured
        self.captured_idle = False  # whether that capture waited for the kernel to be idle
        self._running = 0  # cells executing (ipykernel's subshells may overlap them)
        self._busy = False
        self._last_end = float("-inf")
        self._last_pause = 0.0
        self._waiting: Any = None  # the event loop's handle of a capture put off until the kernel is idle
        self._main_thread = threading.main_thread().ident
        shell.events.register("pre_run_cell", self.before_cell)
        shell.events.register("post_run_cell", self.after_cell)
        global _exit_hooked
        if not _exit_hooked:  # never unregistered: it looks the session up
            _exit_hooked = True
            atexit.register(_at_exit)
        guard.on_disable(self.close)

    # -- IPython's events -----------------------------------------------------------------------

    def before_cell(self, info: Any = None) -> None:
        """A cell is about to run: no capture may wait for idle time, no thread of chkpt may be left."""
        if self.closed:
            return
        self._running += 1
        self._cancel_waiting()
        writer = self._writer
        if writer is not None:
            started = time.monotonic()
            try:
                writer.wait_idle()
            except Exception as exc:
                self.fail(exc, "the background part of a checkpoint")
                return
            self._last_pause += time.monotonic() - started  # what the program felt

    def after_cell(self, result: Any = None) -> None:
        """A cell has run: record it, then capture now or when the pause rule allows."""
        if self.closed:
            return
        self._running = max(0, self._running - 1)
        info = getattr(result, "info", None)
        source = getattr(info, "raw_cell", None)
        count = getattr(result, "execution_count", None)
        self._cells.append({"count": count if isinstance(count, int) else None,
                            "source": source if isinstance(source, str) else "", "state": None})
        if self._running or threading.get_ident() != self._main_thread:
            return  # another cell runs meanwhile: the capture waits for it to end
        wait = self._wait_before_capture()
        if wait <= 0:
            self.captured_idle = False
            self.checkpoint()
        else:
            self._capture_when_idle(wait)

    # -- when -----------------------------------------------------------------------------------

    def _wait_before_capture(self) -> float:
        """Seconds until a capture keeps pauses within MAX_PAUSE_SHARE of the time (0: now)."""
        since = time.monotonic() - self._last_end
        if within_pause_share(since, self._last_pause):
            return 0.0
        return self._last_pause / MAX_PAUSE_SHARE - since

    def _capture_when_idle(self, wait: float) -> None:
        """Capture after `wait` seconds if no cell has started by then: a callback of the kernel's
        event loop (none in a terminal shell: the next cell's end captures instead)."""
        asyncio = sys.modules.get("asyncio")
        loop = asyncio._get_running_loop() if asyncio is not None else None
        if loop is not None:
            self._waiting = loop.call_later(wait, self._idle_capture)

    def _idle_capture(self) -> None:
        self._waiting = None
        if not self._running and not self.closed:
            self.captured_idle = True
            self.checkpoint()

    def _cancel_waiting(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()

    # -- taking a checkpoint ----------------------------------------------------------------------

    def namespace(self) -> dict[str, Any]:
        return user_namespace(self.shell.user_ns, self.shell.user_ns_hidden)

    def definitions(self, namespace: dict[str, Any]) -> dict[str, dict[str, str | None]]:
        """The names bound to modules, functions and classes, with where each comes from, so that
        a restore can make them again (import them, or run their `def` again)."""
        from chkpt.salience import DEFINITION

        found: dict[str, dict[str, str | None]] = {}
        module_type = type(sys)
        for name, value in namespace.items():
            if name[:2] == "__" or self.rules.kind(value)[0] is not DEFINITION:
                continue
            if isinstance(value, module_type):
                found[name] = {"module": _text(getattr(value, "__name__", None)), "qualname": None}
            else:
                found[name] = {"module": _text(getattr(value, "__module__", None)),
                               "qualname": _text(getattr(value, "__qualname__", None))}
        return found

    def writer(self) -> Writer:
        """The run's writer, made at the first checkpoint (the notebook's path is known by then)."""
        if self._writer is None:
            from chkpt.writer import RunFacts, Writer

            facts = RunFacts(script=run_name(self.shell.user_ns, os.getcwd()), argv=list(sys.orig_argv[1:]),
                             started=self.started, main_thread=self._main_thread or 0, kind="notebook",
                             keep_all=True,
                             extra={"restored_from": self.restored_from} if self.restored_from else None)
            self._writer = Writer(self.config, facts, self.user_code.file)
        return self._writer

    @property
    def committed(self) -> bool:
        """Whether the last checkpoint is committed (its background part written)."""
        return self._writer is None or not self._writer.writing()

    @property
    def last_pause(self) -> float:
        """Seconds the last capture paused the kernel (waits for its background part included)."""
        return self._last_pause

    @property
    def run_id(self) -> str | None:
        """The id of this kernel's run, once it has one."""
        writer = self._writer
        return writer.run.run_id if writer is not None and writer.run is not None else None

    def note_restored(self, ref: str) -> None:
        """Record in the run that this kernel restored checkpoint `ref` (checkout follows it back)."""
        self.restored_from = ref
        writer = self._writer
        if writer is not None and writer.run is not None:
            writer.run.meta["restored_from"] = ref
            writer.run.save_meta()
        elif writer is not None:
            writer.facts.extra["restored_from"] = ref

    def checkpoint(self, trigger: str = "cell", final_status: str | None = None) -> int | None:
        """Capture the namespace; write a checkpoint if it differs from the last one. Returns its
        index (None when nothing changed or nothing could be written)."""
        if self.closed or self._busy:
            return None
        self._busy = True
        self._cancel_waiting()
        started = time.monotonic()
        index = None
        try:
            writer = self.writer()
            started = time.monotonic()  # the pause that spaces captures out, imports aside
            namespace = self.namespace()
            cells = [dict(cell) for cell in self._cells]
            if cells:
                cells[-1]["state"] = "this"
            index = writer.write(trigger, [], namespace, self.tracked, only_if_changed=True,
                                 position={"cells": cells, "definitions": self.definitions(namespace)})
            del namespace
            self.captured = self._cells[-1]["count"] if self._cells else self.captured
            if index is not None:
                self._cells = []
                self._saved_any = True
            elif self._saved_any and self._cells:
                self._cells[-1]["state"] = "previous"  # it changed nothing: the last checkpoint's state
            if final_status is not None:
                writer.finish(final_status, exc=None, exit_status=0)
            if writer.problem is not None:
                self.close()  # the writer said why, once
        except Exception as exc:
            self.fail(exc, f"the {trigger} checkpoint")
        finally:
            self._busy = False
            self._last_end = time.monotonic()
            self._last_pause = self._last_end - started
        return index

    def save_now(self) -> None:
        """Checkpoint the state now if it changed since the last one (before a checkout replaces it)."""
        if not self.closed and (self._writer is not None or self._cells):
            self.checkpoint()

    # -- the end ----------------------------------------------------------------------------------

    def finish(self) -> None:
        """At the kernel's exit (or `%unload_ext chkpt`): the last changes, and how the run ended."""
        if self.closed:
            return
        if self._writer is not None or self._cells:
            self.checkpoint("exit", final_status="finished")
        self.close()

    def fail(self, exc: BaseException, where: str) -> None:
        self.close()
        guard.fail(exc, where)

    def close(self) -> None:
        """Stop: unhook IPython's events and let go of everything of the program's."""
        global _current
        if self.closed:
            return
        self.closed = True
        self._cancel_waiting()
        for event, callback in (("pre_run_cell", self.before_cell), ("post_run_cell", self.after_cell)):
            try:
                self.shell.events.unregister(event, callback)
            except ValueError:
                pass
        self._writer = None
        self.tracked = {}
        if _current is self:
            _current = None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _at_exit() -> None:
    session = _current
    if session is not None:
        session.finish()
