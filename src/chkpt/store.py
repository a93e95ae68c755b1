"""The store on local disk: content-addressed blobs, run records, manifests, locks and usage.

Layout (docs/store-format.md has the full format):

    <root>/STORE                     format marker
    <root>/gc.lock                   flock: shared while a checkpoint commits, exclusive for gc
    <root>/usage                     running estimate of the blobs' total size (for the cap)
    <root>/blobs/ab/cdef…            raw bytes, named by their xxh3-128 hash (a chunk of a buffer,
                                     a pickle stream, or a pack of a checkpoint's small ones)
    <root>/blobs/ab/cdef….zstd       the same, compressed (a length header, then a zstd frame)
    <root>/runs/<run>/run.json       the run record (rewritten atomically)
    <root>/runs/<run>/lock           flock'ed by the writing process while it lives
    <root>/runs/<run>/pinned         present when the user pinned the run (never evicted)
    <root>/runs/<run>/checkpoints/000001.json   one manifest per checkpoint
    <root>/tmp/                      files being written; renamed into place when complete

Everyone else (the writer, gc, doctor, the API) goes through `Store`'s methods and never
builds these paths. Commit protocol: a checkpoint's blobs first (each to tmp/, then renamed to
its hash name), its manifest last, so readers only see complete checkpoints.

Loading unpickles, so everything read is checked first: the root, a run's directory and every
file must belong to the user and not be writable by group or others, and nothing inside the
store is followed through a symlink (`Untrusted`). A store is only ever made in a missing or
empty directory; a directory that holds anything else is refused and left as it is.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import shutil
import stat
import struct
import time

import xxhash

from chkpt import records

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

MARKER = f"chkpt store {records.FORMAT}\n"
WRITE_CHUNK = 16 << 20  # os.write in pieces: one huge call is several times slower here
MMAP_THRESHOLD = 1 << 20  # blobs this large load memory-mapped
CHUNK_SIZE = 4 << 20  # buffers are stored in chunks of this size (docs/store-format.md says why)
CODEC = "zstd"  # level 1: see benchmarks/bench_chunks.py
COMPRESS_SAMPLE = 64 << 10
MIN_SAVING = 0.9  # a compressed blob must be at most this fraction of the raw bytes
# A compressed blob starts with a zstd skippable frame holding the file's length (so a blob cut
# short is seen without reading it), then one zstd frame: `zstd -d` reads it as it is.
HEADER = struct.Struct("<IIQ")
SKIPPABLE_MAGIC = 0x184D2A50
# what a store holds (parsed-config: the config cache that lives in the default store root)
_STORE_ENTRIES = frozenset({"STORE", "gc.lock", "usage", "blobs", "runs", "tmp", "parsed-config"})

# Lock descriptors this process holds. A forked child closes its copies at once: a flock
# belongs to the open file, so a long-lived child (a multiprocessing worker) would otherwise
# keep its parent's run "live" and block gc forever.
_held_fds: set[int] = set()


def _close_held_fds_in_child() -> None:
    for fd in _held_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    _held_fds.clear()


os.register_at_fork(after_in_child=_close_held_fds_in_child)


class StoreError(Exception):
    """A store that cannot be used, or a file in it that cannot be read; says which."""


class Untrusted(StoreError):
    """A store, run or file that another user could have written: never read."""


class Damaged(StoreError):
    """A store file that exists but cannot be what it should be; names the file and the problem."""


def hash_buffer(data: Any) -> str:
    """The content address of a bytes-like object (hashed in place, never copied)."""
    return xxhash.xxh3_128_hexdigest(data)


def is_script(path: Any, wanted: str) -> bool:
    """Whether a run's script `path` is `wanted`: a path (relative to the cwd) or a file name."""
    if not isinstance(path, str):
        return False
    return path == os.path.abspath(wanted) or os.path.basename(path) == wanted


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else -1


def _trust_problem(info: os.stat_result) -> str | None:
    """Why a file or directory with this stat may not be trusted, None when it may."""
    uid = _uid()
    if uid >= 0 and info.st_uid != uid:
        return f"belongs to uid {info.st_uid}, not you"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "is writable by other users"
    return None


