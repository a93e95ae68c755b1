"""The store over any backend: blobs, run records, manifests, pins, usage and leftovers.

Everyone else (the writer, gc, doctor, the API) goes through `Store`'s methods and never names
a file of the store (layout.py does). Commit protocol: a checkpoint's blobs first, its
manifest last, so readers only see complete checkpoints. Writing runs needs a local backend
(its locks); a bucket is written by the uploader (sync.py) and read through a cache.

A stored file is used only once its content was verified in this process: every read checks
the hash of what it read, and a blob found already stored is read back and checked the first
time this process would reuse it (a damaged one is deleted and written again from the data).
Run records and manifests are read whole at every call (with the trust checks), but decoded
and checked once per content: a file whose bytes are those decoded before gives that record
again, so loading many values of one checkpoint one by one reads its manifest each time but
parses it once.
"""

from __future__ import annotations

import math
import os
import time

import xxhash

from chkpt import records
from chkpt.store import codec, layout
from chkpt.store.errors import Damaged, StoreError
from chkpt.store.local import MMAP_THRESHOLD, LocalBackend
from chkpt.store.threads import parallel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    from chkpt.store.backend import Backend, Entry
    from chkpt.store.locks import FileLock

MARKER_TEXT = f"chkpt store {records.FORMAT}\n"
CHUNK_SIZE = 4 << 20  # buffers are stored in chunks of this size (docs/store-format.md says why)
PARALLEL_READ = 16 << 20  # from this many bytes, a buffer's chunks are read by several threads
READ_THREADS = min(4, os.cpu_count() or 1)
RECORDS_KEPT = 4 << 20  # bytes of run records and manifests kept decoded (`_decoded`), the newest

# a record file (where it is) → (its bytes, the record decoded from them); process-wide, for
# every Store over the same files
_decoded: dict[str, tuple[bytes, dict[str, Any]]] = {}
_decoded_bytes = [0]  # the bytes of the records in `_decoded`


def _forget_decoded(where: str) -> None:
    known = _decoded.pop(where, None)
    if known is not None:
        _decoded_bytes[0] -= len(known[0])
# the pack read last by any Store of this process: (its reference, its bytes, checked against its
# hash); content-addressed, so they are that pack's bytes wherever they were read
_last_pack: list[tuple[dict[str, Any], Any]] = []


def hash_buffer(data: Any) -> str:
    """The content address of a bytes-like object (hashed in place, never copied)."""
    return xxhash.xxh3_128_hexdigest(data)


def is_script(path: Any, wanted: str) -> bool:
    """Whether a run's script `path` is `wanted`: a path (relative to the cwd) or a file name."""
    if not isinstance(path, str):
        return False
    return path == os.path.abspath(wanted) or os.path.basename(path) == wanted


def _allocate(size: int) -> Any:
    """Writable memory for `size` bytes read from the store: large blocks are anonymous maps,
    whose pages the kernel gives on first write (a bytearray would be zeroed first, a second
    pass over the memory)."""
    if size < MMAP_THRESHOLD:
        return bytearray(size)
    import mmap

    return mmap.mmap(-1, size)


class Leftover:
    """Something in tmp/ (a file being written, or a deleted run's directory)."""

    __slots__ = ("mtime", "name", "size")

    def __init__(self, name: str, size: int, mtime: float) -> None:
        self.name = name
        self.size = size
        self.mtime = mtime


