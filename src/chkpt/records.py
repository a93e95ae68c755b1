"""The schema of the store's JSON files: run records and checkpoint manifests.

Writers build them here and readers decode them here, so each field is named in one place.
Store files are untrusted input: `decode_run` and `decode_manifest` check every field's type
and range (a time of 1e300, NaN or -Infinity, a size past 2**63, a negative count) and raise
`ValueError` with a sentence naming the field, so a damaged file marks its run or checkpoint
as damaged instead of surfacing as a traceback somewhere in a reader (or hiding every run).
"""

from __future__ import annotations

import json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FORMAT = 2  # the store format these records belong to (format 1 records are read too)
FORMATS_READ = (1, 2)
CODECS = ("zstd",)  # how a compressed blob's bytes were compressed
# cell: after a notebook cell; return: when the script's main() returned (its final locals)
TRIGGERS = ("periodic", "explicit", "exit", "crash", "signal", "cell", "return")
FINAL_TRIGGERS = ("exit", "crash", "signal")  # the run ends with them; thinning keeps them
STATUSES = ("running", "finished", "crashed", "interrupted", "killed")  # interrupted: Ctrl-C
KINDS = ("script", "notebook")  # what a run watched: a script (or -m module), or a notebook's kernel
# a notebook cell's state as a checkpoint's `cells` list gives it: the state after it is this
# checkpoint's, the previous checkpoint's (it changed nothing), or not known (no capture followed it)
CELL_STATES = ("this", "previous", None)

_TEXT = (str,)
_OPTIONAL_TEXT = (str, type(None))
_OPTIONAL_INT = (int, type(None))

# The ranges numbers read from the store must lie in; anything else (NaN and the infinities
# included, which Python's json reads) is damage. Sizes, offsets, indexes, line numbers and
# shape extents: what a file offset can be. Times: Unix times up to the year 3000. Durations
# (measured with time.time(), so a clock stepped back can make one negative): up to a century.
MAX_COUNT = 2**63 - 1
MAX_TIME = 32_503_680_000.0
MAX_SECONDS = 100 * 365 * 86400.0


def _blob_ref(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "should be an object with hash and size"
    if not isinstance(value.get("hash"), str) or not value["hash"].isalnum():
        return "has no valid hash"
    if not _is_count(value.get("size")):
        return "has no valid size"
    if "codec" in value and (value["codec"] not in CODECS or not _is_count(value.get("stored"))):
        return "has no valid codec and stored size"
    if "pack" in value:
        pack = value["pack"]
        if not isinstance(pack, dict) or "pack" in pack or _blob_ref(pack):
            return "has no valid pack"
        if not _is_int(value.get("offset")) or not 0 <= value["offset"] <= pack["size"] - value["size"]:
            return "has no valid offset in its pack"
    return None


def _buffer(value: Any) -> str | None:
    """A buffer: its chunks, in order (format 2), or one blob (format 1)."""
    if isinstance(value, dict) and "chunks" in value:
        if not _is_count(value.get("size")):
            return "has no valid size"
        problem = _list_of(_blob_ref)(value["chunks"])
        if problem:
            return f"chunks {problem}"
        if sum(chunk["size"] for chunk in value["chunks"]) != value["size"]:
            return "has chunks that do not add up to its size"
        return None
    return _blob_ref(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return _is_int(value) and 0 <= value <= MAX_COUNT


def _count(value: Any) -> str | None:
    return None if _is_count(value) else "should be a whole number from 0 to 2**63-1"


def _in(low: float, high: float, what: str) -> Any:
    """A check that a number (NaN never is) lies from `low` to `high`."""
    def check_range(value: Any) -> str | None:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return None if number and low <= value <= high else f"should be {what}"
    return check_range


_time = _in(0, MAX_TIME, "a Unix time from 1970 to 3000")
_seconds = _in(-MAX_SECONDS, MAX_SECONDS, "a number of seconds within a century")


def _list_of(check: Any) -> Any:
    def check_list(value: Any) -> str | None:
        if not isinstance(value, list):
            return "should be a list"
        for position, element in enumerate(value):
            problem = check(element)
            if problem:
                return f"item {position} {problem}"
        return None
    return check_list


_TYPE_NAMES = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true/false",
               "NoneType": "null"}


def _types(*types: type) -> Any:
    shown = [t.__name__ for t in types if not (t is int and float in types)]  # a float may be whole
    names = " or ".join(_TYPE_NAMES[name] for name in shown)

    def check_type(value: Any) -> str | None:
        if isinstance(value, bool) and bool not in types:
            return f"should be {names}"
        return None if isinstance(value, types) else f"should be {names}"
    return check_type


def _text_list(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return "should be a list of texts"
    return None


def _text_map(value: Any) -> str | None:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return "should be an object of texts"
    return None


def _sources(value: Any) -> str | None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and _blob_ref(v) is None for k, v in value.items()):
        return "should be an object of file names and blob references"
    return None


def _skip_entry(value: Any) -> str | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) \
            or not isinstance(value.get("reason"), str):
        return "should be an object with a name and a reason"
    return None