def _compress(data: bytes) -> bytes | None:
    """`data` compressed, None when that would save less than a tenth of it (random floats,
    compressed data): a sample tells first, so incompressible data costs little."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=1)
    sample = data[:COMPRESS_SAMPLE]
    if len(data) > COMPRESS_SAMPLE and len(compressor.compress(sample)) > len(sample) * MIN_SAVING:
        return None
    packed = compressor.compress(data)
    if len(packed) + HEADER.size > len(data) * MIN_SAVING:
        return None
    return HEADER.pack(SKIPPABLE_MAGIC, 8, HEADER.size + len(packed)) + packed


def _declared_length(header: bytes) -> int | None:
    """The file length a compressed blob's header gives (None for no such header)."""
    if len(header) != HEADER.size:
        return None
    magic, frame_size, length = HEADER.unpack(header)
    return length if (magic, frame_size) == (SKIPPABLE_MAGIC, 8) else None


def _decompress(packed: bytes, size: int) -> bytes:
    import zstandard

    declared = zstandard.get_frame_parameters(packed).content_size
    if declared != size:  # checked before anything is allocated for it
        raise ValueError(f"it holds {declared} bytes, not {size}")
    data = zstandard.ZstdDecompressor().decompress(packed)
    if len(data) != size:
        raise ValueError(f"it holds {len(data)} bytes, not {size}")
    return data


def _allocate(size: int) -> Any:
    """Writable memory for `size` bytes read from the store: large blocks are anonymous maps,
    whose pages the kernel gives on first write (a bytearray would be zeroed first, a second
    pass over the memory)."""
    if size < MMAP_THRESHOLD:
        return bytearray(size)
    import mmap

    return mmap.mmap(-1, size)


def _reserve(fd: int, size: int) -> None:
    """Allocate a large file's blocks up front (faster writes on ext4); best effort."""
    if size >= (1 << 20) and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError:
            pass


class StoreLock:
    """The store-wide gc lock: shared for writers, exclusive for gc.

    A context manager (`with store.lock(...) as locked`), or `acquire()`/`release()` for a
    checkpoint handed over to a background thread.
    """

    def __init__(self, path: str, exclusive: bool, blocking: bool) -> None:
        self.path = path
        self.mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        self.blocking = blocking
        self.fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False when non-blocking and another process holds it."""
        self.fd = _hold_lock(self.path, self.mode, self.blocking)
        return self.fd is not None

    def release(self) -> None:
        if self.fd is not None:
            _release_lock(self.fd)
            self.fd = None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _hold_lock(path: str, mode: int, blocking: bool = True) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, mode | (0 if blocking else fcntl.LOCK_NB))
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, BlockingIOError):
            return None
        raise
    _held_fds.add(fd)
    return fd


def _release_lock(fd: int) -> None:
    """Close a lock descriptor (a no-op after a fork closed it in the child)."""
    if fd in _held_fds:
        _held_fds.discard(fd)
        os.close(fd)


def _remove(path: str) -> None:
    """Delete a file, a link (never what it points to) or a directory tree; best effort."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass


class Leftover:
    """Something in tmp/ (a file being written, or a deleted run's directory)."""

    __slots__ = ("mtime", "name", "size")

    def __init__(self, name: str, size: int, mtime: float) -> None:
        self.name = name
        self.size = size
        self.mtime = mtime