class Store:
    """A store over a backend (a local directory when given a path)."""

    def __init__(self, backend: Backend | str) -> None:
        self.backend: Any = LocalBackend(backend) if isinstance(backend, str) else backend
        self._format: int | None = None  # the marker's, once read
        self._verified: set[str] = set()  # blob keys whose content this process wrote or checked

    @property
    def location(self) -> str:
        """Where the store is, for people: its root (a bucket's URL for a shared store)."""
        return str(self.backend.location)

    @property
    def shared(self) -> bool:
        """Whether many machines write it (a bucket)."""
        return bool(self.backend.shared)

    def path(self, key: str) -> str:
        """The file `key` of a local store."""
        return str(self.backend.path(key))

    # -- set-up ---------------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether a store is here (a missing one is not an error for readers: nothing saved yet)."""
        found = self.backend.stat(layout.RUNS)
        return found is not None and found.kind == "folder"

    def check_readable(self) -> None:
        """Raise Untrusted/StoreError unless this store may be read (done by every read)."""
        self.backend.check_root()
        if self._format is None:
            self._format = self._read_format()

    def _read_format(self) -> int:
        """The format its marker names (the current one for a store without a marker yet);
        StoreError for a format this chkpt does not read."""
        try:
            text = self.backend.get(layout.MARKER)
        except FileNotFoundError:
            return records.FORMAT
        prefix, _, number = text.decode(errors="replace").strip().rpartition(" ")
        if prefix != "chkpt store" or not number.isdigit() or not number.isascii() or len(number) > 6:
            raise Damaged(f"{self.backend.where(layout.MARKER)} is damaged (it is not a chkpt store marker)")
        if int(number) not in records.FORMATS_READ:
            raise StoreError(f"the store {self.location} is in format {number}, which this chkpt cannot read "
                             f"(it reads formats {', '.join(map(str, records.FORMATS_READ))}); "
                             "upgrade chkpt or use another store")
        return int(number)

    def _root_entries(self) -> set[str]:
        try:
            return {entry.name for entry in self.backend.list("", deep=False)}
        except OSError as exc:
            raise StoreError(f"{self.location} cannot be read ({exc.strerror})") from None

    def create(self) -> None:
        """Make the store here (user-only permissions), or check that the one here is ours.

        Only a missing or empty directory, or one that already is a store, is used: anything
        else is refused and left untouched.
        """
        self.backend.make_root()
        if self._root_entries() - layout.ROOT_ENTRIES:
            raise StoreError(f"{self.location} is not empty and not a chkpt store; not using it")
        # runs/ last: `exists()` looks for it, so a concurrent gc never finds a half-made store
        for folder in (layout.TMP, layout.BLOBS, layout.RUNS):
            self.backend.make_folder(folder)
        # this format reads the older ones: an older store is upgraded (a newer one is refused)
        if self.backend.stat(layout.MARKER) is None or self._read_format() < records.FORMAT:
            self.backend.put_atomic(layout.MARKER, [MARKER_TEXT.encode()])
        self._format = records.FORMAT

    def probe_writable(self) -> None:
        """Write and remove a small file, as a checkpoint would (for `chkpt doctor`)."""
        self.create()
        probe = layout.temporary("probe-")
        self.backend.put_atomic(probe, [b""])
        self.backend.delete(probe)

    # -- blobs ----------------------------------------------------------------------------------

    def has_blob(self, digest: str, size: int) -> dict[str, Any] | None:
        """The reference to the blob if it is stored whole, raw or compressed, and its content is
        right; reusing it refreshes its mtime (gc's grace period).

        A blob of the wrong size (cut short by a power loss) counts as absent, and so does one
        whose content does not match its name, read back the first time this process would
        reuse it: it is deleted, so the data is written again instead of referred to.
        """
        for ref in (records.blob_ref(digest, size), records.blob_ref(digest, size, codec.CODEC, 0)):
            key = layout.blob(records.blob_key(ref))
            found = self.backend.stat(key)
            if found is None or found.kind != "file" or ("codec" not in ref and found.size != size):
                continue
            if "codec" in ref:
                ref["stored"] = found.size
            if key not in self._verified:
                try:
                    self.read_ref(ref)
                except (FileNotFoundError, StoreError):
                    self.backend.delete(key)
                    continue
            self.backend.touch(key)
            if not self.shared and self.backend.stat(key) is None:
                continue  # a raw chunk its writer replaced by its compressed form meanwhile (`recompress`)
            return ref
        return None

    def find_blobs(self, sizes: dict[str, int], workers: int) -> dict[str, dict[str, Any] | None]:
        """`has_blob` of each hash → size, by up to `workers` threads (reading back is most of it)."""
        digests = list(sizes)
        return dict(zip(digests, parallel(lambda digest: self.has_blob(digest, sizes[digest]), digests, workers),
                        strict=True))

    def write_blob(self, name: str, chunks: Iterable[Any], verify: Callable[[], bool] | None = None) -> bool:
        """Store the blob file `name` (a hash, or with a codec's suffix), given as consecutive
        bytes-like chunks; False when `verify()` (asked before the blob appears) says they
        changed meanwhile."""
        key = layout.blob(name)
        written = bool(self.backend.put_atomic(key, chunks, verify))
        if written:
            self._verified.add(key)
        return written

    def write_compressed(self, digest: str, data: Any, verify: Callable[[], bool] | None = None, *,
                         during_pause: bool = False) -> dict[str, Any] | None:
        """Store `data` (whose hash is `digest`) compressed, or raw when that does not pay
        (`during_pause`: when it saves less than half, codec.PAUSE_SAVING); returns its
        reference, None when `verify()` (as `write_blob`) says it changed meanwhile."""
        size = memoryview(data).nbytes
        packed = (codec.compress(data, codec.PAUSE_SAVING, codec.PAUSE_SAMPLE) if during_pause
                  else codec.compress(data))
        if packed is None:
            return records.blob_ref(digest, size) if self.write_blob(digest, [data], verify) else None
        ref = records.blob_ref(digest, size, codec.CODEC, len(packed))
        return ref if self.write_blob(records.blob_key(ref), [packed], verify) else None

    def recompress(self, ref: dict[str, Any]) -> None:
        """Compress a raw blob this process has just written (from the page cache, into a file of
        its own), where that pays: `ref` becomes the compressed blob's reference, and the raw
        file goes unless another process reused it meanwhile (then both stay, either reads)."""
        key = layout.blob(ref["hash"])
        with self.backend.open(key) as opened:
            if opened.size != ref["size"]:
                return
            mapped = opened.map()
            try:
                packed = codec.compress(mapped)
            finally:
                mapped.close()
        if packed is None:
            return
        compressed = records.blob_ref(ref["hash"], ref["size"], codec.CODEC, len(packed))
        self.write_blob(records.blob_key(compressed), [packed])
        ref.update(compressed)
        self.backend.delete_written(key)

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

    def keep_written(self) -> None:
        """The blobs written so far are referred to by a committed record now."""
        self.backend.forget_written()

    def undo_written(self) -> None:
        """A checkpoint failed (a full disk): delete the blobs it wrote, which nothing refers to,
        so the program's own next write finds the space chkpt took."""
        self.backend.undo_written()

    def _open_blob(self, name: str) -> Any:
        """The blob file `name`, opened after the checks every read makes."""
        self.check_readable()
        try:
            return self.backend.open(layout.blob(name))
        except FileNotFoundError:
            raise StoreError(f"blob {name} is missing from {self.backend.where(layout.BLOBS)}") from None

    def _checked(self, ref: dict[str, Any], data: Any) -> Any:
        key = records.blob_key(ref)
        if hash_buffer(data) != ref["hash"]:
            raise Damaged(f"blob {key} is corrupt (its content does not match its hash)")
        self._verified.add(layout.blob(key))
        return data

    def read_ref(self, ref: dict[str, Any]) -> Any:
        """The bytes of the blob a record refers to, checked against its hash (a packed part's
        pack is read once for all the parts loaded after it)."""
        if "pack" in ref:
            pack = ref["pack"]
            last = _last_pack[:1]
            if not last or last[0][0] != pack:
                last = _last_pack[:] = [(pack, self.read_ref(pack))]
            # writable, as every buffer chkpt loads: arrays loaded from it can be changed
            part = bytearray(memoryview(last[0][1])[ref["offset"]:ref["offset"] + ref["size"]])
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
        """A buffer of a manifest's variable: its chunks read (and decompressed) straight into
        one block of memory, by several threads when it is large (one raw blob is
        memory-mapped as `read_blob` does)."""
        chunks = records.chunks(buffer)
        if len(chunks) == 1:
            return self.read_ref(chunks[0])
        total = sum(ref["size"] for ref in chunks)
        data = _allocate(total)
        view = memoryview(data)
        places = []
        offset = 0
        for ref in chunks:
            places.append((ref, view[offset:offset + ref["size"]]))
            offset += ref["size"]
        packed = [place for place in places if "pack" in place[0]]
        for ref, target in packed:  # a short last chunk, stored with the checkpoint's small parts
            target[:] = self.read_ref(ref)
        parallel(self._read_into, [place for place in places if "pack" not in place[0]],
                 READ_THREADS if total >= PARALLEL_READ else 1)
        return data

    def _read_into(self, place: tuple[dict[str, Any], memoryview]) -> None:
        ref, target = place
        if "codec" in ref:
            self._read_compressed(ref, target)
        else:
            self._read_raw_into(ref, target)

    def _read_raw_into(self, ref: dict[str, Any], target: memoryview) -> None:
        with self._open_blob(ref["hash"]) as opened:
            if opened.size != ref["size"]:
                raise Damaged(f"blob {ref['hash']} is truncated ({opened.size} of {ref['size']} bytes)")
            done = opened.read_into(target)
            if done != ref["size"]:
                raise Damaged(f"blob {ref['hash']} is truncated ({done} of {ref['size']} bytes)")
        self._checked(ref, target)

    def _read_compressed(self, ref: dict[str, Any], target: memoryview) -> None:
        key = records.blob_key(ref)
        with self._open_blob(key) as opened:
            packed = opened.read()
        if len(packed) != ref["stored"]:
            raise Damaged(f"blob {key} is truncated ({len(packed)} of {ref['stored']} bytes)")
        try:
            codec.decompress_into(packed, target)
        except Exception as exc:  # the header, zstd's errors, a frame of another size
            raise Damaged(f"blob {key} is corrupt ({exc})") from None
        self._checked(ref, target)

    def read_blob(self, digest: str, expected_size: int) -> Any:
        """The raw blob's bytes, checked against its hash; large ones memory-mapped copy-on-write."""
        with self._open_blob(digest) as opened:
            if opened.size != expected_size:
                raise Damaged(f"blob {digest} is truncated ({opened.size} of {expected_size} bytes)")
            data = bytearray(opened.read()) if opened.size < MMAP_THRESHOLD else opened.map()
        return self._checked(records.blob_ref(digest, expected_size), data)

    def blobs(self) -> dict[str, tuple[int, float]]:
        """blob name → (size, mtime) of every blob file."""
        try:
            found = self.backend.list(layout.BLOBS)
        except FileNotFoundError:
            return {}
        return {name: (entry.size, entry.mtime) for entry in found
                if (name := layout.blob_name(entry.key)) is not None}

    def debris(self) -> list[str]:
        """Keys under blobs/ that are no blob file (a file where a shard folder belongs, a
        folder, link or other file where a blob does): what only damage or tampering leaves."""
        found: list[str] = []
        try:
            shards = self.backend.list(layout.BLOBS, deep=False)
        except (FileNotFoundError, StoreError):
            return found
        for shard in shards:
            if shard.kind != "folder":
                found.append(shard.key)
                continue
            try:
                entries = self.backend.list(shard.key, deep=False)
            except FileNotFoundError:
                continue
            except StoreError:
                found.append(shard.key)
                continue
            found.extend(e.key for e in entries if e.kind != "file" or layout.blob_name(e.key) is None)
        return found

    def data_files(self) -> list[Entry]:
        """Every data file (layout.is_data), whatever the layout of its folders."""
        try:
            top = self.backend.list("", deep=False)
        except FileNotFoundError:
            return []
        return [entry for folder in top if folder.kind == "folder" and folder.name not in layout.NOT_DATA
                for entry in self.backend.list(folder.key)]

    def delete(self, key: str) -> None:
        """Remove one file (a blob, or a key `debris()` gave)."""
        self.backend.delete(key)

    def delete_blob(self, name: str) -> None:
        self.backend.delete(layout.blob(name))

    # -- the size estimate ----------------------------------------------------------------------
    # `usage` holds "base <bytes> <unix time>" (the blobs' total as gc last measured it), then
    # one "+<bytes>" line appended by each commit. Appends happen under the shared gc lock and
    # gc rewrites the file under the exclusive one, so no addition is lost.

    def add_usage(self, new_bytes: int) -> None:
        try:
            self.backend.append(layout.USAGE, f"+{new_bytes}\n".encode())
        except Damaged:  # something else where the file belongs: gone, the next gc measures again
            self.backend.delete(layout.USAGE)

    def read_usage(self) -> tuple[int, float] | None:
        """(estimated blob bytes, when gc last measured them), None when unknown or implausible."""
        try:
            lines = self.backend.get(layout.USAGE).decode().split("\n")
            _, base, measured = lines[0].split()
            total = int(base) + sum(int(line[1:]) for line in lines[1:] if line)
            when = float(measured)
        except (OSError, ValueError, UnicodeDecodeError, StoreError):
            return None
        if not (0 <= total < 1 << 63 and math.isfinite(when) and 0 <= when <= time.time() + 86400):
            return None
        return total, when

    def reset_usage(self, total: int) -> None:
        self.backend.put_atomic(layout.USAGE, [f"base {total} {time.time():.0f}\n".encode()])

    # -- locks ----------------------------------------------------------------------------------

    def lock(self, *, exclusive: bool, blocking: bool = True) -> FileLock:
        """The store-wide lock: shared by writers while they commit, exclusive for gc."""
        return self.backend.lock(layout.GC_LOCK, exclusive=exclusive, blocking=blocking)

    # -- runs -----------------------------------------------------------------------------------

    def run_ids(self) -> list[str]:
        """Every run in the store (an empty list when there is no store yet)."""
        try:
            self.check_readable()
        except FileNotFoundError:
            return []
        try:
            entries = self.backend.list(layout.RUNS, deep=False)
        except FileNotFoundError:
            if self._root_entries() - layout.ROOT_ENTRIES:
                raise StoreError(f"{self.location} is not a chkpt store (it holds other files)") from None
            return []
        return sorted(entry.name for entry in entries)

    def find_run_ids(self, prefix: str) -> list[str]:
        """The ids of the runs whose id starts with `prefix`: `prefix` alone when it is a run's whole
        id (looked up without listing every run)."""
        if layout.valid_run_id(prefix) and self.backend.stat(layout.run_record(prefix)) is not None:
            return [prefix]
        return [run_id for run_id in self.run_ids() if run_id.startswith(prefix)]

    def create_run(self, meta: dict[str, Any]) -> RunWriter:
        self.create()
        while True:
            run_id = layout.new_run_id()
            if self.backend.put_if_absent(layout.run_lock(run_id), [b""]):
                return RunWriter(self, run_id, meta)

    def is_live(self, run_id: str) -> bool:
        """Whether a process still holds the run's lock (i.e. is writing it)."""
        return bool(self.backend.held(layout.run_lock(run_id)))

    def read_run(self, run_id: str) -> dict[str, Any]:
        """The run record, checked; `status` "killed" for a writer that died mid-run.

        FileNotFoundError when the run has no record (being created, or debris); Damaged or
        Untrusted when it cannot be read safely.
        """
        self.check_readable()
        meta = self._read_record(layout.run_record(run_id), records.decode_run)
        meta["id"] = run_id
        if meta["status"] == "running" and not self.is_live(run_id):
            meta["status"] = "killed"
        return meta

    def _read_record(self, key: str, decode: Callable[[bytes], dict[str, Any]]) -> dict[str, Any]:
        """The record in file `key`, read now and decoded (a copy of its top level: the caller may
        change that); decoded once while its bytes stay the same. Damaged when it cannot be."""
        data = self.backend.get(key)
        where = self.backend.where(key)
        known = _decoded.get(where)
        if known is None or known[0] != data:
            try:
                known = (data, decode(data))
            except ValueError as exc:
                raise Damaged(f"{where} is damaged ({exc})") from None
            _forget_decoded(where)
            _decoded[where] = known
            _decoded_bytes[0] += len(data)
            while _decoded_bytes[0] > RECORDS_KEPT and len(_decoded) > 1:
                _forget_decoded(next(iter(_decoded), ""))  # the oldest
        return dict(known[1])

    def run_last_used(self, run_id: str) -> float | None:
        """When the run was last written or loaded (its record's mtime; its folder's without one)."""
        for key in (layout.run_record(run_id), layout.run_dir(run_id)):
            found = self.backend.stat(key)
            if found is not None:
                return found.mtime
        return None

    def touch_run(self, run_id: str) -> None:
        """Mark the run as used now (loads count for the LRU cap)."""
        self.backend.touch(layout.run_record(run_id))

    def _check_run(self, run_id: str) -> None:
        """The run's folder is ours (checked) before anything in it is read or made."""
        self.check_readable()
        self.backend.list(layout.run_dir(run_id), deep=False)

    def pin(self, run_id: str) -> None:
        """Keep the run from eviction: a marker file of its own, which rewrites of run.json cannot lose."""
        self._check_run(run_id)
        self.backend.put_if_absent(layout.pin_marker(run_id), [b""])

    def unpin(self, run_id: str) -> None:
        self._check_run(run_id)
        self.backend.delete(layout.pin_marker(run_id))

    def is_pinned(self, run_id: str) -> bool:
        """Whether the run carries a pin marker (a regular file; anything else is no pin)."""
        found = self.backend.stat(layout.pin_marker(run_id))
        return found is not None and found.kind == "file"

    def delete_run(self, run_id: str) -> None:
        """Remove a run at once: it leaves every listing in one step."""
        self.backend.delete_all(layout.run_dir(run_id))

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint_mtimes(self, run_id: str) -> dict[int, float]:
        """index → modification time of each committed checkpoint's manifest, in index order;
        Damaged when they cannot be listed."""
        try:
            entries = self.backend.list(layout.checkpoints(run_id), deep=False)
        except FileNotFoundError:
            return {}
        found = {}
        for entry in entries:
            index = layout.manifest_index(entry.name)
            if index is not None:
                found[index] = entry.mtime
        return dict(sorted(found.items()))

    def checkpoint_indexes(self, run_id: str) -> list[int]:
        """The indexes of the run's committed checkpoints; Damaged when they cannot be listed."""
        return list(self.checkpoint_mtimes(run_id))

    def read_checkpoint(self, run_id: str, index: int) -> dict[str, Any]:
        """A checkpoint's manifest, checked (FileNotFoundError once thinned away)."""
        self.check_readable()
        key = layout.manifest(run_id, index)
        manifest = self._read_record(key, records.decode_manifest)
        if manifest["index"] != index:
            raise Damaged(f"{self.backend.where(key)} is damaged (it says it is checkpoint {manifest['index']})")
        return manifest

    def delete_checkpoint(self, run_id: str, index: int) -> None:
        self.backend.delete(layout.manifest(run_id, index))

    # -- leftovers of killed processes ----------------------------------------------------------

    def leftovers(self) -> list[Leftover]:
        """What sits in tmp/: files being written, runs being deleted, debris of killed processes."""
        try:
            entries = self.backend.list(layout.TMP, deep=False)
        except (OSError, StoreError):
            return []
        found = []
        for entry in entries:
            size = entry.size
            if entry.kind == "folder":  # a deleted run's directory, if its deletion was cut short
                try:
                    size = sum(inner.size for inner in self.backend.list(entry.key))
                except (OSError, StoreError):
                    size = 0
            found.append(Leftover(entry.name, size, entry.mtime))
        return found

    def remove_leftover(self, name: str) -> None:
        self.backend.delete(layout.join(layout.TMP, name))


