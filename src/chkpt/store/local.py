"""A store in a local directory: files under their keys, with the checks that make reading safe.

Loading unpickles, so nothing is read unless it can be trusted: the root, each folder and
every file must belong to the user and not be writable by group or others, nothing inside is
reached through a symbolic link, no component of the root's path is another user's link,
and only regular files are opened (non-blocking: a FIFO cannot hang a reader). Files appear
whole: each is written to tmp/ and renamed into place. Folders are made 0700 and files 0600,
whatever the umask.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat

from chkpt import paths
from chkpt.store import layout
from chkpt.store.backend import Entry
from chkpt.store.errors import Damaged, StoreError, Untrusted
from chkpt.store.files import Descriptor, open_checked, read_all, trust_problem, uid
from chkpt.store.locks import FileLock, is_held

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

MMAP_THRESHOLD = 1 << 20  # blobs this large load memory-mapped


def _kind(mode: int) -> str:
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"


def remove_path(path: str) -> None:
    """Delete a file, a link (never what it points to) or a directory tree; best effort."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass


def _reserve(fd: int, size: int) -> None:
    """Allocate a large file's blocks up front (faster writes on ext4); best effort."""
    if size >= (1 << 20) and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError:
            pass


class LocalFile:
    """An open, checked file of a local store."""

    def __init__(self, descriptor: Descriptor, size: int) -> None:
        self.descriptor = descriptor
        self.size = size

    def read(self) -> bytes:
        return read_all(self.descriptor, self.size)

    def read_into(self, target: memoryview) -> int:
        """Fill `target` from the start of the file; the bytes read (fewer at its end)."""
        done = 0
        while done < target.nbytes:
            count = os.preadv(self.descriptor.check(), [target[done:done + (16 << 20)]], done)
            if not count:
                break
            done += count
        return done

    def map(self) -> Any:
        """The file memory-mapped copy-on-write (writable, never changing the file)."""
        import mmap

        return mmap.mmap(self.descriptor.check(), 0, access=mmap.ACCESS_COPY)

    def close(self) -> None:
        self.descriptor.close()

    def __enter__(self) -> LocalFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LocalBackend:
    """A store root on local disk (see backend.Backend)."""

    shared = False

    def __init__(self, root: str) -> None:
        self.root = root
        self.location = root
        self._trusted: set[str] = set()  # folder keys checked ("" is the root)
        self.written: dict[str, tuple[int, int]] = {}  # key → (inode, mtime_ns) of data this process wrote

    def path(self, key: str) -> str:
        return f"{self.root}{os.sep}{key.replace('/', os.sep)}" if key else self.root

    def where(self, key: str) -> str:
        return self.path(key)

    # -- trust ----------------------------------------------------------------------------------

    def check_root(self) -> None:
        """The root: a directory of ours that nobody else can write, reached without another
        user's symbolic link on the way (checked once). FileNotFoundError when absent."""
        if "" in self._trusted:
            return
        link = paths.foreign_link(self.root)
        if link is not None:
            raise Untrusted(f"{link[0]} is a symbolic link of uid {link[1]}; chkpt does not follow it")
        info = os.stat(self.root)
        if not stat.S_ISDIR(info.st_mode):
            raise StoreError(f"{self.root} is not a directory")
        problem = trust_problem(info)
        if problem:
            raise Untrusted(f"the store {self.root} {problem}; chkpt does not use it")
        self._trusted.add("")

    def _check_folder(self, key: str) -> None:
        """The folder `key` (and each above it): real directories of ours that nobody else can write."""
        if key in self._trusted:
            return
        if not key:
            self.check_root()
            return
        self._check_folder(key.rpartition("/")[0])
        path = self.path(key)
        what = layout.folder_kind(key)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StoreError(f"{what} {path} cannot be read ({exc.strerror})") from None
        if stat.S_ISLNK(info.st_mode):
            raise Untrusted(f"{what} {path} is a symbolic link; chkpt does not follow links in a store")
        if not stat.S_ISDIR(info.st_mode):
            raise Damaged(f"{what} {path} is not a directory")
        problem = trust_problem(info)
        if problem:
            raise Untrusted(f"{what} {path} {problem}; chkpt does not read it")
        self._trusted.add(key)

    def _check_parent(self, key: str) -> None:
        self._check_folder(key.rpartition("/")[0])

    def make_folder(self, key: str) -> None:
        """Make the folder `key` and those above it below the root (0700), or check them."""
        if not key:
            if "" not in self._trusted:
                self.make_root()
            return
        try:
            self._check_folder(key)
        except FileNotFoundError:
            self.make_folder(key.rpartition("/")[0])
            try:
                os.mkdir(self.path(key), 0o700)
                os.chmod(self.path(key), 0o700)  # whatever the umask
            except FileExistsError:
                pass
            self._check_folder(key)

    def make_root(self) -> None:
        """Make the root private: a missing one is made 0700, and so is one that holds nothing
        but chkpt's own files without being a store yet (the config cache's folder, made with
        the umask's mode). Any other directory keeps its mode."""
        try:
            self.check_root()
        except FileNotFoundError:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        except Untrusted:
            info = os.lstat(self.root)
            if info.st_uid != uid() or not stat.S_ISDIR(info.st_mode) or not self._only_our_own_files():
                raise
        else:
            if not self._only_our_own_files() or stat.S_IMODE(os.stat(self.root).st_mode) == 0o700:
                return
        os.chmod(self.root, 0o700)  # whatever the umask
        self._trusted.discard("")
        self.check_root()

    def _only_our_own_files(self) -> bool:
        try:
            names = os.listdir(self.root)
            return (set(names) <= layout.ROOT_ENTRIES and layout.RUNS not in names
                    and all(os.lstat(os.path.join(self.root, n)).st_uid == uid() for n in names))
        except OSError:
            return False

    # -- reading --------------------------------------------------------------------------------

    def open(self, key: str) -> LocalFile:
        self.check_root()
        self._check_parent(key)
        descriptor = open_checked(self.path(key), os.O_RDONLY, layout.what(key))
        return LocalFile(descriptor, descriptor.size)

    def get(self, key: str) -> bytes:
        with self.open(key) as opened:
            return opened.read()

    def stat(self, key: str) -> Entry | None:
        try:
            info = os.lstat(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return Entry(key, info.st_size, info.st_mtime, _kind(info.st_mode))

    def list(self, prefix: str, *, deep: bool = True) -> list[Entry]:
        self.check_root()
        self._check_folder(prefix)
        if not deep:
            found = []
            with os.scandir(self.path(prefix)) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed meanwhile
                    found.append(Entry(layout.join(prefix, entry.name), info.st_size, info.st_mtime,
                                       _kind(info.st_mode)))
            return found
        found = []
        for directory, subdirs, files in os.walk(self.path(prefix)):  # links are not followed
            base = os.path.relpath(directory, self.root).replace(os.sep, "/")
            for name in files:
                try:
                    info = os.lstat(os.path.join(directory, name))
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    found.append(Entry(layout.join(base, name), info.st_size, info.st_mtime))
            subdirs[:] = [d for d in subdirs if not os.path.islink(os.path.join(directory, d))]
        return found

    # -- writing --------------------------------------------------------------------------------

    def put_atomic(self, key: str, chunks: Iterable[Any], verify: Callable[[], bool] | None = None) -> bool:
        def fill(descriptor: Descriptor) -> bool:
            if isinstance(chunks, list | tuple):
                _reserve(descriptor.fd, sum(memoryview(chunk).nbytes for chunk in chunks))
            for chunk in chunks:
                descriptor.write(chunk)
            return verify is None or verify()

        return self.fill(key, fill)

    def put_if_absent(self, key: str, chunks: Iterable[Any]) -> bool:
        def fill(descriptor: Descriptor) -> bool:
            for chunk in chunks:
                descriptor.write(chunk)
            return True

        return self.fill(key, fill, replace=False)

    def fill(self, key: str, fill: Callable[[Descriptor], bool], *, replace: bool = True) -> bool:
        """Make `key` appear only complete: `fill(descriptor)` writes a private temporary file,
        which becomes `key` when it returns True and is abandoned when it returns False. With
        `replace` False, an existing `key` is left as it is (and False returned)."""
        self.make_folder(key.rpartition("/")[0])
        self.make_folder(layout.TMP)
        tmp = self.path(layout.temporary())
        descriptor = Descriptor(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                        0o600))
        try:
            os.fchmod(descriptor.fd, 0o600)  # whatever the umask
            keep = fill(descriptor)
            info = os.fstat(descriptor.check())
            descriptor.close()
            if keep and replace:
                os.replace(tmp, self.path(key))
            elif keep:
                try:
                    os.link(tmp, self.path(key), follow_symlinks=False)
                except FileExistsError:
                    keep = False
                os.unlink(tmp)
            else:
                os.unlink(tmp)
            if keep and layout.is_data(key):
                self.written[key] = (info.st_ino, info.st_mtime_ns)
            return keep
        except BaseException:
            descriptor.close()
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def append(self, key: str, data: bytes) -> None:
        """Add `data` at the end of the file `key` (made if absent)."""
        self._check_parent(key)
        with open_checked(self.path(key), os.O_WRONLY | os.O_APPEND | os.O_CREAT, layout.what(key)) as descriptor:
            descriptor.write(data)

    def touch(self, key: str) -> None:
        try:
            os.utime(self.path(key), follow_symlinks=False)
        except OSError:
            pass

    def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            os.unlink(path)
        except IsADirectoryError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError as exc:
            if exc.errno == errno.EISDIR:  # some systems say so for unlink() of a directory
                shutil.rmtree(path, ignore_errors=True)

    def delete_all(self, prefix: str) -> None:
        """Moved into tmp/ in one rename, then deleted: cut short, it is whole or gone, and the
        rest sits in tmp/ until gc's next sweep."""
        trash = self.path(layout.temporary(prefix.replace("/", "-") + "-"))
        try:
            os.rename(self.path(prefix), trash)
        except FileNotFoundError:
            return
        except OSError:
            trash = self.path(prefix)
        remove_path(trash)

    def forget_written(self) -> None:
        """The files written so far are referred to by a record now: never undone."""
        self.written = {}

    def delete_written(self, key: str) -> None:
        """Delete the file `key` this process wrote, only while it is still the one written
        (another process that reused it since touched it: then it stays)."""
        inode_mtime = self.written.pop(key, None)
        path = self.path(key)
        try:
            info = os.lstat(path)
            if inode_mtime is not None and (info.st_ino, info.st_mtime_ns) == inode_mtime:
                os.unlink(path)
        except OSError:
            pass

    def undo_written(self) -> None:
        """Delete the files written since `forget_written`, each only while it is still the one
        written (another process that wrote or reused the same blob since changed it)."""
        for key in list(self.written):
            self.delete_written(key)

    # -- locks ----------------------------------------------------------------------------------

    def lock(self, key: str, *, exclusive: bool, blocking: bool = True) -> FileLock:
        return FileLock(self.path(key), exclusive=exclusive, blocking=blocking)

    def held(self, key: str) -> bool:
        return is_held(self.path(key))
