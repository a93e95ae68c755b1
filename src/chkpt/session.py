"""The driver of one traced process: decides when checkpoints are taken, and takes them.

A Session ties the effective config and the monitor (periodic safe points) to the
checkpoint writer, for the triggers its Watch (watch.py) reports: the timer's tick, exit,
an unhandled exception, SIGTERM, a thread's crash, and the explicit API. The watch makes it
at the first of those, so a script that never needs one never imports this module; capture,
serialization and the store are imported at the first checkpoint.

Forked children (multiprocessing's fork, os.fork) never checkpoint: the watch switches
itself off in the child, so a child can never write into its parent's run.
"""

from __future__ import annotations

import _signal
import os
import sys
import time

from chkpt import activation, guard
from chkpt.monitor import Monitor
from chkpt.watch import Watch, current, nothing_to_save

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType, FrameType, TracebackType
    from typing import Any

    from chkpt.config import Config
    from chkpt.writer import Writer


def active() -> Session | None:
    """The session of this process if chkpt watches it (made now if it was not yet)."""
    watch = current()
    if watch is None or watch.closed or guard.disabled:
        return None
    return watch.session()


class Session:
    """Everything chkpt decides for one traced process."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        if watch.config is None:  # no config source existed at start-up: look again now
            watch.config = activation.load_config(watch.config_dir)
        self.config: Config = watch.config
        self.closed = False
        self.tracked: dict[str, Any] = {}
        self._pause_depth = 0
        self._busy = False
        self._last_checkpoint = float("-inf")  # none yet: the first tick is due
        self._writer: Writer | None = None
        self._boundary_lines: dict[int, str] | None = None
        self.monitor = Monitor(watch.main_globals, self._on_safe_point)
        guard.on_disable(watch.close)

    def close(self) -> None:
        """Stop watching; later triggers do nothing."""
        if not self.closed:
            self.closed = True
            self.monitor.close()

    def forget_run(self) -> None:
        """In a forked child: the parent's open run must never be written from here."""
        self._writer = None
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

    def on_tick(self, frame: FrameType | None) -> None:
        """The timer's tick, on the main thread in a signal handler (maybe mid-import):
        it only arms the monitor."""
        try:
            due = time.monotonic() - self._last_checkpoint >= self.config.interval * 0.5
            if due and not self._busy and not self._pause_depth and not self.closed:
                self.monitor.request_safe_point(frame, self._boundaries)
        except Exception as exc:
            self.watch.fail(exc, "periodic checkpoint")

    def _boundaries(self) -> dict[int, str]:
        """The script's top-level statement and loop lines (parsed once, at the first need)."""
        if self._boundary_lines is None:
            from chkpt.monitor import top_level_boundaries

            self._boundary_lines = top_level_boundaries(self.watch.source) if self.watch.source else {}
        return self._boundary_lines

    def _on_safe_point(self, frame: FrameType, position: dict[str, Any]) -> None:
        if not self._pause_depth:
            self.take("periodic", frame, position=position)

    def at_exit(self, exc: BaseException | None) -> None:
        """The exit or crash checkpoint, from the watch's atexit handler (which runs last)."""
        if exc is not None and self._died_of(exc):
            self.take("crash", None, exc=exc, final_status="crashed")
            if isinstance(exc, KeyboardInterrupt):
                self.watch.close()
                die_of_sigint()
        else:
            self.take("exit", None, final_status="finished")

    def _died_of(self, exc: BaseException) -> bool:
        """Whether `exc` is the exception the script itself died of (not one shown by a REPL)."""
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_globals is self.watch.main_globals:
                return True
            tb = tb.tb_next
        return False

    # -- taking a checkpoint --------------------------------------------------------------------

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
        target, main_globals = self.watch.target_file, self.watch.main_globals
        return [f for f in frames if f.f_code.co_filename == target or f.f_globals is main_globals]

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
        if (trigger == "exit" and self._writer is None and not self.tracked
                and nothing_to_save(self.watch.main_globals, self.config.min_size)):
            return
        self._busy = True
        try:
            from chkpt.writer import Writer

            if self._writer is None:
                self._writer = Writer(self)
            frames = self.target_frames(frame, exc.__traceback__ if exc is not None else None)
            self._writer.write(trigger, frames, label=label, exc=exc,
                               position=self._position(trigger, frames, position))
            if final_status is not None:
                self._writer.finish(final_status, exc=exc, exit_status=self.watch.exit_status)
        except Exception as error:
            self.watch.fail(error, f"the {trigger} checkpoint")
        finally:
            self._busy = False
            self._last_checkpoint = time.monotonic()


def start_for_module(module: str) -> Watch:
    """Autoload for `python -m module`: the file is known only when runpy starts it, so the
    session (and its monitor, which sees the module's code start) is made at once."""
    config = activation.load_config(os.getcwd())
    watch = Watch(sys.modules["__main__"].__dict__, ["-m", module, *sys.argv[1:]], config=config)
    session = watch.session()

    def on_main_start(code: CodeType) -> bool:
        if activation.decide(code.co_filename, config.include, config.exclude) is not None:
            watch.close()
            return False
        watch.set_target(code.co_filename)
        watch.argv = list(sys.argv)
        return True

    session.monitor.watch_for_main_start(on_main_start)
    watch.begin()
    return watch


def start_explicit(config: Config, main_globals: dict, target_file: str,
                   run_meta: dict | None = None) -> Watch:
    """For the runner (`python -m chkpt script.py`): watch whatever it is given.

    `run_meta` adds fields to the run's metadata (resume records `resumed_from`).
    """
    activation.report_config_warnings(config)
    watch = Watch(main_globals, sys.argv, config=config, config_dir=os.path.dirname(target_file),
                  run_meta=run_meta)
    watch.set_target(target_file)
    watch.begin()
    return watch


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
