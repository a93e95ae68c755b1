"""Issue 4's corpus: real objects saved by real scripts, loaded back in another process, equal.

Each test writes `objects.py` (a `make()` that builds the objects, deterministically), runs a
script that builds them as its globals, then loads every name with `chkpt.load` in a fresh
process and compares it with a fresh `make()`: values, dtypes, memory order, names.
"""

from __future__ import annotations

import pytest

from conftest import chkpt_json, python, write

COMPARE = '''
import sys
import chkpt
import objects


def overlapping(array):
    """Whether the array's elements overlap in memory (broadcast_to, sliding windows)."""
    span = sum(abs(stride) * (count - 1) for count, stride in zip(array.shape, array.strides)) + array.itemsize
    return array.size > 0 and span < array.nbytes


def same(name, got, want):
    kind = type(want).__module__.split(".")[0]
    assert type(got) is type(want), (name, type(got), type(want))
    if kind == "numpy":
        import numpy as np
        assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
        if isinstance(want, np.ndarray):
            assert got.shape == want.shape, name
            assert got.flags.writeable == want.flags.writeable, name
            if want.flags.c_contiguous or want.flags.f_contiguous:  # a strided view comes back compact
                assert (got.flags.c_contiguous, got.flags.f_contiguous) == (
                    want.flags.c_contiguous, want.flags.f_contiguous), name
            if overlapping(want) or name in VIEWS:  # views kept as views: their strides too
                assert got.strides == want.strides, (name, got.strides, want.strides)
            if isinstance(want, np.ma.MaskedArray):
                assert (got.mask == want.mask).all(), name
                assert (got.hardmask, got.sharedmask, got.fill_value) == (
                    want.hardmask, want.sharedmask, want.fill_value), name
        np.testing.assert_array_equal(got, want, strict=True)
    elif kind == "pandas":
        import pandas as pd
        if isinstance(want, pd.DataFrame):
            pd.testing.assert_frame_equal(got, want, check_exact=True, check_freq=True, check_flags=True)
        elif isinstance(want, pd.Series):
            pd.testing.assert_series_equal(got, want, check_exact=True, check_freq=True)
        elif isinstance(want, pd.Index):
            pd.testing.assert_index_equal(got, want, exact=True, check_exact=True)
        else:
            assert got == want, name
    elif kind == "polars":
        import polars.testing
        check = polars.testing.assert_frame_equal if hasattr(want, "schema") else polars.testing.assert_series_equal
        check(got, want, check_exact=True)
    elif kind == "pyarrow":
        assert got.type == want.type if hasattr(want, "type") else got.schema == want.schema, name
        assert got.equals(want), name
    elif kind == "scipy":
        assert got.format == want.format and got.dtype == want.dtype and got.shape == want.shape, name
        assert (got != want).nnz == 0, name
    elif kind == "objects":  # the corpus's own classes: their __eq__, and the slots it may not compare
        assert got == want, (name, got, want)
        for field in getattr(type(want), "__slots__", ()):
            same(f"{name}.{field}", getattr(got, field), getattr(want, field))
    elif isinstance(want, dict):
        assert list(got) == list(want), name
        for key in want:
            same(f"{name}[{key!r}]", got[key], want[key])
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), name
        for index, (got_item, want_item) in enumerate(zip(got, want)):
            same(f"{name}[{index}]", got_item, want_item)
    else:
        assert got == want, (name, got, want)


want = objects.make()
VIEWS = getattr(objects, "VIEWS", ())
names = sys.argv[1:] or list(want)
for name in names:
    same(name, chkpt.load(name), want[name])
print("equal", len(names))
'''

SAVE = "from objects import make\nglobals().update(make())\n"


