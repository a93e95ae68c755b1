"""File locks (flock): the store's gc lock, each run's lock, the uploader's lock.

A lock belongs to its open file, and the kernel releases it when the process dies, however it
dies. A forked child closes its copies at once: a long-lived child (a multiprocessing worker)
would otherwise keep its parent's run "live" and block gc forever. Descriptors are known by
their file (files.Descriptor): one the program closed and reused is never closed or locked.
"""

from __future__ import annotations

import fcntl
import os
import time

from chkpt.store.errors import StoreError
from chkpt.store.files import Descriptor, open_checked

_held: set[Descriptor] = set()  # the lock descriptors this process holds


def _close_held_in_child() -> None:
    for descriptor in _held:
        descriptor.close()
    _held.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


class FileLock:
    """An flock'ed file: shared or exclusive, waited for or only tried.

    A context manager (`with FileLock(...) as locked`), or `acquire()`/`release()` for a lock
    handed over to another thread.
    """

    def __init__(self, path: str, *, exclusive: bool, blocking: bool = True, wait: float = 0.0) -> None:
        self.path = path
        self.mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        self.blocking = blocking
        self.wait = wait  # a non-blocking lock is tried for this long
        self.descriptor: Descriptor | None = None

    def acquire(self) -> bool:
        """Take the lock; False when non-blocking and another process holds it."""
        descriptor = open_checked(self.path, os.O_RDWR | os.O_CREAT, "lock file")
        deadline = time.monotonic() + self.wait
        try:
            while True:
                try:
                    fcntl.flock(descriptor.check(), self.mode | (0 if self.blocking else fcntl.LOCK_NB))
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        descriptor.close()
                        return False
                    time.sleep(0.05)
        except BaseException:
            descriptor.close()
            raise
        self.descriptor = descriptor
        _held.add(descriptor)
        return True

    def holds(self) -> bool:
        """Whether the lock is held through a descriptor that is still ours (a program that closed
        it, os.closerange, released the lock with it)."""
        return self.descriptor is not None and self.descriptor.is_ours()

    def write_owner(self) -> None:
        """Write our pid into the held lock's file (who holds it, for people and tests)."""
        assert self.descriptor is not None
        os.ftruncate(self.descriptor.check(), 0)
        self.descriptor.write(f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self.descriptor is not None:
            _held.discard(self.descriptor)
            self.descriptor.close()
            self.descriptor = None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def is_held(path: str) -> bool:
    """Whether another process holds the lock file `path` (a missing or odd file: no)."""
    try:
        descriptor = open_checked(path, os.O_RDONLY, "lock file")
    except (OSError, StoreError):
        return False
    try:
        fcntl.flock(descriptor.check(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        descriptor.close()
    return False
