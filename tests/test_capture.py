"""Issue 4: what a checkpoint captures, under which names, what it skips and why."""

from __future__ import annotations

import pickle
import sys

import pytest

from conftest import chkpt, chkpt_json, last_checkpoint, python, write

STORY = """
import threading
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import scipy.sparse as sp


class Model:
    def __init__(self):
        self.weights = np.random.default_rng(0).random((100, 50))
        self.lock = threading.Lock()


df_train = pd.DataFrame({"a": np.arange(1000), "b": np.linspace(0, 1, 1000)})
df_test = pd.DataFrame({"a": np.arange(200), "b": np.linspace(0, 1, 200)})
results = {"train": df_train, "test": df_test}
model = Model()
frames = [np.full(300, i, dtype=np.float32) for i in range(3)]
events = pl.DataFrame({"t": np.arange(2000), "kind": ["click", "view"] * 1000})
table = pa.table({"id": np.arange(3000)})
sparse = sp.random(200, 200, density=0.05, format="csr", random_state=0)
signal = np.arange(100_000.0)
window = signal[1000:5000]
huge = np.zeros(2_000_000)
log = open(__file__)
print("done")
"""

STORY_CHECK = """
import numpy as np, pandas as pd, chkpt
exec(open("story.py").read().replace("print", "str").replace("class Model", "class _Model")
     .replace("model = Model()", "").replace("log = open(__file__)", ""))
pd.testing.assert_frame_equal(chkpt.load('results["train"]'), df_train)
pd.testing.assert_frame_equal(chkpt.load("results['test']"), df_test)
loaded = chkpt.load("results")
assert list(loaded) == ["train", "test"]
pd.testing.assert_frame_equal(loaded["train"], df_train)
model = chkpt.load("model")
assert type(model).__name__ == "Model" and "stand-in for __main__.Model" in repr(model)
np.testing.assert_array_equal(model.weights, np.random.default_rng(0).random((100, 50)))
assert "a lock (thread synchronisation) cannot be saved" in repr(model.lock)
np.testing.assert_array_equal(chkpt.load("model.weights"), model.weights)
assert [f[0] for f in chkpt.load("frames")] == [0, 1, 2]
np.testing.assert_array_equal(chkpt.load("frames[2]"), frames[2])
assert chkpt.load("events").equals(events) and chkpt.load("table").equals(table)
assert (chkpt.load("sparse") != sparse).nnz == 0
np.testing.assert_array_equal(chkpt.load("window"), window)
print("ok")
"""


def test_user_story_saves_the_data_names_nested_paths_and_lists_the_skipped(env, work):
    for module in ("polars", "pyarrow", "scipy"):
        pytest.importorskip(module, reason=f"{module} is a test extra; not installed for this Python")
    write(work, "story.py", STORY)
    result = python(["story.py"], {**env, "CHKPT_MAX_OBJECT_SIZE": "1MiB"}, work)
    assert (result.returncode, result.stdout, result.stderr) == (0, "done\n", "")

    checkpoint = chkpt_json(["show", "latest"], env, work)["checkpoints"][-1]
    names = {v["name"]: v for v in checkpoint["variables"]}
    assert sorted(names) == sorted([
        "df_train", "df_test", "results", "model", "model.weights", "frames", "frames[0]", "frames[1]",
        "frames[2]", "events", "table", "sparse", "signal", "window"])
    assert checkpoint["aliases"] == {"results['train']": "df_train", "results['test']": "df_test"}
    assert [(s["name"], s["reason"]) for s in checkpoint["skipped"]] == [
        ("model.lock", "a lock (thread synchronisation) cannot be saved"),
        ("huge", "15.3 MiB is over max_object_size (1.0 MiB)"),
        ("log", "an open file (TextIOWrapper) cannot be saved"),
    ]
    assert names["model"]["type"] == "__main__.Model" and names["results"]["type"] == "dict"
    assert names["model.weights"]["shape"] == [100, 50] and names["window"]["view_of"] == "signal"
    assert names["events"]["type"] == "polars.DataFrame" and names["sparse"]["type"] == "scipy.sparse.csr_matrix"

    loaded = python(["-c", STORY_CHECK], env, work)
    assert loaded.stdout == "ok\n", loaded.stderr