def roundtrip(env, work, objects_source: str) -> dict:
    """Save `make()`'s objects from a script (every size), load each back elsewhere; the checkpoint's JSON."""
    write(work, "objects.py", objects_source)
    write(work, "compare.py", COMPARE)
    write(work, "script.py", SAVE)
    result = python(["script.py"], {**env, "CHKPT_MIN_SIZE": "0"}, work)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    loaded = python(["compare.py"], {**env, "CHKPT": "0"}, work)  # not itself a run to load from
    assert loaded.returncode == 0 and loaded.stdout.startswith("equal"), loaded.stderr
    checkpoint = chkpt_json(["show", "latest"], env, work)["checkpoints"][-1]
    assert checkpoint["skipped"] == []
    return checkpoint


NUMPY = '''
import numpy as np


def make():
    rng = np.random.default_rng(0)
    base = rng.random((400, 300))
    point = np.dtype([("x", "<f8"), ("y", "<i4"), ("tag", "U8"), ("pos", "<f4", (3,))])
    structured = np.zeros(500, dtype=point)
    structured["x"] = np.arange(500) / 7
    structured["y"] = np.arange(500)
    structured["tag"] = [f"t{i}" for i in range(500)]
    return {
        "base": base,
        "rows": base[10:200],                      # a contiguous view
        "strided": base[::3, ::2],                 # a non-contiguous view
        "transposed": base.T,                      # Fortran-ordered view
        "fortran": np.asfortranarray(rng.random((300, 200))),
        "structured": structured,
        "zero_d": np.array(3.25),
        "zero_d_int": np.array(7, dtype=np.int16),
        "int8": np.arange(-128, 128, dtype=np.int8).repeat(8),
        "uint64": np.arange(2000, dtype=np.uint64) * np.uint64(2**40),
        "half": np.linspace(0, 1, 1000).astype(np.float16),
        "complex": (np.arange(500) + 1j * np.arange(500)).astype(np.complex64),
        "bools": np.arange(3000) % 3 == 0,
        "big_endian": np.arange(1000, dtype=">i4"),
        "datetimes": np.arange("2024-01-01", "2024-12-31", dtype="datetime64[D]"),
        "nanoseconds": np.arange(1000, dtype="timedelta64[ns]"),
        "unicode": np.array([f"word{i}" for i in range(300)]),
        "bytes": np.array([b"x" * (i % 9) for i in range(300)]),
        "objects": np.array([{"k": i} if i % 2 else str(i) for i in range(200)], dtype=object),
        "masked": np.ma.masked_array(np.arange(1000.0), mask=np.arange(1000) % 5 == 0),
        "empty": np.empty((0, 200)),
    }
'''


def test_numpy_arrays_come_back_with_dtype_order_and_shape(env, work):
    checkpoint = roundtrip(env, work, NUMPY)
    variables = {v["name"]: v for v in checkpoint["variables"]}
    assert variables["structured"]["type"] == "numpy.ndarray" and variables["structured"]["shape"] == [500]
    assert variables["rows"]["view_of"] == "base" and variables["transposed"]["view_of"] == "base"
    # views pickle their own elements only: `base` is stored once, `transposed` is the same bytes
    base = 400 * 300 * 8
    assert checkpoint["new_bytes"] < base + 190 * 300 * 8 + 134 * 150 * 8 + 2_000_000


TAILS = '''
import numpy as np


def make():
    # 4 MiB chunks: a last chunk of 64 KiB or less is stored with the small parts, in the pack
    return {
        "small_tail": np.arange((4 * 2**20 + 8000) // 8, dtype=np.float64),
        "pack_sized_tail": np.arange((8 * 2**20 + 2**16) // 8, dtype=np.float64),
        "larger_tail": np.arange((4 * 2**20 + 2**16 + 8) // 8, dtype=np.float64),
        "one_byte_tail": np.ones(4 * 2**20 + 1, dtype=np.uint8),
    }
'''


def test_arrays_whose_last_chunk_is_short_come_back_equal(env, work):
    roundtrip(env, work, TAILS)
    from chkpt import api

    checkpoint = api.runs()[0].checkpoint()
    chunks = {v.name: v.entry["buffers"][0]["chunks"] for v in checkpoint.variables}
    assert "pack" in chunks["small_tail"][-1] and "pack" not in chunks["larger_tail"][-1]