def _frame_entry(value: Any) -> str | None:
    if not isinstance(value, dict) or not isinstance(value.get("function"), str) \
            or not _is_count(value.get("line")):
        return "should be an object with a function and a line"
    if not all(isinstance(value.get(key), str) for key in ("file", "module") if key in value):
        return "should have a text file and module"
    return None


def _cell_entry(value: Any) -> str | None:
    if not isinstance(value, dict) or not isinstance(value.get("source"), str):
        return "should be an object with a source"
    if not (value.get("count") is None or _is_count(value["count"])) or value.get("state") not in CELL_STATES:
        return "should have a whole number count and a state of this, previous or null"
    return None


def _definition(value: Any) -> str | None:
    if not isinstance(value, dict) or not all(isinstance(value.get(key), _OPTIONAL_TEXT)
                                              for key in ("module", "qualname")):
        return "should be an object with a text module and qualname"
    return None


def _definitions(value: Any) -> str | None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and _definition(v) is None
                                              for k, v in value.items()):
        return "should be an object of names and definitions"
    return None


def _optional(check: Any) -> Any:
    return lambda value: None if value is None else check(value)


def _variable(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "should be an object"
    return _problem(value, VARIABLE_FIELDS)


def _one_of(choices: tuple[str, ...]) -> Any:
    def check_choice(value: Any) -> str | None:
        return None if value in choices else f"should be one of {', '.join(choices)}"
    return check_choice


# field → (required, check); extra fields are kept and ignored by readers
VARIABLE_FIELDS: dict[str, tuple[bool, Any]] = {
    "name": (True, _types(str)),
    "type": (True, _types(str)),
    "scope": (True, _types(str)),
    "size": (True, _count),
    "shape": (False, _optional(_list_of(_count))),
    "dtype": (False, _types(*_OPTIONAL_TEXT)),
    "view_of": (False, _types(*_OPTIONAL_TEXT)),
    "pickle": (True, _blob_ref),
    "buffers": (True, _list_of(_buffer)),
}

def is_blob_key(key: str) -> bool:
    """Whether `key` names a blob file (`blob_key`): a hash, or a hash and a codec's suffix."""
    digest, dot, codec = key.partition(".")
    return len(digest) > 2 and digest.isalnum() and (not dot or codec in CODECS)


def _blob_map(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "should be an object of blob sizes"
    for digest, size in value.items():
        if not is_blob_key(digest) or not _is_count(size):
            return f"has an invalid entry for {digest[:40]!r}"
    return None


def _place(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "should be an object"
    return _problem(value, PLACE_FIELDS)


def _summary(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "should be an object"
    return _problem(value, SUMMARY_FIELDS)


# where a checkpoint was taken, as the summary keeps it for the run's crash
PLACE_FIELDS: dict[str, tuple[bool, Any]] = {
    "index": (True, _count),
    "file": (False, _types(*_OPTIONAL_TEXT)),
    "line": (False, _optional(_count)),
    "function": (False, _types(*_OPTIONAL_TEXT)),
}

# what listing and gc need of a run's checkpoints, kept in run.json by its writer at each commit
# (with `heartbeat`, the time it was written); see `current_summary` for when readers may use it
SUMMARY_FIELDS: dict[str, tuple[bool, Any]] = {
    "indexes": (True, _list_of(_count)),
    "blobs": (True, _blob_map),
    "compressed": (False, _blob_map),
    "last_time": (False, _optional(_time)),
    "crash": (False, _optional(_place)),
    "signal": (False, _types(*_OPTIONAL_TEXT)),
}

RUN_FIELDS: dict[str, tuple[bool, Any]] = {
    "id": (True, _types(str)),
    "format": (False, _types(int)),
    "script": (True, _types(*_TEXT)),
    "script_name": (False, _types(*_TEXT)),
    "argv": (True, _text_list),
    "cwd": (False, _types(*_OPTIONAL_TEXT)),
    "python": (False, _types(*_OPTIONAL_TEXT)),
    "executable": (False, _types(*_OPTIONAL_TEXT)),
    "pid": (False, _optional(_count)),
    "host": (False, _types(*_OPTIONAL_TEXT)),
    "started": (True, _time),
    "ended": (False, _optional(_time)),
    "status": (True, _one_of(STATUSES)),
    "exit_code": (False, _types(*_OPTIONAL_INT)),
    "exception": (False, _types(*_OPTIONAL_TEXT)),
    "source": (False, _optional(_blob_ref)),
    "problem": (False, _types(*_OPTIONAL_TEXT)),
    "resumed_from": (False, _types(*_OPTIONAL_TEXT)),
    "kind": (False, _one_of(KINDS)),
    "restored_from": (False, _types(*_OPTIONAL_TEXT)),  # a notebook kernel's: the checkpoint it restored
    "heartbeat": (False, _optional(_time)),
    "summary": (False, _optional(_summary)),
}

MANIFEST_FIELDS: dict[str, tuple[bool, Any]] = {
    "index": (True, _count),
    "run": (True, _types(str)),
    "trigger": (True, _one_of(TRIGGERS)),
    "label": (False, _types(*_OPTIONAL_TEXT)),
    "time": (True, _time),
    "pause": (False, _optional(_seconds)),
    "duration": (False, _optional(_seconds)),
    "file": (False, _types(*_OPTIONAL_TEXT)),
    "line": (False, _optional(_count)),
    "function": (False, _types(*_OPTIONAL_TEXT)),
    "exception": (False, _types(*_OPTIONAL_TEXT)),
    "variables": (True, _list_of(_variable)),
    "aliases": (False, _text_map),
    "skipped": (False, _list_of(_skip_entry)),
    "new_bytes": (False, _count),
    "frame": (False, _types(*_OPTIONAL_TEXT)),
    "boundary": (False, _types(*_OPTIONAL_TEXT)),
    "resumable": (False, _types(bool)),
    "stack": (False, _list_of(_frame_entry)),
    # the run's last checkpoint's: main() (its name) ended without its final locals being saved
    "not_final": (False, _types(*_OPTIONAL_TEXT)),
    "sources": (False, _sources),
    # a notebook's: the cells run since the previous checkpoint, oldest first, the last being the
    # one it follows; and the names bound to modules, functions and classes (restore re-makes them)
    "cells": (False, _list_of(_cell_entry)),
    "definitions": (False, _definitions),
}

_DEFAULTS: dict[str, Any] = {"label": "", "aliases": {}, "skipped": [], "new_bytes": 0, "stack": [],
                             "sources": {}}


def _problem(data: dict[str, Any], fields: dict[str, tuple[bool, Any]]) -> str | None:
    for field, (required, check) in fields.items():
        if field not in data:
            if required:
                return f"field {field!r} is missing"
            continue
        problem = check(data[field])
        if problem:
            return f"field {field!r} {problem}"
    return None


def encode(record: dict[str, Any]) -> bytes:
    """The bytes a record is stored as."""
    # compact: with `indent`, json uses its pure-Python encoder, 5x slower on a large manifest
    return json.dumps(record, separators=(",", ":"), default=str).encode()


def _decode(data: bytes, fields: dict[str, tuple[bool, Any]]) -> dict[str, Any]:
    try:
        record = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    problem = _problem(record, fields)
    if problem:
        raise ValueError(problem)
    for field, default in _DEFAULTS.items():
        if field in fields and record.get(field) is None:
            record[field] = type(default)()
    return record


def decode_run(data: bytes) -> dict[str, Any]:
    """A run record from its bytes, every field checked; ValueError says what is wrong."""
    return _decode(data, RUN_FIELDS)


def decode_manifest(data: bytes) -> dict[str, Any]:
    """A checkpoint manifest from its bytes, every field checked; ValueError says what is wrong."""
    return _decode(data, MANIFEST_FIELDS)


def new_run(**fields: Any) -> dict[str, Any]:
    """A run record for a run that has just started."""
    return dict(fields, status="running", format=FORMAT)


def position(at_top: bool, boundary: str | None, resumable: bool, stack: list[dict[str, Any]]) -> dict[str, Any]:
    """A manifest's fields that say where the program was: its module or a function frame, the
    resume boundary ("statement", "loop" or None), and the user's frames, outermost first
    (`frame_entry`)."""
    return {"frame": "module" if at_top else "function", "boundary": boundary, "resumable": resumable,
            "stack": stack}


def frame_entry(function: str, line: int, file: str | None = None, module: str | None = None) -> dict[str, Any]:
    """A manifest's `stack` entry: a frame of the script (its code's name and line), or of a
    user module (the function's qualified name, its file and the module's name too)."""
    entry: dict[str, Any] = {"function": function, "line": line}
    if file is not None:
        entry.update(file=file, module=module or "")
    return entry


def blob_ref(digest: str, size: int, codec: str | None = None, stored: int | None = None) -> dict[str, Any]:
    """How a record refers to a blob: the hash and size of its bytes, and for a compressed
    blob its codec and the size of the file."""
    ref: dict[str, Any] = {"hash": digest, "size": size}
    if codec is not None:
        ref.update(codec=codec, stored=stored)
    return ref


def blob_key(ref: dict[str, Any]) -> str:
    """The name of the blob file a reference means: its hash, with the codec's suffix when
    compressed (the same bytes may be stored both ways, by two writers)."""
    return f"{ref['hash']}.{ref['codec']}" if "codec" in ref else ref["hash"]


def stored_size(ref: dict[str, Any]) -> int:
    """The bytes a blob takes on disk."""
    return ref["stored"] if "codec" in ref else ref["size"]


def file_ref(ref: dict[str, Any]) -> dict[str, Any]:
    """The reference to the blob file that holds `ref`'s bytes: its pack, for a small value
    stored with others (`{"hash", "size", "pack": {…}, "offset"}`), else itself."""
    pack: dict[str, Any] = ref.get("pack", ref)
    return pack


def chunks(buffer: dict[str, Any]) -> list[dict[str, Any]]:
    """The blob references of a buffer, in order (a format 1 buffer is one blob)."""
    return buffer.get("chunks", [buffer])


def variable_refs(variable: dict[str, Any]) -> list[dict[str, Any]]:
    """Every blob reference of a manifest's variable: its pickle stream, then its buffers' chunks."""
    return [variable["pickle"], *(ref for buffer in variable["buffers"] for ref in chunks(buffer))]


def variable_stored(variable: dict[str, Any]) -> int:
    """The bytes a variable's blobs take on disk (shared blobs counted in full; a packed part
    counted by its own size)."""
    return sum(ref["size"] if "pack" in ref else stored_size(ref) for ref in variable_refs(variable))


def manifest_blobs(manifest: dict[str, Any]) -> dict[str, int]:
    """blob key → size on disk of every blob a checkpoint manifest refers to."""
    blobs = {blob_key(ref): stored_size(ref) for ref in manifest.get("sources", {}).values()}
    for variable in manifest["variables"]:
        for ref in map(file_ref, variable_refs(variable)):
            blobs[blob_key(ref)] = stored_size(ref)
    return blobs


def manifest_compressed(manifest: dict[str, Any]) -> dict[str, int]:
    """blob key → size of its bytes (before compression) of every compressed blob a manifest
    refers to."""
    return {blob_key(ref): ref["size"] for variable in manifest["variables"]
            for ref in map(file_ref, variable_refs(variable)) if "codec" in ref}


def raw_size(blobs: dict[str, int], compressed: dict[str, int]) -> int:
    """The bytes of data in `blobs` (key → size on disk), given `compressed` (key → its bytes)."""
    return sum(compressed.get(key, size) for key, size in blobs.items())


def run_blobs(run: dict[str, Any]) -> dict[str, int]:
    """blob key → size on disk of the blobs a run record itself refers to (the script's source)."""
    source = run.get("source")
    return {blob_key(source): stored_size(source)} if source else {}


def summarize(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The run record's `summary` of these checkpoint manifests (oldest first)."""
    summary: dict[str, Any] = {"indexes": [], "blobs": {}, "compressed": {}, "last_time": None, "crash": None,
                               "signal": None}
    for manifest in manifests:
        summary = add_to_summary(summary, summary_part(manifest))
    return summary


def summary_part(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the run record's summary takes from one checkpoint manifest."""
    return {"index": manifest["index"], "time": manifest["time"], "trigger": manifest["trigger"],
            "label": manifest.get("label"), "place": {key: manifest.get(key) for key in PLACE_FIELDS},
            "blobs": manifest_blobs(manifest), "compressed": manifest_compressed(manifest)}


def add_to_summary(summary: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """`summary` with one more (newer) checkpoint, given by its `summary_part`."""
    added = dict(summary, indexes=[*summary["indexes"], part["index"]], blobs={**summary["blobs"], **part["blobs"]},
                 compressed={**summary.get("compressed", {}), **part["compressed"]}, last_time=part["time"])
    if part["trigger"] == "crash":
        added["crash"] = part["place"]
    if part["trigger"] == "signal" and summary.get("signal") is None:
        added["signal"] = part["label"] or "signal"
    return added


def current_summary(run: dict[str, Any], manifest_mtimes: dict[int, float]) -> dict[str, Any] | None:
    """The run record's summary if it still describes the checkpoint files, whose manifests'
    modification times are given by index; else None (read the manifests).

    It does while it names exactly those files and none of them was written after it: a writer
    killed between a commit and its summary, thinning, or a manifest damaged since all fail.
    """
    summary = run.get("summary")
    written = run.get("heartbeat")
    if summary is None or written is None or summary["indexes"] != list(manifest_mtimes):
        return None
    return summary if all(mtime <= written for mtime in manifest_mtimes.values()) else None