def test_human_show_lists_skipped_values_with_their_reason(env, work):
    write(work, "s.py", "import threading, numpy as np\nlock = threading.Lock()\ndata = np.ones(1000)\n"
                        "gen = (i for i in range(3))\nf = lambda x: x\n")
    python(["s.py"], env, work)
    shown = chkpt(["show", "latest"], env, work).stdout
    assert "lock" in shown and "a lock (thread synchronisation) cannot be saved" in shown
    assert "a generator cannot be saved (its running state is not data)" in shown
    assert "lambda" not in shown  # saved by cloudpickle


UNSAVEABLE = """
import socket, threading
import numpy as np


class Opaque:
    def __init__(self):
        self.text = "x" * 5000
        self.values = np.arange(2000.0)

    def __reduce__(self):
        raise TypeError("Opaque objects refuse pickling")


good = np.arange(5000)
opaque = Opaque()
bad_array = np.array([threading.Lock()] * 200, dtype=object)
sock = socket.socket()
event = threading.Event()
gen = (i for i in range(10))
cfg = {"cb": lambda x: x, "data": np.ones(500)}
print("done")
"""


def test_one_unsaveable_value_never_aborts_the_checkpoint(env, work):
    checkpoint = last_checkpoint(env, work, "u.py", UNSAVEABLE, "done\n")
    names = {v["name"] for v in checkpoint["variables"]}
    # the program's own __reduce__ is never called: its object is saved by its plain state
    assert {"good", "opaque", "opaque.text", "opaque.values", "cfg", "cfg['data']"} <= names
    skipped = {s["name"]: s["reason"] for s in checkpoint["skipped"]}
    assert "opaque" not in skipped
    assert skipped["bad_array"].startswith("cannot be pickled")  # not even cloudpickle saves it
    assert skipped["sock"] == "a socket cannot be saved"
    assert skipped["event"] == "an Event (thread synchronisation) cannot be saved"
    assert skipped["gen"] == "a generator cannot be saved (its running state is not data)"
    assert "cfg['cb']" not in skipped and "cfg" in names  # pickle refuses the lambda; cloudpickle saves it
    check = "import chkpt; c = chkpt.load('cfg'); print(c['data'].sum(), c['cb'](7))"
    loaded = python(["-c", check], env, work)
    assert loaded.stdout == "500.0 7\n", loaded.stderr


FILES = """
import asyncio, io, numpy as np
log = open("log.txt", "w")
done = open("done.bin", "wb")
done.write(b"x")
done.close()
with open("read.txt", "w") as text:
    text.write("y")
memory = io.BytesIO(b"z")
queue = asyncio.Queue()
data = np.ones(1000)
print("ok")
"""


def test_skip_reasons_say_whether_a_file_is_open_or_closed(env, work):
    checkpoint = last_checkpoint(env, work, "files.py", FILES, "ok\n")
    skipped = {s["name"]: s["reason"] for s in checkpoint["skipped"]}
    assert skipped["log"] == "an open file (TextIOWrapper) cannot be saved"
    assert skipped["done"] == "a closed file (BufferedWriter) cannot be saved (a file object, not data)"
    assert skipped["text"] == "a closed file (TextIOWrapper) cannot be saved (a file object, not data)"
    assert skipped["queue"] == ("an asyncio.Queue belongs to the running process (its files, processes, "
                                "connections, threads or event loop) and cannot be saved")
    assert "memory" not in skipped  # an in-memory file is data: saved