PANDAS = '''
import numpy as np
import pandas as pd


def make():
    n = 300
    index = pd.MultiIndex.from_product([["a", "b", "c"], range(100)], names=["letter", "number"])
    frame = pd.DataFrame({
        "when": pd.date_range("2024-03-30", periods=n, freq="h", tz="Europe/Paris"),
        "naive": pd.date_range("2024-01-01", periods=n, freq="min"),
        "category": pd.Categorical(["low", "mid", "high"] * 100, categories=["low", "mid", "high"],
                                   ordered=True),
        "count": pd.array([None if i % 7 == 0 else i for i in range(n)], dtype="Int64"),
        "flag": pd.array([None if i % 5 == 0 else i % 2 == 0 for i in range(n)], dtype="boolean"),
        "text": pd.array([None if i % 11 == 0 else f"s{i}" for i in range(n)], dtype="string"),
        "mixed": pd.Series([i if i % 2 else f"x{i}" for i in range(n)], dtype=object),
        "value": np.arange(n, dtype=np.float32) / 3,
        "span": pd.to_timedelta(np.arange(n), unit="s"),
    }, index=index)
    frame.columns.name = "field"
    frame.attrs["source"] = "sensor"
    series = pd.Series(np.arange(500.0), index=pd.Index(range(1000, 1500), name="id"), name="reading")
    return {
        "frame": frame,
        "series": series,
        "index": pd.Index([f"k{i}" for i in range(200)], name="keys"),
        "dates": pd.DatetimeIndex(pd.date_range("2020-01-01", periods=200, freq="D", tz="UTC"), name="day"),
        "periods": pd.period_range("2020-01", periods=200, freq="M"),
        "categorical_series": pd.Series(pd.Categorical(list("abcab") * 100), name="cat"),
        "wide": pd.DataFrame(np.arange(20000.0).reshape(200, 100), columns=[f"c{i}" for i in range(100)]),
    }
'''


def test_pandas_objects_come_back_with_extension_dtypes_and_names(env, work):
    checkpoint = roundtrip(env, work, PANDAS)
    variables = {v["name"]: v for v in checkpoint["variables"]}
    assert variables["frame"]["type"] == "pandas.DataFrame" and variables["frame"]["shape"] == [300, 9]
    assert variables["series"]["type"] == "pandas.Series"


OTHERS = '''
import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp


def make():
    rng = np.random.default_rng(1)
    return {
        "pl_frame": pl.DataFrame({
            "x": np.arange(5000),
            "name": [f"n{i}" for i in range(5000)],
            "kind": pl.Series(["a", "b"] * 2500, dtype=pl.Categorical),
            "maybe": [None if i % 3 else float(i) for i in range(5000)],
        }),
        "pl_series": pl.Series("s", np.arange(3000.0)),
        "table": pa.table({"id": pa.array(range(4000), pa.int32()),
                           "label": pa.array([f"l{i}" for i in range(4000)]),
                           "at": pa.array(np.arange(4000).astype("datetime64[ms]"))}),
        "chunked": pa.chunked_array([pa.array(range(500)), pa.array(range(500, 1200))]),
        "csr": sp.random(300, 300, density=0.05, format="csr", random_state=1, dtype=np.float32),
        "csc": sp.random(300, 200, density=0.05, format="csc", random_state=2),
        "coo": sp.random(200, 200, density=0.05, format="coo", random_state=3),
        "sparse_array": sp.csr_array(rng.random((100, 100)) > 0.9, dtype=np.int64),
    }
'''


def test_polars_pyarrow_and_scipy_sparse_come_back_equal(env, work):
    for module in ("polars", "pyarrow", "scipy"):
        pytest.importorskip(module, reason=f"{module} is a test extra; not installed for this Python")
    checkpoint = roundtrip(env, work, OTHERS)
    types = {v["name"]: v["type"] for v in checkpoint["variables"]}
    assert types["pl_frame"] == "polars.DataFrame" and types["table"] == "pyarrow.Table"
    assert types["csr"] == "scipy.sparse.csr_matrix"


