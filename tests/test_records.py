"""The schema check of run records and manifests: a damaged field is named, a good record passes."""

from __future__ import annotations

import json

import pytest

from chkpt import records

GOOD_RUN = {"id": "1a2b3c4d", "format": 1, "script": "/w/train.py", "script_name": "train.py",
            "argv": ["train.py", "--fast"], "cwd": "/w", "python": "3.12.1", "pid": 7, "host": "h",
            "started": 1700000000.5, "ended": 1700000100, "status": "finished", "exit_code": 0,
            "source": {"hash": "ab" * 16, "size": 120}}
VARIABLE = {"name": "df", "type": "pandas.DataFrame", "scope": "global", "size": 1200, "shape": [10, 3],
            "dtype": "float64", "pickle": {"hash": "cd" * 16, "size": 900},
            "buffers": [{"hash": "ef" * 16, "size": 240}]}
REF = {"hash": "cd" * 16, "size": 900}
PACK = {"hash": "aa" * 16, "size": 5000, "codec": "zstd", "stored": 700}
# format 2: a buffer in chunks, one compressed, and a pickle stream in a pack
CHUNKED = dict(VARIABLE, name="big", pickle=dict(REF, hash="12" * 16, pack=PACK, offset=100),
               buffers=[{"size": 6, "chunks": [{"hash": "34" * 16, "size": 4, "codec": "zstd", "stored": 2},
                                               {"hash": "56" * 16, "size": 2}]}])
GOOD_MANIFEST = {"index": 3, "run": "1a2b3c4d", "trigger": "crash", "label": "", "time": 1700000050.0,
                 "file": "/w/train.py", "line": 12, "function": "<module>", "exception": "KeyError: 'x'",
                 "variables": [VARIABLE, CHUNKED], "aliases": {"frame": "df"},
                 "skipped": [{"name": "lock", "reason": "a lock cannot be saved"}], "new_bytes": 1140,
                 "frame": "module", "boundary": None, "resumable": False,
                 "stack": [{"function": "<module>", "line": 12},
                           {"function": "fit", "line": 9, "file": "/w/mylib/trainer.py", "module": "mylib.trainer"}],
                 "sources": {"/w/mylib/trainer.py": dict(REF, hash="78" * 16)}}


def encoded(record: dict, **changes) -> bytes:
    return json.dumps({**record, **changes}).encode()


def test_good_records_decode_as_written():
    assert records.decode_run(records.encode(GOOD_RUN)) == GOOD_RUN
    assert records.decode_manifest(records.encode(GOOD_MANIFEST)) == GOOD_MANIFEST


def test_optional_fields_get_their_empty_defaults():
    minimal = {k: GOOD_MANIFEST[k] for k in ("index", "run", "trigger", "time", "variables")}
    decoded = records.decode_manifest(json.dumps(minimal).encode())
    assert (decoded["label"], decoded["aliases"], decoded["skipped"], decoded["stack"], decoded["sources"]) == (
        "", {}, [], [], {})


@pytest.mark.parametrize(("field", "value", "said"), [
    ("ended", "x", "'ended' should be"),
    ("status", 5, "'status' should be one of"),
    ("status", "paused", "'status' should be one of"),
    ("started", "yesterday", "'started' should be"),
    ("argv", 3, "'argv' should be a list of texts"),
    ("argv", ["a", 3], "'argv' should be a list of texts"),
    ("script", None, "'script' should be text"),
    ("pid", True, "'pid' should be"),
    ("source", {"hash": "../../etc", "size": 3}, "'source' has no valid hash"),
    ("source", {"hash": "ab", "size": -1}, "'source' has no valid size"),
])
def test_a_wrong_field_in_a_run_record_is_named(field, value, said):
    with pytest.raises(ValueError, match=said):
        records.decode_run(encoded(GOOD_RUN, **{field: value}))


@pytest.mark.parametrize("field", ["id", "script", "argv", "started", "status"])
def test_a_missing_required_run_field_is_named(field):
    record = {k: v for k, v in GOOD_RUN.items() if k != field}
    with pytest.raises(ValueError, match=f"'{field}' is missing"):
        records.decode_run(json.dumps(record).encode())