MAIN_CLASSES = """
import dataclasses
from typing import NamedTuple
import numpy as np


@dataclasses.dataclass
class Experiment:
    name: str
    data: np.ndarray
    notes: list


class Pair(NamedTuple):
    left: int
    right: str


class Bag(dict):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Frozen:
    name: str
    weights: np.ndarray


class Shouting:
    def __init__(self):
        self.values = np.arange(2000.0)

    def __getstate__(self):
        print("getstate ran")
        return self.__dict__

    def __setstate__(self, state):
        print("setstate ran")
        self.__dict__.update(state)


def make_scorer():
    weights = np.arange(3000.0)

    def score(x):
        return x @ weights[:len(x)]
    return score


experiment = Experiment("run1", np.arange(3000.0), ["a"] * 200)
pair_list = [Pair(i, str(i)) for i in range(100)]
bag = Bag(values=np.arange(1000))
frozen = Frozen("w", np.arange(1500.0))
shouting = Shouting()
score = make_scorer()
print("done")
"""


def test_objects_of_script_classes_load_elsewhere_as_stand_ins_or_as_the_real_class(env, work):
    checkpoint = last_checkpoint(env, work, "m.py", MAIN_CLASSES, "done\n")  # no hook of the script ran
    assert {"frozen", "frozen.weights", "shouting", "shouting.values"} <= {v["name"] for v in checkpoint["variables"]}
    assert checkpoint["skipped"] == []  # the closure over an array too: cloudpickle saves it (tests/test_objects.py)
    stand_in = """
import chkpt
e = chkpt.load("experiment")
print(type(e).__name__, e.name, e.data.shape, len(e.notes), "stand-in" in repr(e))
print(chkpt.load("pair_list")[3]._args)
print(chkpt.load("bag")._items["values"].shape)
frozen = chkpt.load("frozen")
print(type(frozen).__name__, frozen.name, frozen.weights.shape, "stand-in" in repr(frozen))
"""
    loaded = python(["-c", stand_in], env, work)
    assert loaded.stdout == ("Experiment run1 (3000,) 200 True\n(3, '3')\n(1000,)\n"
                             "Frozen w (1500,) True\n"), loaded.stderr

    real = """
import dataclasses, chkpt
import numpy as np

@dataclasses.dataclass
class Experiment:
    name: str
    data: np.ndarray
    notes: list

@dataclasses.dataclass(frozen=True, slots=True)
class Frozen:
    name: str
    weights: np.ndarray


class Shouting:
    def __setstate__(self, state):
        print("setstate ran")


e = chkpt.load("experiment")
print(type(e) is Experiment, e.name, float(e.data.sum()))
frozen = chkpt.load("frozen")
print(type(frozen) is Frozen, frozen.name, float(frozen.weights.sum()))
shouting = chkpt.load("shouting")
print(type(shouting) is Shouting, float(shouting.values.sum()))
"""
    loaded = python(["-c", real], env, work)
    assert loaded.stdout == "True run1 4498500.0\nTrue w 1124250.0\nTrue 1999000.0\n", loaded.stderr


SALIENCE = """
import chkpt
import numpy as np

counter = 42
name = "experiment"
lr = 0.01
tiny = np.arange(3)
secret_token = np.arange(10_000)
settings = {"depth": 3, "tags": ["a", "b"], "nested": {"x": 1}}
history = [0.5] * 500
chkpt.track(np.arange(2), "kept_small")


def step(x):
    batch = np.ones((64, 32))
    i = 3
    counter = x
    raise RuntimeError("boom")


step(7)
"""


def test_salience_rules_and_crash_locals(env, work):
    write(work, "sal.py", SALIENCE)
    result = python(["sal.py"], {**env, "CHKPT_EXCLUDE_NAMES": "secret*", "CHKPT_INCLUDE_NAMES": "lr"}, work)
    assert result.returncode == 1 and "RuntimeError: boom" in result.stderr
    checkpoints = chkpt_json(["show", "latest"], env, work)["checkpoints"]
    crash = checkpoints[-1]
    assert crash["trigger"] == "crash"
    names = {v["name"]: v for v in crash["variables"]}
    # a crash keeps every saveable value, small ones too, and the locals of the failing frame
    assert {"counter", "name", "lr", "tiny", "settings", "history", "kept_small", "batch", "i", "x",
            "step:counter"} <= set(names)
    assert names["step:counter"]["scope"] == "local of step" and "secret_token" not in names
    assert all(not s["name"].startswith("secret") for s in crash["skipped"])

    write(work, "quiet.py", SALIENCE.replace("step(7)\n", ""))
    python(["quiet.py"], {**env, "CHKPT_EXCLUDE_NAMES": "secret*", "CHKPT_INCLUDE_NAMES": "lr"}, work)
    exit_names = {v["name"] for v in chkpt_json(["show", "latest:quiet.py"], env, work)["checkpoints"][-1]["variables"]}
    # an exit checkpoint keeps data and sizeable values, not the noise under min_size (1 KiB)
    assert exit_names == {"lr", "history", "kept_small"}