BUILTINS = '''
import numpy as np


def make():
    weights = np.arange(3000.0)
    return {
        "weights": weights,
        "results": {"train": {"loss": [0.5, 0.25], "w": weights}, "test": np.ones(400), 3: "three",
                    (1, "a"): np.zeros(300)},
        "history": [float(i) for i in range(2000)],
        "text": "long text " * 300,
        "blob": bytes(range(256)) * 20,
        "pairs": [(i, str(i)) for i in range(300)],
        "tags": {f"tag{i}" for i in range(200)},
    }
'''


def test_builtin_values_and_nested_containers_come_back_equal(env, work):
    checkpoint = roundtrip(env, work, BUILTINS)
    names = {v["name"] for v in checkpoint["variables"]}
    assert {"results", "results['test']", "results[(1, 'a')]", "history", "text", "blob"} <= names
    assert checkpoint["aliases"] == {"results['train']['w']": "weights"}
    check = """
import chkpt
loaded = chkpt.load("results")
assert loaded["train"]["loss"] == [0.5, 0.25] and loaded[3] == "three"
assert chkpt.load('results["test"]').shape == (400,)
assert chkpt.load("results['train']['w']").shape == (3000,)
assert chkpt.load("results[(1, 'a')]").shape == (300,)
print("ok")
"""
    result = python(["-c", check], env, work)
    assert result.stdout == "ok\n", result.stderr


VIEWS = '''
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

VIEWS = ("pair['view']", "pair['reversed']", "pair['column']", "pair['as_bytes']", "rows_of_grid")


def make():
    base = np.arange(100_000.0)
    grid = np.arange(60_000.0).reshape(300, 200)
    frozen = np.arange(3000.0)
    frozen.flags.writeable = False
    frozen_strided = np.arange(6000.0)[::2]
    frozen_strided.flags.writeable = False
    return {
        "pair": {"base": base, "view": base[10:2000], "reversed": base[::-1], "grid": grid,
                 "column": grid[:, 3], "as_bytes": base[:500].view(np.uint8)},
        "rows_of_grid": grid[100:120],
        "wide": np.broadcast_to(np.arange(1000.0), (20_000, 1000)),  # 160 MB to look at, 8 KB of memory
        "windows": sliding_window_view(np.arange(1000.0), 200),
        "windows_2d": sliding_window_view(np.arange(10_000.0).reshape(100, 100), (10, 10)),
        "writable_windows": sliding_window_view(np.arange(1000.0), 50, writeable=True),
        "frozen": frozen,
        "frozen_strided": frozen_strided,
        "fortran_part": np.asfortranarray(np.arange(40_000.0).reshape(200, 200))[:, :50],
        "masked_hard": np.ma.masked_array(np.arange(1000.0), mask=np.arange(1000) % 7 == 0, hard_mask=True,
                                          fill_value=-1.0),
        "masked_soft": np.ma.masked_array(np.arange(1000, dtype=np.int32), mask=np.arange(1000) % 3 == 0),
    }
'''


def test_views_stride_tricks_and_flags_come_back_as_they_were(env, work):
    """Views of an array saved with them share its memory again; overlapping views come back
    read-only with their strides, stored at the size of the memory they span; flags are kept."""
    checkpoint = roundtrip(env, work, VIEWS)
    variables = {v["name"]: v for v in checkpoint["variables"]}
    assert variables["pair['view']"]["view_of"] == "pair['base']"
    assert variables["rows_of_grid"]["view_of"] == "pair['grid']"  # grid is itself a view of an unsaved array
    # the broadcast array takes the 8 KB it views, not the 160 MB it looks like; views of saved arrays take nothing
    assert variables["wide"]["shape"] == [20_000, 1000] and variables["wide"]["size"] < 10_000
    assert sum(v["size"] for k, v in variables.items() if k.startswith("windows")) < 100_000
    assert checkpoint["new_bytes"] < 100_000 * 8 + 60_000 * 8 + 1_000_000
    check = """
import numpy as np, chkpt
pair = chkpt.load("pair")
assert np.shares_memory(pair["base"], pair["view"]) and np.shares_memory(pair["base"], pair["reversed"])
assert np.shares_memory(pair["grid"], pair["column"]) and np.shares_memory(pair["base"], pair["as_bytes"])
pair["base"][10] = -1.0  # one memory, as in the script
assert pair["view"][0] == -1.0 and pair["reversed"][-11] == -1.0
wide = chkpt.load("wide")
assert not wide.flags.writeable and wide.strides == (0, 8)
print("ok")
"""
    result = python(["-c", check], {**env, "CHKPT": "0"}, work)
    assert result.stdout == "ok\n", result.stderr


