"""Takes one checkpoint: scope → capture → serialization → store, within the size limits.

Imported at a process's first checkpoint, never at start-up. The run directory is created
only when there is something to save, so a script with no data leaves no trace.

Limits: values over `max_object_size` are skipped by capture; when a checkpoint's new data
would exceed `max_checkpoint_size`, the largest values are dropped first (many mid-sized
values explain more than one huge one); once the run has written `max_run_size`, only
values already in the store are recorded. Every drop is listed in the manifest's `skipped`.
"""

from __future__ import annotations

import os
import sys
import time

from chkpt import capture, salience, serialize
from chkpt.fmt import human_size
from chkpt.gc import StoreLock
from chkpt.store import RunWriter, Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any

    from chkpt.session import Session


def exception_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Writer:
    """Writes the checkpoints of one session's run."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.config = session.config
        self.store = Store(self.config.store_dir)
        self.rules = salience.Rules(self.config)
        self.run: RunWriter | None = None
        self.run_bytes = 0

    def _open_run(self) -> RunWriter:
        session = self.session
        meta = {
            "script": session.target_file,
            "script_name": os.path.basename(session.target_file or "?"),
            "argv": session.argv,
            "cwd": os.getcwd(),
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "pid": os.getpid(),
            "host": os.uname().nodename if hasattr(os, "uname") else "",
            "started": session.started,
        }
        run = self.store.create_run(meta)
        if session.source is not None:
            digest, written = self.store.put_blob(session.source)
            self.run_bytes += written
            run.meta["source"] = {"hash": digest, "size": len(session.source)}
            run.save_meta()
        return run

    def write(
        self, trigger: str, frames: list[FrameType], *, label: str = "",
        exc: BaseException | None = None,
    ) -> int | None:
        """Save the scope seen from `frames`; returns the checkpoint index, None if empty."""
        started = time.time()
        roots = capture.named_roots(self.session.main_globals, frames, self.session.tracked)
        captured = capture.collect(roots, self.rules, keep_small=trigger == "crash")
        if not captured.items and self.run is None:
            return None
        if self.run is None:
            self.run = self._open_run()
        with StoreLock(self.store, exclusive=False):
            variables, new_bytes = self._save(captured)
            index = self.run.add_checkpoint(self._manifest(
                trigger, frames, label, exc, started, captured, variables, new_bytes))
        return index

    def _manifest(
        self, trigger: str, frames: list[FrameType], label: str, exc: BaseException | None,
        started: float, captured: capture.Capture, variables: list[dict[str, Any]],
        new_bytes: int,
    ) -> dict[str, Any]:
        where = frames[0] if frames else None
        return {
            "trigger": trigger,
            "label": label,
            "time": started,
            "duration": time.time() - started,
            "file": where.f_code.co_filename if where else self.session.target_file,
            "line": where.f_lineno if where else None,
            "function": where.f_code.co_name if where else None,
            "exception": exception_text(exc) if exc is not None else None,
            "variables": variables,
            "aliases": captured.aliases,
            "skipped": captured.skipped,
            "new_bytes": new_bytes,
        }

    def _save(self, captured: capture.Capture) -> tuple[list[dict[str, Any]], int]:
        config = self.config
        budget = config.max_checkpoint_size
        fitting: list[capture.Item] = []
        total = 0
        for item in sorted(captured.items, key=lambda i: i.size):
            if total + item.size > budget:
                captured.skip(item.name, f"{human_size(item.size)} did not fit in "
                                         f"max_checkpoint_size ({human_size(budget)})")
                continue
            total += item.size
            fitting.append(item)
        variables = []
        new_bytes = 0
        for item in sorted(fitting, key=lambda i: i.name):
            try:
                data = serialize.dumps(item.obj)
            except Exception as exc:
                captured.skip(item.name, f"cannot be pickled ({exception_text(exc)})")
                continue
            if self.run_bytes + new_bytes + data.size > config.max_run_size and not self._stored(data):
                captured.skip(item.name, f"the run reached max_run_size "
                                         f"({human_size(config.max_run_size)})")
                continue
            stream_hash, written = self.store.put_blob(data.stream)
            new_bytes += written
            buffers = []
            for buffer in data.buffers:
                digest, written = self.store.put_blob(buffer)
                new_bytes += written
                buffers.append({"hash": digest, "size": buffer.nbytes})
            variables.append({
                "name": item.name,
                "type": item.type,
                "scope": item.scope,
                "size": data.size,
                **item.info,
                "pickle": {"hash": stream_hash, "size": len(data.stream)},
                "buffers": buffers,
            })
        self.run_bytes += new_bytes
        return variables, new_bytes

    def _stored(self, data: serialize.Serialized) -> bool:
        """Whether every blob of `data` is already in the store (costs nothing to record)."""
        from chkpt.store import hash_buffer

        parts = [data.stream, *data.buffers]
        return all(os.path.exists(self.store.blob_path(hash_buffer(p))) for p in parts)

    def finish(self, status: str, *, exc: BaseException | None, exit_status: object) -> None:
        """Record how the run ended, thin its checkpoints and keep the store under its cap."""
        if self.run is None:
            return
        run = self.run
        run.meta.update(status=status, ended=time.time())
        if exc is not None:
            run.meta["exception"] = exception_text(exc)
            run.meta["exit_code"] = 1
        elif status == "killed":
            run.meta["exit_code"] = None
        else:
            run.meta["exit_code"] = _exit_code(exit_status)
        run.save_meta()
        run.thin(self.config.keep)
        run.close()
        if self.run_bytes:
            from chkpt import gc

            gc.enforce_cap(self.store, self.config.max_store_size, blocking=False)


def _exit_code(status: object) -> int:
    """The process exit code Python derives from a sys.exit() argument."""
    if status is None:
        return 0
    if isinstance(status, int):
        return status
    return 1