def test_large_namespace_finds_data_after_thousands_of_small_nested_values():
    import numpy as np

    from chkpt import capture, config, salience

    namespace = {}
    for i in range(10_000):
        namespace[f"v{i}"] = {"a": i, "b": {"x": [1, 2, 3], "y": "z"}} if i % 3 else f"value {i}"
    namespace["results"] = {"fold": {"train": np.ones(500), "meta": {"n": 500}}}
    big_list = [np.full(10, i) for i in range(5000)]  # too long to walk: saved whole
    namespace["many"] = big_list
    rules = salience.Rules(config.Config())
    captured = capture.collect(capture.named_roots(namespace, [], {}), rules)
    names = sorted(item.name for item in captured.items)
    assert names == ["many", "results", "results['fold']['train']"]
    assert captured.skipped == [] and captured.aliases == {}


class _Point:  # a user object: walked into
    def __init__(self, weights, label):
        self.weights = weights
        self.label = label


def _varied_namespace(np):
    """Globals of every shape the periodic capture rules out unseen, or must not."""
    array = np.arange(3000.0)
    shared = {"mode": "fast", "depth": 3}
    namespace = {
        "__doc__": "d" * 5000, "__name__": "__main__", "__builtins__": __builtins__,  # Python's, never roots
        **{f"n{i}": value for i, value in enumerate([1, 2.5, 3j, True, None, 10**400, 2**20000])},
        "short": "abc", "long": "t" * 4000, "raw": b"x" * 3000, "buf": bytearray(2000), "tiny": b"y",
        **{f"cfg{i}": {"depth": i, "opts": {"x": [1, 2, 3], "y": "z"}, "tags": ["a", "b"]} for i in range(300)},
        **{f"row{i}": [i, i * 2.0, "x"] for i in range(100)},
        "shared": shared, "shared_again": shared, "pair": (1, 2), "group": {1, 2, 3}, "frozen": frozenset("ab"),
        "empty": {}, "hollow": [], "keyed": {(1, 2): "a", 3: "b"}, "grown": {f"k{i}": float(i) for i in range(40)},
        "outlier": {"sql": "s" * 3000}, "deep": {"a": {"b": {"c": {"d": {"e": {"f": [1] * 300}}}}}},
        "cleared": dict.fromkeys(range(500)), "long_list": list(range(2000)), "tuple_of_lists": ([1], [2.0] * 200),
        "array": array, "same_array": array, "view": array[10:20], "frame_like": {"train": array, "n": 3},
        "point": _Point(np.ones(400), "p"), "small_point": _Point(1, "q"), "subclassed": type("S", (str,), {})("x"),
        "function": _varied_namespace, "module": np, "anonymous": lambda: 0, "lock": __import__("threading").Lock(),
    }
    namespace["cleared"].clear()  # a dict keeps its table: larger than its length says
    return namespace, {"tracked_cfg": shared, "tracked_row": namespace["row3"]}


def _in_a_frame(namespace, look):
    """look(frame) from a function of the script (its globals are `namespace`) whose locals are
    the roots of `namespace`."""
    names = [name for name in namespace if name[:2] != "__"]
    source = "def step():\n" + "".join(f"    {name} = VALUES[{name!r}]\n" for name in names)
    code = {}
    exec(source + "    return LOOK(sys._getframe())\n", code)
    step = type(_in_a_frame)(code["step"].__code__, namespace)

    def looked(frame):
        for name in ("VALUES", "LOOK", "sys"):  # read by the function: not the script's globals
            del namespace[name]
        return look(frame)

    namespace.update(VALUES=dict(namespace), LOOK=looked, sys=sys)
    return step()