class Store:
    """One store root on local disk."""

    shared = False  # a store many machines write to (the read cache of an s3:// store)

    def __init__(self, root: str) -> None:
        self.root = root
        self.blobs_dir = os.path.join(root, "blobs")
        self.runs_dir = os.path.join(root, "runs")
        self.tmp_dir = os.path.join(root, "tmp")
        self._usage_path = os.path.join(root, "usage")
        self._trusted_dirs: set[str] = set()
        self._format: int | None = None  # the marker's, once read
        self._last_pack: tuple[dict[str, Any], Any] | None = None  # (reference, bytes) last read

    @property
    def location(self) -> str:
        """Where the store is, for people: its root (a bucket's URL for a shared store)."""
        return self.root

    # -- trust ----------------------------------------------------------------------------------

    def _check_dir(self, path: str, what: str) -> None:
        """`path` is a real directory of ours that nobody else can write (checked once)."""
        if path in self._trusted_dirs:
            return
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
        problem = _trust_problem(info)
        if problem:
            raise Untrusted(f"{what} {path} {problem}; chkpt does not read it")
        self._trusted_dirs.add(path)

    def _check_root_path(self) -> None:
        """The root itself, reached without another user's symlink on the way."""
        if self.root in self._trusted_dirs:
            return
        path = os.path.abspath(self.root)
        parts = path.split(os.sep)
        for end in range(2, len(parts) + 1):
            component = os.sep.join(parts[:end])
            try:
                info = os.lstat(component)
            except OSError:
                break
            if stat.S_ISLNK(info.st_mode) and info.st_uid not in (_uid(), 0):
                raise Untrusted(f"{component} is a symbolic link of uid {info.st_uid}; "
                                "chkpt does not follow it")
        info = os.stat(self.root)
        if not stat.S_ISDIR(info.st_mode):
            raise StoreError(f"{self.root} is not a directory")
        problem = _trust_problem(info)
        if problem:
            raise Untrusted(f"the store {self.root} {problem}; chkpt does not use it")
        self._trusted_dirs.add(self.root)

    def _open_trusted(self, path: str, what: str) -> int:
        """A descriptor of the regular file `path`, after checking it can be trusted."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Untrusted(f"{what} {path} is a symbolic link; chkpt does not follow links "
                                "in a store") from None
            if exc.errno in (errno.EISDIR, errno.ENOTDIR):
                raise Damaged(f"{what} {path} is not a file") from None
            raise StoreError(f"{what} {path} cannot be read ({exc.strerror})") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise Damaged(f"{what} {path} is not a file")
        problem = _trust_problem(info)
        if problem:
            os.close(fd)
            raise Untrusted(f"{what} {path} {problem}; chkpt does not read it")
        return fd

    def _read_trusted(self, path: str, what: str) -> bytes:
        fd = self._open_trusted(path, what)
        try:
            with open(fd, "rb", closefd=False) as handle:
                return handle.read()
        finally:
            os.close(fd)

    # -- set-up ---------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether a store is here (a missing one is not an error for readers: nothing saved yet)."""
        return os.path.isdir(self.runs_dir)

    def check_readable(self) -> None:
        """Raise Untrusted/StoreError unless this store may be read (done by every read)."""
        self._check_root_path()
        if self._format is None:
            self._format = self._read_format()

    def _read_format(self) -> int:
        """The format its marker names (the current one for a store without a marker yet);
        StoreError for a format this chkpt does not read."""
        path = os.path.join(self.root, "STORE")
        try:
            text = self._read_trusted(path, "store marker")
        except FileNotFoundError:
            return records.FORMAT
        prefix, _, number = text.decode(errors="replace").strip().rpartition(" ")
        if prefix != "chkpt store" or not number.isdigit():
            raise Damaged(f"{path} is damaged (it is not a chkpt store marker)")
        if int(number) not in records.FORMATS_READ:
            raise StoreError(f"the store {self.root} is in format {number}, which this chkpt cannot read "
                             f"(it reads formats {', '.join(map(str, records.FORMATS_READ))}); "
                             "upgrade chkpt or use another store")
        return int(number)

    def create(self) -> None:
        """Make the store here (user-only permissions), or check that the one here is ours.

        Only a missing or empty directory, or one that already is a store, is used: anything
        else is refused and left untouched.
        """
        self._check_root_path_or_make()
        entries = self._entries()
        if entries - _STORE_ENTRIES:
            raise StoreError(f"{self.root} is not empty and not a chkpt store; not using it")
        if not entries:  # making the store here: it holds the user's data
            os.chmod(self.root, 0o700)
        # runs/ last: `exists()` looks for it, so a concurrent gc never finds a half-made store
        for directory in (self.tmp_dir, self.blobs_dir, self.runs_dir):
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                pass
            self._check_dir(directory, "store directory")
        marker = os.path.join(self.root, "STORE")
        # this format reads the older ones: an older store is upgraded (a newer one is refused)
        if not os.path.lexists(marker) or self._read_format() < records.FORMAT:
            self._write_file(marker, [MARKER.encode()])
        self._format = records.FORMAT

    def _entries(self) -> set[str]:
        try:
            return set(os.listdir(self.root))
        except OSError as exc:
            raise StoreError(f"{self.root} cannot be read ({exc.strerror})") from None

    def _check_root_path_or_make(self) -> None:
        try:
            self._check_root_path()
        except FileNotFoundError:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            self._trusted_dirs.discard(self.root)
            self._check_root_path()

    def probe_writable(self) -> None:
        """Write and remove a small file, as a checkpoint would (for `chkpt doctor`)."""
        self.create()
        probe = os.path.join(self.tmp_dir, f"probe-{os.getpid()}-{secrets.token_hex(4)}")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)

    # -- writing files --------------------------------------------------------------------------

    def _write_file(self, path: str, chunks: Iterable[Any], verify: Callable[[], bool] | None = None) -> bool:
        """Write the bytes-like `chunks` one after the other to `path`, which appears only complete.

        `verify()` is asked once all is written, before `path` appears; False abandons the file
        (the writer's source changed meanwhile) and returns False.
        """
        def fill(fd: int) -> bool:
            if isinstance(chunks, list | tuple):
                _reserve(fd, sum(memoryview(chunk).nbytes for chunk in chunks))
            for chunk in chunks:
                view = memoryview(chunk).cast("B")
                while view:
                    written = os.write(fd, view[:WRITE_CHUNK])
                    view = view[written:]
            return verify is None or verify()

        return self._replace_with(path, fill)

    def _replace_with(self, path: str, fill: Callable[[int], bool]) -> bool:
        """Make `path` appear only complete: `fill(fd)` writes a private temporary file, which
        replaces `path` when it returns True and is abandoned when it returns False."""
        tmp = os.path.join(self.tmp_dir, f"{os.getpid()}-{secrets.token_hex(6)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            keep = fill(fd)
            os.close(fd)
            fd = -1
            if not keep:
                os.unlink(tmp)
                return False
            os.replace(tmp, path)
            return True
        except BaseException:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    # -- blobs ----------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.blobs_dir, digest[:2], digest[2:])

    def has_blob(self, digest: str, size: int) -> dict[str, Any] | None:
        """The reference to the blob if it is stored whole, raw or compressed; reusing it
        refreshes its mtime (gc's grace period).

        A raw blob of the wrong size (cut short by a power loss, or damaged) counts as absent,
        so the next write of the same data replaces it instead of referring to it again.
        """
        path = self.blob_path(digest)
        try:
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and info.st_size == size:
                os.utime(path)
                return records.blob_ref(digest, size)
        except (FileNotFoundError, NotADirectoryError):
            pass
        ref = records.blob_ref(digest, size, CODEC, 0)
        path = self.blob_path(records.blob_key(ref))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or _declared_length(os.pread(fd, HEADER.size, 0)) != info.st_size:
                return None
            os.utime(fd)
        finally:
            os.close(fd)
        ref["stored"] = info.st_size
        return ref

    def write_blob(self, digest: str, chunks: Iterable[Any], verify: Callable[[], bool] | None = None) -> bool:
        """Store the bytes whose hash is `digest`, given as consecutive bytes-like chunks;
        False when `verify()` (asked before the blob appears) says they changed meanwhile."""
        path = self.blob_path(digest)
        try:
            os.mkdir(os.path.dirname(path), 0o700)
        except FileExistsError:
            pass
        return self._write_file(path, chunks, verify)

    def write_compressed(self, digest: str, data: bytes) -> dict[str, Any]:
        """Store `data` (whose hash is `digest`) compressed, or raw when it does not compress;
        returns its reference. Takes CPU time: meant for a background thread."""
        packed = _compress(data)
        if packed is None:
            self.write_blob(digest, [data])
            return records.blob_ref(digest, len(data))
        ref = records.blob_ref(digest, len(data), CODEC, len(packed))
        self.write_blob(records.blob_key(ref), [packed])
        return ref

    def put_blob(self, data: Any) -> tuple[dict[str, Any], int]:
        """Store bytes-like `data` raw; returns (its reference, bytes newly written: 0 when
        deduplicated)."""
        digest = hash_buffer(data)
        size = memoryview(data).nbytes
        ref = self.has_blob(digest, size)
        if ref is not None:
            return ref, 0
        self.write_blob(digest, [data])
        return records.blob_ref(digest, size), size

    def _open_blob(self, key: str) -> int:
        """A descriptor of the blob file `key`, checked like every file read."""
        self.check_readable()
        path = self.blob_path(key)
        try:
            self._check_dir(self.blobs_dir, "store directory")
            self._check_dir(os.path.dirname(path), "blob directory")
            return self._open_trusted(path, "blob")
        except (FileNotFoundError, NotADirectoryError):
            raise StoreError(f"blob {key} is missing from {self.blobs_dir}") from None

    def read_ref(self, ref: dict[str, Any]) -> Any:
        """The bytes of the blob a record refers to, checked against its hash (a packed part's
        pack is read once for all the parts loaded after it)."""
        if "pack" in ref:
            pack = ref["pack"]
            if self._last_pack is None or self._last_pack[0] != pack:
                self._last_pack = (pack, self.read_ref(pack))
            # writable, as every buffer chkpt loads: arrays loaded from it can be changed
            part = bytearray(memoryview(self._last_pack[1])[ref["offset"]:ref["offset"] + ref["size"]])
            if hash_buffer(part) != ref["hash"]:
                raise Damaged(f"blob {records.blob_key(pack)} is corrupt (its part {ref['hash']} "
                              "does not match its hash)")
            return part
        if "codec" not in ref:
            return self.read_blob(ref["hash"], ref["size"])
        data = _allocate(ref["size"])
        self._read_compressed(ref, memoryview(data))
        return data

    def read_buffer(self, buffer: dict[str, Any]) -> Any:
        """A buffer of a manifest's variable: its chunks read one after the other into one
        block of memory (one raw blob is memory-mapped as `read_blob` does)."""
        chunks = records.chunks(buffer)
        if len(chunks) == 1:
            return self.read_ref(chunks[0])
        data = _allocate(sum(ref["size"] for ref in chunks))
        view = memoryview(data)
        offset = 0
        for ref in chunks:
            target = view[offset:offset + ref["size"]]
            if "pack" in ref:  # a short last chunk, stored with the checkpoint's small parts
                target[:] = self.read_ref(ref)
            elif "codec" in ref:
                self._read_compressed(ref, target)
            else:
                self._read_raw_into(ref, target)
            offset += ref["size"]
        return data

    def _read_raw_into(self, ref: dict[str, Any], target: memoryview) -> None:
        fd = self._open_blob(ref["hash"])
        try:
            size = os.fstat(fd).st_size
            if size != ref["size"]:
                raise Damaged(f"blob {ref['hash']} is truncated ({size} of {ref['size']} bytes)")
            done = 0
            while done < size:
                count = os.readv(fd, [target[done:done + WRITE_CHUNK]])
                if not count:
                    raise Damaged(f"blob {ref['hash']} is truncated ({done} of {size} bytes)")
                done += count
        finally:
            os.close(fd)
        if hash_buffer(target) != ref["hash"]:
            raise Damaged(f"blob {ref['hash']} is corrupt (its content does not match its hash)")

    def _read_compressed(self, ref: dict[str, Any], target: memoryview) -> None:
        key = records.blob_key(ref)
        fd = self._open_blob(key)
        try:
            with open(fd, "rb", closefd=False) as handle:
                packed = handle.read()
        finally:
            os.close(fd)
        if len(packed) != ref["stored"]:
            raise Damaged(f"blob {key} is truncated ({len(packed)} of {ref['stored']} bytes)")
        if _declared_length(packed[:HEADER.size]) != len(packed):
            raise Damaged(f"blob {key} is damaged (its header does not give its length)")
        try:
            data = _decompress(packed[HEADER.size:], ref["size"])
        except Exception as exc:  # zstd's errors, a frame of another size
            raise Damaged(f"blob {key} is corrupt ({exc})") from None
        target[:] = data
        if hash_buffer(target) != ref["hash"]:
            raise Damaged(f"blob {key} is corrupt (its content does not match its hash)")

    def read_blob(self, digest: str, expected_size: int) -> Any:
        """The raw blob's bytes, checked against its hash; large ones memory-mapped copy-on-write."""
        fd = self._open_blob(digest)
        try:
            size = os.fstat(fd).st_size
            if size != expected_size:
                raise Damaged(f"blob {digest} is truncated ({size} of {expected_size} bytes)")
            if size < MMAP_THRESHOLD:
                with open(fd, "rb", closefd=False) as handle:
                    data: Any = bytearray(handle.read())
            else:
                import mmap

                data = mmap.mmap(fd, 0, access=mmap.ACCESS_COPY)
        finally:
            os.close(fd)
        if hash_buffer(data) != digest:
            raise Damaged(f"blob {digest} is corrupt (its content does not match its hash)")
        return data

    def _blob_entries(self) -> list[tuple[str, os.stat_result | None]]:
        """(name under blobs/, lstat) of every shard's entries; (shard, None) for a shard that
        is not a directory."""
        entries: list[tuple[str, os.stat_result | None]] = []
        try:
            shards = os.listdir(self.blobs_dir)
        except (FileNotFoundError, NotADirectoryError):
            return entries
        for shard in shards:
            shard_dir = os.path.join(self.blobs_dir, shard)
            try:
                if not stat.S_ISDIR(os.lstat(shard_dir).st_mode):
                    entries.append((shard, None))
                    continue
                names = os.listdir(shard_dir)
            except OSError:
                continue
            for name in names:
                try:
                    entries.append((os.path.join(shard, name), os.lstat(os.path.join(shard_dir, name))))
                except OSError:
                    continue
        return entries

    def blobs(self) -> dict[str, tuple[int, float]]:
        """hash → (size, mtime) of every blob file."""
        return {name.replace(os.sep, ""): (info.st_size, info.st_mtime) for name, info in self._blob_entries()
                if info is not None and stat.S_ISREG(info.st_mode)}

    def debris(self) -> list[str]:
        """Names under blobs/ that are no blob file (a file where a shard directory belongs, a
        directory or link where a blob does): what only damage or tampering leaves."""
        return [name for name, info in self._blob_entries() if info is None or not stat.S_ISREG(info.st_mode)]

    def delete_debris(self, name: str) -> None:
        """Remove one name `debris()` gave."""
        _remove(os.path.join(self.blobs_dir, name))

    def delete_blob(self, digest: str) -> None:
        try:
            os.unlink(self.blob_path(digest))
        except OSError:
            pass

    # -- the size estimate ----------------------------------------------------------------------
    # `usage` holds "base <bytes> <unix time>" (the blobs' total as gc last measured it), then
    # one "+<bytes>" line appended by each commit. Appends happen under the shared gc lock and
    # gc rewrites the file under the exclusive one, so no addition is lost.

    def add_usage(self, new_bytes: int) -> None:
        fd = os.open(self._usage_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, f"+{new_bytes}\n".encode())
        finally:
            os.close(fd)

    def read_usage(self) -> tuple[int, float] | None:
        """(estimated blob bytes, when gc last measured them), None when unknown."""
        try:
            text = self._read_trusted(self._usage_path, "usage file").decode()
            lines = text.split("\n")
            _, base, measured = lines[0].split()
            return int(base) + sum(int(line[1:]) for line in lines[1:] if line), float(measured)
        except (OSError, ValueError, UnicodeDecodeError, StoreError):
            return None

    def reset_usage(self, total: int) -> None:
        self._write_file(self._usage_path, [f"base {total} {time.time():.0f}\n".encode()])

    # -- locks ----------------------------------------------------------------------------------

    def lock(self, *, exclusive: bool, blocking: bool = True) -> StoreLock:
        """The store-wide lock: shared by writers while they commit, exclusive for gc."""
        return StoreLock(os.path.join(self.root, "gc.lock"), exclusive, blocking)

    # -- runs -----------------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> str:
        return os.path.join(self.runs_dir, run_id)

    def run_ids(self) -> list[str]:
        """Every run in the store (an empty list when there is no store yet)."""
        if not os.path.lexists(self.root):
            return []
        self.check_readable()
        if not self.exists():
            if self._entries() - _STORE_ENTRIES:
                raise StoreError(f"{self.root} is not a chkpt store (it holds other files)")
            return []
        self._check_dir(self.runs_dir, "store directory")
        try:
            return sorted(os.listdir(self.runs_dir))
        except FileNotFoundError:
            return []

    def create_run(self, meta: dict[str, Any]) -> RunWriter:
        self.create()
        while True:
            run_id = secrets.token_hex(4)
            try:
                os.mkdir(self.run_dir(run_id), 0o700)
                break
            except FileExistsError:
                continue
        return RunWriter(self, run_id, meta)

    def is_live(self, run_id: str) -> bool:
        """Whether a process still holds the run's lock (i.e. is writing it)."""
        try:
            fd = os.open(os.path.join(self.run_dir(run_id), "lock"), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
        finally:
            os.close(fd)
        return False

    def _run_file(self, run_id: str) -> str:
        self.check_readable()
        directory = self.run_dir(run_id)
        self._check_dir(self.runs_dir, "store directory")
        self._check_dir(directory, "run directory")
        return os.path.join(directory, "run.json")

    def read_run(self, run_id: str) -> dict[str, Any]:
        """The run record, checked; `status` "killed" for a writer that died mid-run.

        FileNotFoundError when the run has no record (being created, or debris); Damaged or
        Untrusted when it cannot be read safely.
        """
        path = self._run_file(run_id)
        try:
            meta = records.decode_run(self._read_trusted(path, "run record"))
        except ValueError as exc:
            raise Damaged(f"{path} is damaged ({exc})") from None
        meta["id"] = run_id
        if meta["status"] == "running" and not self.is_live(run_id):
            meta["status"] = "killed"
        return meta

    def run_last_used(self, run_id: str) -> float | None:
        """When the run was last written or loaded (its record's mtime; its directory's without one)."""
        directory = self.run_dir(run_id)
        for path in (os.path.join(directory, "run.json"), directory):
            try:
                return os.lstat(path).st_mtime
            except OSError:
                continue
        return None

    def touch_run(self, run_id: str) -> None:
        """Mark the run as used now (loads count for the LRU cap)."""
        try:
            os.utime(os.path.join(self.run_dir(run_id), "run.json"), follow_symlinks=False)
        except OSError:
            pass

    def _pin_marker(self, run_id: str) -> str:
        self._run_file(run_id)  # the run's directory is ours (checked) before anything is read or made
        return os.path.join(self.run_dir(run_id), "pinned")

    def pin(self, run_id: str) -> None:
        """Keep the run from eviction: a marker file of its own, which rewrites of run.json cannot lose."""
        marker = self._pin_marker(run_id)
        if not os.path.lexists(marker):
            self._write_file(marker, [b""])

    def unpin(self, run_id: str) -> None:
        try:
            os.unlink(self._pin_marker(run_id))
        except FileNotFoundError:
            pass

    def is_pinned(self, run_id: str) -> bool:
        """Whether the run carries a pin marker (a regular file; anything else is no pin)."""
        try:
            return stat.S_ISREG(os.lstat(self._pin_marker(run_id)).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def delete_run(self, run_id: str) -> None:
        """Remove a run at once: moved out of runs/ in one rename, then deleted from tmp/.

        Killed halfway, the run is either still whole or gone, and the rest of its directory
        sits in tmp/ until gc's next sweep.
        """
        trash = os.path.join(self.tmp_dir, f"run-{run_id}-{secrets.token_hex(4)}")
        try:
            os.rename(self.run_dir(run_id), trash)
        except FileNotFoundError:
            return
        except OSError:
            trash = self.run_dir(run_id)
        _remove(trash)

    # -- checkpoints ----------------------------------------------------------------------------

    def _checkpoints_dir(self, run_id: str) -> str:
        return os.path.join(self.run_dir(run_id), "checkpoints")

    def checkpoint_path(self, run_id: str, index: int) -> str:
        return os.path.join(self._checkpoints_dir(run_id), f"{index:06d}.json")

    def checkpoint_indexes(self, run_id: str) -> list[int]:
        """The indexes of the run's committed checkpoints; Damaged when they cannot be listed."""
        directory = self._checkpoints_dir(run_id)
        try:
            self._check_dir(directory, "checkpoint directory")
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def checkpoint_mtimes(self, run_id: str) -> dict[int, float]:
        """index → modification time of each committed checkpoint's manifest, in index order;
        Damaged when they cannot be listed."""
        directory = self._checkpoints_dir(run_id)
        found: dict[int, float] = {}
        try:
            self._check_dir(directory, "checkpoint directory")
            with os.scandir(directory) as entries:
                for entry in entries:
                    stem = entry.name[:-5]
                    if entry.name.endswith(".json") and stem.isdigit():
                        try:
                            found[int(stem)] = entry.stat(follow_symlinks=False).st_mtime
                        except FileNotFoundError:
                            continue  # thinned meanwhile
        except FileNotFoundError:
            return {}
        return dict(sorted(found.items()))

    def read_checkpoint(self, run_id: str, index: int) -> dict[str, Any]:
        """A checkpoint's manifest, checked (FileNotFoundError once thinned away)."""
        self._run_file(run_id)
        path = self.checkpoint_path(run_id, index)
        try:
            manifest = records.decode_manifest(self._read_trusted(path, "manifest"))
        except ValueError as exc:
            raise Damaged(f"{path} is damaged ({exc})") from None
        if manifest["index"] != index:
            raise Damaged(f"{path} is damaged (it says it is checkpoint {manifest['index']})")
        return manifest

    def delete_checkpoint(self, run_id: str, index: int) -> None:
        try:
            os.unlink(self.checkpoint_path(run_id, index))
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            shutil.rmtree(self.checkpoint_path(run_id, index), ignore_errors=True)

    # -- leftovers of killed processes ----------------------------------------------------------

    def leftovers(self) -> list[Leftover]:
        """What sits in tmp/: files being written, runs being deleted, debris of killed processes."""
        found: list[Leftover] = []
        try:
            names = os.listdir(self.tmp_dir)
        except OSError:
            return found
        for name in names:
            path = os.path.join(self.tmp_dir, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            size = info.st_size
            if stat.S_ISDIR(info.st_mode):  # a deleted run's directory, if its deletion was cut short
                size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
            found.append(Leftover(name, size, info.st_mtime))
        return found

    def remove_leftover(self, name: str) -> None:
        _remove(os.path.join(self.tmp_dir, name))


class RunWriter:
    """The one process writing a run: holds its lock, adds checkpoints, records its end."""

    def __init__(self, store: Store, run_id: str, meta: dict[str, Any]) -> None:
        self.store = store
        self.run_id = run_id
        self.meta = dict(meta, id=run_id)
        directory = store.run_dir(run_id)
        os.mkdir(os.path.join(directory, "checkpoints"), 0o700)
        self._lock_fd = _hold_lock(os.path.join(directory, "lock"), fcntl.LOCK_EX)
        self.next_index = 1
        self.triggers: dict[int, str] = {}  # of this process's checkpoints, for thinning
        self._parts: dict[int, dict[str, Any]] = {}  # index → its records.summary_part, not read again
        self.save_meta()

    def save_meta(self) -> None:
        path = os.path.join(self.store.run_dir(self.run_id), "run.json")
        self.store._write_file(path, [records.encode(self.meta)])

    def reserve_index(self) -> int:
        """The index of the next checkpoint, taken now although it commits later."""
        index = self.next_index
        self.next_index += 1
        return index

    def add_checkpoint(self, manifest: dict[str, Any], index: int) -> None:
        """Commit the manifest of checkpoint `index`, whose blobs are all written."""
        manifest = dict(manifest, index=index, run=self.run_id)
        self.store._write_file(self.store.checkpoint_path(self.run_id, index), [records.encode(manifest)])
        self.triggers[index] = manifest["trigger"]

    def save_summary(self, manifest: dict[str, Any] | None = None) -> None:
        """Rewrite run.json with a heartbeat and the summary of the checkpoints now on disk.

        `manifest`, just committed, is added to the summary kept so far when nothing else
        changed; after thinning (or without one) the summary is made again, from what this
        process kept of its own manifests and by reading the others.
        """
        indexes = self.store.checkpoint_indexes(self.run_id)
        summary = self.meta.get("summary")
        if manifest is not None:
            self._parts[manifest["index"]] = records.summary_part(manifest)
        self._parts = {index: part for index, part in self._parts.items() if index in indexes}
        if manifest is not None and summary is not None and [*summary["indexes"], manifest["index"]] == indexes:
            summary = records.add_to_summary(summary, self._parts[manifest["index"]])
        else:
            summary = records.summarize([])
            for index in indexes:
                part = self._parts.get(index)
                if part is None:
                    try:
                        part = records.summary_part(self.store.read_checkpoint(self.run_id, index))
                    except (FileNotFoundError, StoreError):
                        continue
                summary = records.add_to_summary(summary, part)
        self.meta["summary"] = summary
        self.meta["heartbeat"] = time.time()
        self.save_meta()

    def thin(self, keep: int) -> None:
        """Keep at most `keep` checkpoints: the first, exit/crash/signal ones, then the latest."""
        indexes = self.store.checkpoint_indexes(self.run_id)
        if keep <= 0 or len(indexes) <= keep:
            return
        protected = {indexes[0], indexes[-1]}
        protected.update(i for i in indexes if self.triggers.get(i) in records.FINAL_TRIGGERS)
        removable = [i for i in indexes if i not in protected]
        for index in removable[: max(0, len(indexes) - keep)]:
            self.store.delete_checkpoint(self.run_id, index)

    def close(self) -> None:
        if self._lock_fd is not None:
            _release_lock(self._lock_fd)
            self._lock_fd = None
