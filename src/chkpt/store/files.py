"""Descriptors of local files that chkpt opens, and the checks before one is read.

chkpt shares its process with the program: a program that closes descriptors it does not own
(`os.closerange(3, 256)` in a daemon) and opens a file of its own may get the number of one of
chkpt's. So chkpt knows each descriptor it holds by the file it refers to (device and inode),
and looks again before every write, lock or close: one found replaced is never touched again.
Every open is non-blocking (a FIFO planted where a store file belongs cannot hang anyone),
never follows a symbolic link, and what is read must be a regular file of the user's that
nobody else can write.
"""

from __future__ import annotations

import errno
import os
import stat

from chkpt.store.errors import Damaged, StoreError, Untrusted

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

WRITE_PIECE = 16 << 20  # os.write in pieces: one huge call is several times slower here
OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else -1


def trust_problem(info: os.stat_result) -> str | None:
    """Why a file or directory with this stat may not be trusted, None when it may."""
    me = uid()
    if me >= 0 and info.st_uid != me:
        return f"belongs to uid {info.st_uid}, not you"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "is writable by other users"
    return None


class Replaced(OSError):
    """A descriptor chkpt held now refers to another file (the program closed and reused it)."""

    def __init__(self) -> None:
        super().__init__(errno.EBADF, "a descriptor of chkpt's was closed and reused by the program")


class Descriptor:
    """A descriptor chkpt opened, known by the file it refers to."""

    __slots__ = ("dev", "fd", "ino", "size")

    def __init__(self, fd: int, info: os.stat_result | None = None) -> None:
        info = info or os.fstat(fd)
        self.fd = fd
        self.dev = info.st_dev
        self.ino = info.st_ino
        self.size = info.st_size  # when it was opened

    def is_ours(self) -> bool:
        """Whether the descriptor is open and still refers to the file chkpt opened."""
        if self.fd < 0:
            return False
        try:
            info = os.fstat(self.fd)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == (self.dev, self.ino)

    def check(self) -> int:
        """The descriptor, after checking it is still ours (Replaced otherwise)."""
        if not self.is_ours():
            self.fd = -1
            raise Replaced()
        return self.fd

    def write(self, data: Any) -> None:
        """Write all of the bytes-like `data`, looking at the descriptor before each piece."""
        view = memoryview(data).cast("B")
        while view:
            view = view[os.write(self.check(), view[:WRITE_PIECE]):]

    def close(self) -> None:
        """Close it, unless it is no longer ours (then it is only forgotten)."""
        if self.is_ours():
            os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> Descriptor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_checked(path: str, flags: int, what: str, mode: int = 0o600) -> Descriptor:
    """`path` opened with `flags`, if it is a regular file of the user's that nobody else can
    write; FileNotFoundError when it is absent, else StoreError naming it and the problem."""
    try:
        fd = os.open(path, flags | OPEN_FLAGS, mode)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Untrusted(f"{what} {path} is a symbolic link; chkpt does not follow links in a store") from None
        if exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.ENXIO):  # ENXIO: a FIFO nobody reads
            raise Damaged(f"{what} {path} is not a file") from None
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise  # a store that cannot be written (read-only, full): the writer says so
        raise StoreError(f"{what} {path} cannot be read ({exc.strerror})") from None
    info = os.fstat(fd)
    descriptor = Descriptor(fd, info)
    problem = None if stat.S_ISREG(info.st_mode) else "is not a file"
    problem = problem or trust_problem(info)
    if problem:
        os.close(fd)
        error = Damaged if problem == "is not a file" else Untrusted
        raise error(f"{what} {path} {problem}" + ("" if error is Damaged else "; chkpt does not read it"))
    return descriptor


def read_all(descriptor: Descriptor, size_hint: int = 0) -> bytes:
    """The rest of a file just opened (its size, if known, lets one read do)."""
    fd = descriptor.check()
    pieces = []
    while True:
        piece = os.read(fd, max(size_hint + 1, 1 << 16))
        if not piece:
            return b"".join(pieces)
        pieces.append(piece)