def _decision(result):
    return ([(i.name, i.scope, i.size, i.type, i.info, type(i.obj).__name__) for i in result.items],
            result.skipped, result.aliases)


@pytest.mark.parametrize("min_size", [64, 1024, 100 * 1024])
@pytest.mark.parametrize("tracking", [False, True])
@pytest.mark.parametrize("exclude", [[], ["cfg1*", "long"]])
@pytest.mark.parametrize("builtins_only", [False, True])
def test_the_fast_periodic_capture_decides_exactly_as_the_full_walk(min_size, tracking, exclude, builtins_only):
    """A periodic capture rules most globals out without looking at each: what it saves, skips
    and aliases is what looking at every one of them decides."""
    import numpy as np

    from chkpt import capture, config, salience

    namespace, tracked = _varied_namespace(np)
    if builtins_only:  # no data anywhere: nests are ruled out by their bound
        namespace = {name: value for name, value in namespace.items() if name[:2] != "__"
                     and not isinstance(value, np.ndarray | _Point) and name not in ("frame_like", "lock")}

    def collect(**settings):
        cfg = config.Config()
        cfg.min_size, cfg.exclude_names = min_size, exclude
        for key, value in settings.items():
            setattr(cfg, key, value)
        rules = salience.Rules(cfg)
        # the same values are also the locals of a function of the script (`step:n1`, `step:cfg3`, ...)
        tracking_now = tracked if tracking else {}
        roots = _in_a_frame(namespace, lambda frame: capture.named_roots(namespace, [frame], tracking_now))
        return _decision(capture.collect(roots, rules))

    unseen = set(namespace) - set(capture._sizeable(namespace, min_size, {}))
    assert ("cfg5" in unseen) is (min_size > 64) and ("row5" in unseen) is (min_size > 64)  # ruled out unseen
    # a pattern no name matches: every global goes through the walker's own decision
    assert collect() == collect(include_names=["\x00 no such name"])
    assert collect(max_object_size=min_size // 2) == collect(max_object_size=min_size // 2,
                                                             include_names=["\x00 no such name"])


def test_the_cheap_sizes_and_descriptions_of_builtins_are_the_general_ones():
    from chkpt import capture, salience

    containers = ({"a": 1}, dict.fromkeys(range(100)), [1, 2], (1, "x"), {1.5}, frozenset("abc"), [])
    scalars = (7, 10**400, 2.5, 1j, True, None, "é" * 30, "x" * 5000, b"xy", bytearray(300))
    for value in containers + scalars:
        extra = salience.GC_HEADER if type(value) in salience.BUILTIN_CONTAINERS else 0
        assert salience.SIZEOF[type(value)](value) + extra == sys.getsizeof(value), value
        item = capture.Item("v", value, 0, "global")
        assert (item.type, item.info) == (salience.type_label(value), salience.describe(value)), value
    # a large container is measured on a sample: about its real size, whatever its type
    records = [{"id": i, "name": f"user{i}"} for i in range(100_000)]
    real = sys.getsizeof(records) + sum(map(sys.getsizeof, records))  # the items measured one level down
    for value in (records, tuple(records), _RaisingList(records)):
        assert 0.8 * real < salience.builtin_size(value) < 1.2 * real, type(value)


def test_shared_and_cyclic_structures_are_saved_once_and_load_as_shared(env, work):
    source = """
import numpy as np
shared = np.arange(4000.0)
a = {"x": shared, "y": [shared, shared]}
a["self"] = a
b = (a, shared)
"""
    write(work, "cyc.py", source)
    assert python(["cyc.py"], env, work).returncode == 0
    checkpoint = chkpt_json(["show", "latest"], env, work)["checkpoints"][-1]
    assert sorted(v["name"] for v in checkpoint["variables"]) == ["a", "b", "shared"]
    assert checkpoint["aliases"] == {"a['x']": "shared", "a['y'][0]": "shared", "a['y'][1]": "shared",
                                     "b[0]": "a", "b[1]": "shared"}
    check = """
import chkpt
b = chkpt.load("b")
a = b[0]
print(a["self"] is a, a["x"] is b[1] is a["y"][0], float(a["x"].sum()))
"""
    loaded = python(["-c", check], env, work)
    assert loaded.stdout == "True True 7998000.0\n", loaded.stderr