PROGRAM_OBJECTS = '''
import dataclasses
import enum
import typing

import numpy as np


def note(what):
    with open("hooks.log", "a") as handle:
        handle.write(what + "\\\\n")


class Printing:
    def __init__(self, values):
        self.values = values

    def __getstate__(self):
        note("__getstate__")
        return self.__dict__

    def __eq__(self, other):
        return type(other) is type(self) and np.array_equal(self.values, other.values)


class Stripping(Printing):
    def __init__(self, values):
        super().__init__(values)
        self.cache = {"kept": [1, 2, 3]}

    def __getstate__(self):
        note("__getstate__ strips")
        state = self.__dict__
        state.pop("cache")
        return state

    def __eq__(self, other):
        return super().__eq__(other) and self.cache == other.cache


class Logged:
    def __init__(self, values):
        object.__setattr__(self, "values", values)

    def __getattribute__(self, name):
        note("__getattribute__ " + name)
        return object.__getattribute__(self, name)

    def __eq__(self, other):
        mine, theirs = object.__getattribute__(self, "values"), object.__getattribute__(other, "values")
        return np.array_equal(mine, theirs)

    __hash__ = None


class Sized(list):
    def __len__(self):
        note("__len__")
        raise RuntimeError("no len")

    def __sizeof__(self):
        note("__sizeof__")
        return -1

    def __eq__(self, other):
        return type(other) is Sized and list.__eq__(self, other)


@dataclasses.dataclass(frozen=True, slots=True)
class Frozen:
    name: str
    weights: np.ndarray

    def __eq__(self, other):
        return type(other) is Frozen and self.name == other.name and np.array_equal(self.weights, other.weights)


class Pair(typing.NamedTuple):
    left: int
    right: str


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Reduced:
    def __init__(self, tag):
        self.tag = tag
        self.values = np.arange(3000.0)

    def __reduce__(self):
        note("__reduce__")
        return (Reduced, (self.tag,))

    def __eq__(self, other):
        return type(other) is Reduced and self.tag == other.tag and np.array_equal(self.values, other.values)


def make():
    return {
        "printing": Printing(np.arange(3000.0)),
        "stripping": Stripping(np.arange(2000.0)),
        "logged": Logged(np.arange(2500.0)),
        "sized": Sized([1.5] * 300),
        "frozen": Frozen("w", np.arange(1000.0)),
        "pairs": [Pair(i, str(i)) for i in range(300)],
        "colors": [Color.RED, Color.BLUE] * 200,
        "reduced": Reduced("r"),
    }
'''


def test_objects_with_pickling_and_attribute_hooks_load_equal_and_their_hooks_never_run(env, work):
    checkpoint = roundtrip(env, work, PROGRAM_OBJECTS)
    assert not (work / "hooks.log").exists()  # neither saving nor loading ran one of the program's hooks
    assert {"printing", "stripping", "logged", "sized", "frozen", "frozen.weights", "pairs", "colors",
            "reduced"} <= {v["name"] for v in checkpoint["variables"]}
    check = "import chkpt, objects\nprint(all(c is objects.Color.RED for c in chkpt.load('colors')[::2]))\n"
    result = python(["-c", check], {**env, "CHKPT": "0"}, work)
    assert result.stdout == "True\n", result.stderr