class RunWriter:
    """The one process writing a run: holds its lock, adds checkpoints, records its end."""

    def __init__(self, store: Store, run_id: str, meta: dict[str, Any]) -> None:
        self.store = store
        self.run_id = run_id
        self.meta = dict(meta, id=run_id)
        self._lock: FileLock | None = store.backend.lock(layout.run_lock(run_id), exclusive=True)
        assert self._lock is not None
        self._lock.acquire()
        self.next_index = 1
        self.triggers: dict[int, str] = {}  # of this process's checkpoints, for thinning
        self._parts: dict[int, dict[str, Any]] = {}  # index → its records.summary_part, not read again
        self.save_meta()

    def save_meta(self) -> None:
        self.store.backend.put_atomic(layout.run_record(self.run_id), [records.encode(self.meta)])
        self.store.keep_written()  # the record refers to what was written before it (its source)

    def keep_locked(self) -> None:
        """Take the run's lock again if the program closed its descriptor (os.closerange), which
        released it: the run stays live for readers and gc."""
        if self._lock is not None and not self._lock.holds():
            self._lock.release()  # forgets the descriptor, which is the program's now
            self._lock.acquire()

    def reserve_index(self) -> int:
        """The index of the next checkpoint, taken now although it commits later."""
        index = self.next_index
        self.next_index += 1
        return index

    def add_checkpoint(self, manifest: dict[str, Any], index: int) -> None:
        """Commit the manifest of checkpoint `index`, whose blobs are all written."""
        manifest = dict(manifest, index=index, run=self.run_id)
        self.store.backend.put_atomic(layout.manifest(self.run_id, index), [records.encode(manifest)])
        self.store.keep_written()
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
        """Keep at most `keep` checkpoints: the first, exit/crash/signal/return ones, then the latest."""
        indexes = self.store.checkpoint_indexes(self.run_id)
        if keep <= 0 or len(indexes) <= keep:
            return
        protected = {indexes[0], indexes[-1]}
        protected.update(i for i in indexes if self.triggers.get(i) in (*records.FINAL_TRIGGERS, "return"))
        removable = [i for i in indexes if i not in protected]
        for index in removable[: max(0, len(indexes) - keep)]:
            self.store.delete_checkpoint(self.run_id, index)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