def test_serialization_keeps_large_buffers_out_of_the_stream():
    import numpy as np

    from chkpt import serialize

    array = np.arange(1_000_000.0)
    data = serialize.dumps(array)
    assert len(data.stream) < 1000 and len(data.buffers) == 1
    assert np.shares_memory(np.frombuffer(data.buffers[0], dtype=np.float64), array)  # not copied
    assert serialize.loads(data.stream, data.buffers).tolist() == array.tolist()
    polars = pytest.importorskip("polars", reason="polars is a test extra; not installed for this Python")
    frame = polars.DataFrame({"a": array})
    data = serialize.dumps(frame)
    assert len(data.stream) < 1000 and sum(b.nbytes for b in data.buffers) >= array.nbytes
    assert serialize.loads(data.stream, data.buffers).equals(frame)
    assert pickle.loads(pickle.dumps(serialize.Unsaved("x", "why"))).reason == "why"


PLOTTING = """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import Ridge

rng = np.random.default_rng(0)
X = rng.random((500, 20))
model = Ridge().fit(X, X @ np.arange(20.0))
fig, ax = plt.subplots()
ax.plot(model.coef_)
fig.savefig("coef.png")
raise RuntimeError("after the plot")
"""


def test_a_plotting_script_saves_its_data_and_model_and_lists_the_figure_as_skipped(env, work):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    write(work, "plot.py", PLOTTING)
    result = python(["plot.py"], env, work)
    assert result.returncode == 1 and "RuntimeError: after the plot" in result.stderr
    crash = chkpt_json(["show", "latest"], env, work)["checkpoints"][-1]
    saved = {v["name"] for v in crash["variables"]}
    assert {"X", "model", "rng"} <= saved and not saved & {"fig", "ax"}
    assert not any(name.startswith(("model.", "ax.", "fig.")) for name in saved)
    skipped = {s["name"]: s["reason"] for s in crash["skipped"]}
    assert skipped == {"fig": "a matplotlib.Figure is display state, not data (skip_modules)",
                       "ax": "a matplotlib.Axes is display state, not data (skip_modules)"}
    text = chkpt(["show", "latest"], env, work).stdout
    assert "fig" in text and "display state, not data (skip_modules)" in text


# -- the program's code never runs while chkpt captures, measures, pickles or loads ---------------

CALLS: list[str] = []  # every hook of the classes below that ran


def _note(what: str) -> None:
    CALLS.append(what)


