"""The key layout of a store: the name of every file, and what a name means.

A key is a relative, "/"-separated name, the same in a local store (a path below its root) and
in a bucket (an object key below its prefix):

    STORE                              format marker
    gc.lock                            flock: shared while a checkpoint commits, exclusive for gc
    usage                              running estimate of the blobs' total size (for the cap)
    blobs/ab/cdef…                     raw bytes named by their xxh3-128 hash (a chunk of a buffer,
                                       a pickle stream, or a pack of a checkpoint's small ones)
    blobs/ab/cdef….zstd                the same, compressed
    runs/<run>/run.json                the run record (in a bucket: index/<run>.json, so that
                                       one listing finds every run)
    runs/<run>/lock                    flock'ed by the writing process while it lives
    runs/<run>/pinned                  present when the user pinned the run
    runs/<run>/checkpoints/000001.json one manifest per checkpoint
    tmp/                               files being written, renamed into place when complete

Data is everything below a top-level folder other than runs/, tmp/ and index/: content-addressed
and immutable, whatever its layout. docs/store-format.md has the format.
"""

from __future__ import annotations

import os
import secrets

from chkpt import paths, records

MARKER = "STORE"
GC_LOCK = "gc.lock"
USAGE = "usage"
BLOBS = "blobs"
RUNS = "runs"
TMP = "tmp"
INDEX = "index"
# what a store's root holds (anything else: a directory that is not a store); the config cache
# lives in the default store's root
ROOT_ENTRIES = frozenset({MARKER, GC_LOCK, USAGE, BLOBS, RUNS, TMP, paths.CONFIG_CACHE})
NOT_DATA = frozenset({RUNS, TMP, INDEX})  # top-level folders that hold no content-addressed data
RECORD = "run.json"
CHECKPOINTS = "checkpoints"
MANIFEST_SUFFIX = ".json"


def join(*parts: str) -> str:
    return "/".join(parts)


def new_run_id() -> str:
    return secrets.token_hex(4)


def valid_run_id(text: str) -> bool:
    return 0 < len(text) <= 64 and all(c in "0123456789abcdef" for c in text)


def run_dir(run_id: str) -> str:
    return join(RUNS, run_id)


def run_record(run_id: str) -> str:
    return join(RUNS, run_id, RECORD)


def run_lock(run_id: str) -> str:
    return join(RUNS, run_id, "lock")


def pin_marker(run_id: str) -> str:
    return join(RUNS, run_id, "pinned")


def checkpoints(run_id: str) -> str:
    return join(RUNS, run_id, CHECKPOINTS)


def manifest(run_id: str, index: int) -> str:
    return join(RUNS, run_id, CHECKPOINTS, f"{index:06d}{MANIFEST_SUFFIX}")


def manifest_index(name: str) -> int | None:
    """The index a manifest's file name gives ("000012.json" → 12), None for another name."""
    stem = name[: -len(MANIFEST_SUFFIX)]
    if not name.endswith(MANIFEST_SUFFIX) or not stem.isdigit() or not stem.isascii():
        return None
    return int(stem)


def parse_manifest(key: str) -> tuple[str, int] | None:
    """(run, index) of a manifest's key, None for any other key."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != RUNS or parts[2] != CHECKPOINTS or not valid_run_id(parts[1]):
        return None
    index = manifest_index(parts[3])
    return None if index is None else (parts[1], index)


def index_object(run_id: str) -> str:
    """The key of a run's record in a bucket."""
    return join(INDEX, f"{run_id}.json")


def parse_index_object(key: str) -> str | None:
    """The run whose record `key` is in a bucket, None for any other key."""
    folder, _, name = key.partition("/")
    run_id = name.removesuffix(".json")
    return run_id if folder == INDEX and name.endswith(".json") and valid_run_id(run_id) else None


def bucket_key(key: str) -> str:
    """Where a bucket keeps the file `key` of a store: the same key, but a run's record is its
    index object."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == RUNS and parts[2] == RECORD:
        return index_object(parts[1])
    return key


def blob(name: str) -> str:
    """The key of the blob file `name` (`records.blob_key`: a hash, with a codec's suffix when
    compressed), in a folder per first two digits."""
    return join(BLOBS, name[:2], name[2:])


def blob_name(key: str) -> str | None:
    """The blob name of a key under blobs/, None when it names no blob."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != BLOBS:
        return None
    name = parts[1] + parts[2]
    return name if len(parts[1]) == 2 and records.is_blob_key(name) else None


def is_data(key: str) -> bool:
    """Whether `key` is data: a file below a top-level folder that holds content-addressed,
    immutable files (blobs/ today, any other such folder tomorrow)."""
    top, slash, _ = key.partition("/")
    return bool(slash) and top not in NOT_DATA


def temporary(label: str = "") -> str:
    """A fresh key in tmp/ for a file being written by this process."""
    return join(TMP, f"{label}{os.getpid()}-{secrets.token_hex(6)}")


def what(key: str) -> str:
    """What the file `key` is, for messages ("manifest", "blob", …)."""
    parts = key.split("/")
    if parts[0] == BLOBS:
        return "blob"
    if parts[0] == RUNS and len(parts) == 3:
        return {RECORD: "run record", "lock": "run lock", "pinned": "pin"}.get(parts[2], "file")
    if parts[0] == RUNS and len(parts) == 4:
        return "manifest"
    return {MARKER: "store marker", USAGE: "usage file", GC_LOCK: "store lock"}.get(key, "file")


def folder_kind(key: str) -> str:
    """What the folder `key` is, for messages ("run directory", …)."""
    parts = key.split("/")
    if parts[0] == RUNS and len(parts) == 2:
        return "run directory"
    if parts[0] == RUNS and len(parts) == 3:
        return "checkpoint directory"
    if parts[0] == BLOBS and len(parts) == 2:
        return "blob directory"
    return "store directory"