@pytest.mark.parametrize(("changes", "said"), [
    ({"variables": {}}, "'variables' should be a list"),
    ({"line": "x"}, "'line' should be"),
    ({"time": None}, "'time' should be"),
    ({"trigger": "sometimes"}, "'trigger' should be one of"),
    ({"variables": [{k: v for k, v in VARIABLE.items() if k != "pickle"}]}, "item 0 field 'pickle' is missing"),
    ({"variables": [dict(VARIABLE, buffers="no")]}, "item 0 field 'buffers' should be a list"),
    ({"variables": [dict(VARIABLE, buffers=[{"hash": "ab"}])]}, "'buffers' item 0 has no valid size"),
    ({"variables": [dict(VARIABLE, shape=["3"])]}, "'shape' item 0 should be"),
    ({"aliases": {"a": 1}}, "'aliases' should be an object of texts"),
    ({"skipped": [{"name": "x"}]}, "'skipped' item 0 should be an object with a name and a reason"),
    ({"stack": [{"function": "f"}]}, "'stack' item 0 should be an object with a function and a line"),
    ({"sources": {"/w/m.py": {"hash": "../x", "size": 1}}}, "'sources' should be an object of file names"),
    ({"resumable": "yes"}, "'resumable' should be true/false"),
    ({"variables": [dict(VARIABLE, buffers=[{"size": 10, "chunks": [{"hash": "ab" * 16, "size": 4}]}])]},
     "'buffers' item 0 has chunks that do not add up to its size"),
    ({"variables": [dict(VARIABLE, buffers=[{"size": 4, "chunks": [{"hash": "../x", "size": 4}]}])]},
     "'buffers' item 0 chunks item 0 has no valid hash"),
    ({"variables": [dict(VARIABLE, pickle=dict(REF, codec="gzip", stored=3))]}, "no valid codec"),
    ({"variables": [dict(VARIABLE, pickle=dict(REF, codec="zstd"))]}, "no valid codec and stored size"),
    ({"variables": [dict(VARIABLE, pickle=dict(REF, pack=dict(PACK, pack=PACK), offset=0))]}, "no valid pack"),
    ({"variables": [dict(VARIABLE, pickle=dict(REF, pack=PACK, offset=PACK["size"] - 10))]},
     "no valid offset in its pack"),
    ({"variables": [dict(VARIABLE, pickle=dict(REF, pack=PACK, offset=-1))]}, "no valid offset in its pack"),
])
def test_a_wrong_field_in_a_manifest_is_named(changes, said):
    with pytest.raises(ValueError, match=said):
        records.decode_manifest(encoded(GOOD_MANIFEST, **changes))


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b"\xff\xfe", b"null", b"[" * 100_000])
def test_what_is_not_a_json_object_is_refused_with_a_sentence(data):
    with pytest.raises(ValueError):
        records.decode_run(data)


def test_the_blobs_a_manifest_and_a_run_refer_to():
    assert records.manifest_blobs(GOOD_MANIFEST) == {"cd" * 16: 900, "ef" * 16: 240, "aa" * 16 + ".zstd": 700,
                                                     "34" * 16 + ".zstd": 2, "56" * 16: 2,
                                                     "78" * 16: 900}  # a module's source, kept for resume
    assert records.manifest_compressed(GOOD_MANIFEST) == {"aa" * 16 + ".zstd": 5000, "34" * 16 + ".zstd": 4}
    assert records.variable_stored(CHUNKED) == 900 + 2 + 2  # a packed part counts its own size
    assert records.raw_size(records.manifest_blobs(GOOD_MANIFEST), records.manifest_compressed(GOOD_MANIFEST)) \
        == 900 + 240 + 5000 + 4 + 2 + 900
    assert [records.is_blob_key(k) for k in ("ab" * 16, "ab" * 16 + ".zstd", "ab" * 16 + ".gz", "a..", "..")] \
        == [True, True, False, False, False]
    assert records.run_blobs(GOOD_RUN) == {"ab" * 16: 120}
    assert records.run_blobs(dict(GOOD_RUN, source=None)) == {}


IMPOSSIBLE = ["NaN", "Infinity", "-Infinity", "1e400", "1e300", "-1", str(2**64)]


def with_raw(record: dict, field: str, literal: str) -> bytes:
    """`record` as JSON with `field` (dotted for a nested one) set to the raw JSON number `literal`."""
    copy = json.loads(json.dumps(record))
    *parents, last = field.split(".")
    target = copy
    for parent in parents:
        target = target[int(parent)] if isinstance(target, list) else target[parent]
    target[int(last) if isinstance(target, list) else last] = "@NUMBER@"
    return json.dumps(copy).replace('"@NUMBER@"', literal).encode()


RUN_WITH_SUMMARY = dict(GOOD_RUN, heartbeat=1700000090.0, summary={
    "indexes": [1, 3], "blobs": {"ab" * 16: 10}, "compressed": {}, "last_time": 1700000050.0,
    "crash": {"index": 3, "file": "/w/train.py", "line": 12, "function": "<module>"}, "signal": None})


@pytest.mark.parametrize("field", ["started", "ended", "heartbeat", "summary.last_time", "pid", "source.size",
                                   "summary.crash.line", "summary.crash.index"])
@pytest.mark.parametrize("literal", IMPOSSIBLE)
def test_an_impossible_number_in_a_run_record_is_named(field, literal):
    with pytest.raises(ValueError, match=repr(field.split(".")[0])):
        records.decode_run(with_raw(RUN_WITH_SUMMARY, field, literal))


@pytest.mark.parametrize("field", ["time", "pause", "duration", "index", "line", "new_bytes", "variables.0.size",
                                   "variables.0.shape.0", "variables.0.pickle.size", "variables.1.buffers.0.size",
                                   "variables.1.buffers.0.chunks.0.stored", "stack.0.line"])
@pytest.mark.parametrize("literal", IMPOSSIBLE)
def test_an_impossible_number_in_a_manifest_is_named(field, literal):
    manifest = dict(GOOD_MANIFEST, pause=0.01, duration=0.2)
    if literal == "-1" and field in ("pause", "duration"):  # a clock stepped back: kept
        assert records.decode_manifest(with_raw(manifest, field, literal))[field] == -1
        return
    with pytest.raises(ValueError, match=repr(field.split(".")[0])):
        records.decode_manifest(with_raw(manifest, field, literal))


def test_times_and_sizes_at_the_edges_of_their_ranges_are_kept():
    edge = dict(GOOD_RUN, started=0, ended=records.MAX_TIME, source={"hash": "ab" * 16, "size": 2**63 - 1})
    assert records.decode_run(records.encode(edge)) == edge
    manifest = dict(GOOD_MANIFEST, pause=-0.5, duration=0.0, time=1.5)
    assert records.decode_manifest(records.encode(manifest)) == manifest