class _Hooked:
    """Every pickling, attribute, size and description hook Python offers, each one noted."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.values = __import__("numpy").arange(3000.0)
        self.cache = {"kept": 1}

    def __getstate__(self):
        _note("__getstate__")
        state = self.__dict__
        state.pop("cache")  # the common bug: strips the live object
        return state

    def __setstate__(self, state):
        _note("__setstate__")
        self.__dict__.update(state)

    def __reduce_ex__(self, protocol):
        _note("__reduce_ex__")
        return object.__reduce_ex__(self, protocol)

    def __getattr__(self, name):
        _note(f"__getattr__ {name}")
        raise AttributeError(name)

    def __sizeof__(self):
        _note("__sizeof__")
        raise RuntimeError("no size")

    def __len__(self):
        _note("__len__")
        raise RuntimeError("no len")

    def __eq__(self, other):
        _note("__eq__")
        return NotImplemented

    __hash__ = object.__hash__

    def __repr__(self):
        _note("__repr__")
        return "hooked"

    @property
    def shape(self):
        _note("shape")
        return (1,)

    @property
    def nbytes(self):
        _note("nbytes")
        return 1

    @property
    def base(self):
        _note("base")
        return None


class _Logged:
    """A logging proxy: sees every attribute access, `__class__` included (isinstance asks it)."""

    def __init__(self, target) -> None:
        object.__setattr__(self, "_target", target)

    def __getattribute__(self, name):
        _note(f"__getattribute__ {name}")
        return object.__getattribute__(self, name)


class _Negative:
    def __init__(self) -> None:
        self.values = __import__("numpy").arange(2000.0)

    def __sizeof__(self):
        _note("__sizeof__ -1")
        return -1


class _RaisingList(list):
    def __len__(self):
        _note("list __len__")
        raise RuntimeError("no len")

    def __iter__(self):
        _note("list __iter__")
        raise RuntimeError("no iter")

    def __sizeof__(self):
        _note("list __sizeof__")
        raise RuntimeError("no size")


class _RaisingDict(dict):
    def keys(self):
        _note("dict keys")
        raise RuntimeError

    def values(self):
        _note("dict values")
        raise RuntimeError

    def items(self):
        _note("dict items")
        raise RuntimeError

    def __iter__(self):
        _note("dict __iter__")
        raise RuntimeError

    def __len__(self):
        _note("dict __len__")
        raise RuntimeError


class _Pair(tuple):
    __slots__ = ()

    def __iter__(self):
        _note("tuple __iter__")
        raise RuntimeError

    def __getnewargs__(self):
        _note("__getnewargs__")
        return tuple.__getitem__(self, slice(None))


class _Meta(type):
    def __getattribute__(cls, name):
        _note(f"metaclass {name}")
        return type.__getattribute__(cls, name)


class _WithMeta(metaclass=_Meta):
    def __init__(self) -> None:
        self.values = __import__("numpy").arange(2000.0)


class _Text(str):
    def __len__(self):
        _note("str __len__")
        raise RuntimeError

    def __sizeof__(self):
        _note("str __sizeof__")
        raise RuntimeError


class _Counter:
    __slots__ = ("count", "values")

    def __init__(self) -> None:
        self.count = 3
        self.values = __import__("numpy").arange(2000.0)

    def __getattribute__(self, name):
        _note(f"slots __getattribute__ {name}")
        return object.__getattribute__(self, name)


class _LoggedOrdered(__import__("collections").OrderedDict):
    """A class over a library's (here the stdlib's) whose pickling would run this hook."""

    def __getattr__(self, name):
        _note(f"OrderedDict __getattr__ {name}")
        raise AttributeError(name)


def _hostile_namespace():
    from unittest.mock import MagicMock

    import numpy as np

    raising = _RaisingList([np.arange(2000.0), "x" * 2000])
    raising.note = "listed"
    nested = _RaisingDict(a=np.arange(2000.0), b=_Hooked("in a dict"))
    return {
        "hooked": _Hooked("global"), "logged": _Logged(np.arange(3000.0)), "negative": _Negative(),
        "raising": raising, "nested": nested, "pair": _Pair((np.arange(2000.0), 7)), "meta": _WithMeta(),
        "text": _Text("t" * 3000), "counter": _Counter(), "mock": MagicMock(), "holder": {"deep": [_Logged(1)]},
        "box": {"ordered": _LoggedOrdered(a=1), "values": np.arange(2000.0)},
    }


@pytest.mark.parametrize("keep_small", [False, True])
def test_capturing_and_pickling_never_run_the_programs_code(keep_small):
    """Hooks that print, log, strip their object, raise or return nonsense are never called:
    every value is captured, measured, described and pickled through C-level accessors only."""
    from chkpt import capture, config, salience, serialize

    namespace = _hostile_namespace()
    mock = namespace["mock"]
    rules = salience.Rules(config.Config())
    CALLS.clear()
    captured = capture.collect(capture.named_roots(namespace, [], {}), rules, keep_small=keep_small)
    pickled = {item.name: serialize.dumps(item.obj, None, rules.pickling) for item in captured.items}
    assert CALLS == [] and mock.mock_calls == []
    assert namespace["hooked"].cache == {"kept": 1}  # the buggy __getstate__ did not strip it
    names = {item.name for item in captured.items}
    assert {"hooked", "hooked.values", "logged", "logged._target", "negative", "negative.values", "raising",
            "raising[0]", "nested", "nested['a']", "pair", "meta", "meta.values", "text", "counter",
            "counter.values"} <= names
    assert captured.skipped == [
        {"name": "mock", "reason": "a mock (unittest.mock.MagicMock) is not saved: it records every use of it"},
        {"name": "box['ordered']", "reason": "not saved: its class _LoggedOrdered defines __getattr__ over "
                                             "collections.OrderedDict, and chkpt never runs the program's code "
                                             "to save a value"}]  # and `box` is saved, with a placeholder for it
    described = {item.name: (item.type, item.info) for item in captured.items}
    assert described["raising"] == ("test_capture._RaisingList", {"shape": [2]})
    assert described["hooked"] == ("test_capture._Hooked", {})
    assert all(item.size > 0 for item in captured.items)

    loaded = {}
    for name, data in pickled.items():
        loaded[name] = serialize.loads(data.stream, data.buffers, lambda part: loaded[part])
    assert CALLS == []  # nor does loading: no __init__, __new__, __setstate__, __setattr__ of theirs
    hooked = loaded["hooked"]
    assert type(hooked) is _Hooked and hooked.tag == "global" and hooked.cache == {"kept": 1}
    assert hooked.values is loaded["hooked.values"]
    raising = loaded["raising"]
    assert type(raising) is _RaisingList and raising.note == "listed" and list.__len__(raising) == 2
    assert list.__getitem__(raising, 1) == "x" * 2000
    pair = loaded["pair"]
    assert type(pair) is _Pair and tuple.__getitem__(pair, 1) == 7
    assert type(loaded["nested"]) is _RaisingDict and dict.__getitem__(loaded["nested"], "b").tag == "in a dict"
    assert "not saved" in repr(loaded["box"]["ordered"]) and loaded["box"]["values"] is loaded["box['values']"]
    counter = loaded["counter"]
    assert type(counter) is _Counter and _Counter.count.__get__(counter) == 3
    assert type(loaded["text"]) is _Text and str.__str__(loaded["text"]) == "t" * 3000
    assert CALLS == []


def test_sizes_never_call_a_sizeof_or_len_written_in_python():
    from chkpt import plain, salience

    CALLS.clear()
    for value, like in ((_RaisingList([1, 2, 3]), [1, 2, 3]), (_Text("abc"), "abc"), (_RaisingDict(a=1), {"a": 1})):
        assert salience.size(value) >= sys.getsizeof(like) and plain.length(value) == len(like)
        assert salience.builtin_size(value) >= sys.getsizeof(like)
    twin = sys.getsizeof(_Point(1, 2))  # the same layout, without hooks: what sys.getsizeof says of it
    for value in (_Hooked("x"), _Negative(), _Logged(1), _WithMeta()):
        assert plain.size_of(value) == salience.size(value) == twin
    assert CALLS == []


def test_an_exception_is_described_without_its_own_str():
    from chkpt import plain

    class Loud(ValueError):
        def __str__(self):
            _note("__str__")
            raise RuntimeError("no text")

    class Proxy:
        def __repr__(self):
            _note("__repr__")
            return "proxy"

    CALLS.clear()
    assert plain.exception_text(Loud("bad row")) == "Loud: bad row"
    assert plain.exception_text(KeyError("volume")) == "KeyError: 'volume'"
    assert plain.exception_text(FileNotFoundError(2, "No such file or directory", "x.csv")) == \
        "FileNotFoundError: [Errno 2] No such file or directory: 'x.csv'"
    assert plain.exception_text(RuntimeError()) == "RuntimeError"
    assert plain.exception_text(ValueError(Proxy())) == "ValueError"  # its text would run the program's code
    assert plain.exception_text(ExceptionGroup("many", [Loud("x"), ValueError(Proxy())])) == \
        "ExceptionGroup: many (2 sub-exceptions)"
    assert CALLS == []
