"""Turns one value into bytes and back, never copying a large buffer it does not have to.

Pickle protocol 5 with out-of-band buffers: numpy arrays (and the blocks of pandas frames,
the buffers of pyarrow tables, the arrays of scipy.sparse matrices) hand their memory over
as PickleBuffers, which the store hashes and writes straight from the object's own memory.
Objects that pickle as one big `bytes` state (polars frames, torch storages) have that
state moved out of band too, so it is not copied again into the stream. What remains in
the stream is small metadata. pandas' Arrow-backed arrays are pickled without combining their
chunks (a copy), and the buffers of Arrow string arrays are marked as never changing.

With `Kept`, large object arrays and long lists of plain builtin values are pickled by runs,
each kept until the next checkpoint and reused while unchanged (`ObjectArrays`, `RecordRuns`).

A `Skeleton` (a container or object whose parts capture saved on their own) pickles with
those parts as references (persistent ids), resolved at load time through `resolve`; a part
that was not saved loads as an `Unsaved` placeholder naming it and the reason.

No code of the program runs while a value is pickled: objects of the program's classes are
pickled by their plain state (plain.py), as `how` (the salience rules' `pickling`) decides per
type, and loaded without calling their class's code either. numpy arrays keep what numpy's own
pickling drops: a view of an array saved in the same checkpoint is pickled as a view of it (it
loads sharing that array's memory); a view whose elements overlap (`broadcast_to`, sliding
windows) as the memory it spans and its strides; a masked array's hard mask and other flags;
a read-only array stays read-only.

What pickle refuses (a lambda, a closure, a function or class defined inside another) is pickled
again by cloudpickle, when it is installed: by value, with the same rules for everything else.
Loading it needs cloudpickle too.

Classes defined in the saving script live in its `__main__`. Loading elsewhere (a notebook,
`chkpt shell`), the class is taken from the current `__main__` if it defines it; otherwise
the object loads as a `StandIn` of that class name with all its attributes, and no methods.
The script is never run to find the class.
"""

from __future__ import annotations

import copyreg
import gc
import io
import itertools
import pickle
import sys
from itertools import compress

from chkpt import plain, salience

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    Refs = dict[int, tuple[int, tuple[str, ...], Any]]
    Fixed = tuple[int, int, Any]

OUT_OF_BAND_STATE = 64 * 1024  # a bytes state at least this large is written as a raw buffer
_STATE_MODULES = ("polars", "torch")  # their objects pickle as one bytes state or argument
_ARRAY_MODULES = ("numpy", "pandas", "pyarrow")  # see _Pickler
# Arrow arrays are immutable; these types' buffers are always Arrow's own memory (numeric ones
# can be a numpy array's, which the program may change in place)
_FIXED_ARROW_TYPES = frozenset({"string", "large_string", "binary", "large_binary"})
REFUSED = (pickle.PicklingError, TypeError, AttributeError)  # what pickle raises for what it cannot save
OBJECT_ARRAY_MIN = 4096  # object arrays with this many elements are pickled apart
RECORDS_MIN = 4096  # lists of plain builtin values with this many items are pickled by runs
RUN_ITEMS = 8192
MAX_RECORD_NESTING = 8
_RECORD_TYPES = frozenset({dict, list, tuple, str, int, float, bool, type(None)})
_CONTAINERS = frozenset({dict, list, tuple})
# what an object held once by a list counts while that list is mapped over, as `counts` is
# made (measured, not assumed: it differs between Python versions), plus its container and `layer`
_HELD_HERE = next(map(sys.getrefcount, [[]])) + 2
_IMMUTABLE = frozenset({str, int, float, bytes, bool, type(None)})
_NO_REFERENTS = _IMMUTABLE | {complex, bytearray}
_module_of = type.__dict__["__module__"].__get__
_FLAT = frozenset({dict, list, tuple, set, frozenset})


class Allowance:
    """The bytes that what is kept for the next checkpoint may take, shared by several
    `Generations` and counted again at each checkpoint."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True


class Generations:
    """What one checkpoint keeps for the next: entries used by a checkpoint are kept (within
    `allowance`, if any), the others dropped at the next one; `clear()` drops all (after the
    final checkpoint chkpt holds no reference to the program's objects)."""

    def __init__(self, allowance: Allowance | None = None) -> None:
        self.previous: dict[Any, Any] = {}
        self.current: dict[Any, Any] = {}
        self.allowance = allowance

    def next_checkpoint(self) -> None:
        self.previous, self.current = self.current, {}

    def clear(self) -> None:
        self.previous, self.current = {}, {}

    def size(self, entry: Any) -> int:
        """The memory `entry` takes beyond the program's own."""
        return 0

    def keep(self, key: Any, entry: Any) -> Any:
        """Keep `entry` for the next checkpoint if the allowance has room for it; returns it."""
        if self.allowance is None or self.allowance.take(self.size(entry)):
            self.current[key] = entry
        return entry

    def get(self, key: Any) -> Any:
        """The entry under `key`, kept for the next checkpoint; None if there is none."""
        entry = self.current.get(key)
        if entry is None:
            entry = self.previous.get(key)
            if entry is not None:
                self.keep(key, entry)
        return entry


class ObjectArrays(Generations):
    """The pickles of large numpy object arrays (pandas object columns), by runs of RUN_ITEMS
    elements, kept between checkpoints so that an unchanged run is not pickled again and a
    changed element costs its run's pickle.

    A run is known by the hash of its raw memory: the addresses of its elements. That
    identifies its content only while those objects live and cannot change, so an entry holds
    a copy of the run (references to every element, so no address can be reused) and is made
    only for runs whose elements are all str, int, float, bytes, bool or None. The hash of the
    whole array's memory names its runs' keys, so an unchanged array is one hash.
    """

    def pickled(self, array: Any, how: Mapping[type, str | None] | None = None) -> tuple[list[bytes], bool] | None:
        """The pickles of C-contiguous object array `array`: those of its runs, kept (True), or,
        when an element could change, one pickle of the whole array (by `how`), not kept
        (False); None when an element's class is defined in `__main__` (then it is pickled in
        the value's stream, as usual)."""
        import ctypes

        import xxhash

        flat = array.reshape(-1)  # a view: the array is C-contiguous
        memory = memoryview((ctypes.c_char * array.nbytes).from_address(array.ctypes.data))
        whole = (array.shape, array.dtype.str, xxhash.xxh3_128_digest(memory))
        keys = self.get(whole)  # the keys of its runs, when it is the same as before
        if keys is not None:
            entries = [self.get(key) for key in keys]
            if None not in entries:
                return [entry[1] for entry in entries], True
        width = array.itemsize
        runs, keys = [], []
        for start in range(0, len(flat), RUN_ITEMS):
            key = (array.dtype.str, xxhash.xxh3_128_digest(memory[start * width:(start + RUN_ITEMS) * width]))
            keys.append(key)
            entry = self.get(key)
            if entry is None:
                run = flat[start:start + RUN_ITEMS]
                kinds = set(map(type, run))
                if not kinds <= _IMMUTABLE:
                    if any(plain.module_name(kind) == "__main__" for kind in set(map(type, flat))):
                        return None  # loads with serialize.loads's stand-ins only from the value's stream
                    # its elements may change
                    return [_dumps_plainly(array, plain.Pickling(_in_main) if how is None else how)], False
                entry = self.keep(key, (run.copy(), pickle.dumps(run, protocol=5)))
            runs.append(entry[1])
        if all(key in self.current for key in keys):
            self.keep(whole, tuple(keys))
        return runs, True

    def size(self, entry: Any) -> int:
        return 0 if isinstance(entry[0], tuple) else entry[0].nbytes + len(entry[1])


class RecordRuns(Generations):
    """The pickles of long lists of plain builtin values (records: dicts of numbers and
    strings), by runs of RUN_ITEMS items, kept between checkpoints so that an unchanged run is
    not pickled again and a changed one is pickled alone.

    A run is known by the hash of its marshal dump (version 4), which is written in C about 6
    times faster than a pickle and determined by the values, their exact types and which objects
    are shared or referred to from elsewhere (marking those: a change of that makes a run look
    changed). An entry is made only for a run of dicts, lists, tuples, str, int, float, bool
    and None: marshal writes these types in codes of their own, while it writes any other
    buffer-like object (a numpy scalar, bytes) alike. Entries hold pickles, no reference to the
    program's objects.

    A list whose runs share a container is pickled whole (a run's pickle would load a copy of
    it), and so is one holding other objects; such a list is held until the next checkpoint so
    that it is not looked at again while it lives. The first item of each run is looked into
    before the run is dumped, so that marshal does not copy the arrays of a list of samples.
    """

    def runs(self, items: list[Any]) -> list[bytes] | None:
        """The pickles of `items` run by run, None when it is to be pickled whole."""
        import marshal

        import xxhash

        if self.get(("whole", id(items))) is not None:
            return None
        pickles, referred_items, nested = [], False, []
        for start in range(0, len(items), RUN_ITEMS):
            run = items[start:start + RUN_ITEMS]
            if _referred_containers(run[:1]) is None:
                return self._whole(items)
            try:
                # in a tuple: marshal marks an object referred to more than once, and on 3.14+
                # `run`'s own count differs between two calls (a borrowed reference on the stack)
                key = xxhash.xxh3_128_digest(marshal.dumps((run,), 4))
            except ValueError:  # an object marshal cannot write, or nested too deeply
                return self._whole(items)
            # (pickle, whether an item is referred to from elsewhere, whether a deeper container is)
            entry = self.get(key)
            if entry is None or entry[2]:
                referred = _referred_containers(run)
                if referred is None:
                    return self._whole(items)
                nested += referred[1]
                if entry is None:
                    entry = (pickle.dumps(run, protocol=5), bool(referred[0]), bool(referred[1]))
                    if xxhash.xxh3_128_digest(marshal.dumps((run,), 4)) == key:  # not changed meanwhile by a thread
                        self.keep(key, entry)
            referred_items = referred_items or entry[1]
            pickles.append(entry[0])
        # an item in two runs is in the list twice; a deeper container may be in any item
        if (referred_items and _item_in_two_runs(items)) or (nested and _in_two_runs(items, nested)):
            return self._whole(items)
        return pickles

    def _whole(self, items: list[Any]) -> None:
        self.keep(("whole", id(items)), items)  # held: its id cannot be reused meanwhile

    def size(self, entry: Any) -> int:
        return len(entry[0]) if isinstance(entry, tuple) else 0  # a list held is the program's


def _referred_containers(run: list[Any]) -> tuple[list[Any], list[Any]] | None:
    """The containers in `run` referred to from anywhere but their one place in it: the items
    themselves, and those deeper; None when `run` holds anything but plain builtin values (or
    is nested too deeply)."""
    getrefcount, is_container = sys.getrefcount, _CONTAINERS.__contains__
    found: list[list[Any]] = []
    layer = run
    for _ in range(MAX_RECORD_NESTING):
        if not _RECORD_TYPES.issuperset(map(type, layer)):
            return None
        containers = list(compress(layer, map(is_container, map(type, layer))))
        if not containers:
            return (found[0] if found else []), [c for referred in found[1:] for c in referred]
        counts = list(map(getrefcount, containers))  # counting their container's and `layer`'s
        found.append(list(compress(containers, map(_HELD_HERE.__lt__, counts))))
        layer = gc.get_referents(*containers)
    return None


def _item_in_two_runs(items: list[Any]) -> bool:
    """Whether an object is an item of two runs of `items`."""
    ids = list(map(id, items))
    if len(set(ids)) == len(ids):
        return False
    first_run: dict[int, int] = {}  # looked at only for a list holding an object twice
    return any(first_run.setdefault(ident, index // RUN_ITEMS) != index // RUN_ITEMS
               for index, ident in enumerate(ids))


def _in_two_runs(items: list[Any], suspects: list[Any]) -> bool:
    """Whether a container of `suspects` is found in two runs of `items`."""
    wanted = set(map(id, suspects))
    seen: set[int] = set()
    for start in range(0, len(items), RUN_ITEMS):
        found: set[int] = set()
        layer = items[start:start + RUN_ITEMS]
        while layer:
            found.update(wanted.intersection(map(id, layer)))
            layer = gc.get_referents(*compress(layer, map(_CONTAINERS.__contains__, map(type, layer))))
        if seen & found:
            return True
        seen |= found
    return False


class Kept:
    """What serialization keeps from one checkpoint for the next, in at most `limit` bytes
    (past it, values are pickled again at each checkpoint)."""

    def __init__(self, limit: int) -> None:
        self.allowance = Allowance(limit)
        self.arrays = ObjectArrays(self.allowance)
        self.records = RecordRuns(self.allowance)

    def next_checkpoint(self) -> None:
        self.allowance.used = 0
        self.arrays.next_checkpoint()
        self.records.next_checkpoint()

    def clear(self) -> None:
        self.arrays.clear()
        self.records.clear()


class _Call:
    """Pickles as `function(*args)`: what a value is rebuilt from at load time."""

    __slots__ = ("args", "function")

    def __init__(self, function: Any, *args: Any) -> None:
        self.function = function
        self.args = args

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return self.function, self.args


def _loaded_runs(pickles: list[bytes]) -> _Call:
    """`map(pickle.loads, runs)`, each run's pickle an out-of-band buffer."""
    return _Call(map, pickle.loads, tuple(pickle.PickleBuffer(run) for run in pickles))


def _joined_object_runs(pickles: list[bytes], shape: tuple[int, ...]) -> _Call:
    """An object array pickled as the pickles of its runs, in a form plain `pickle.loads` reads:
    `numpy.reshape(numpy.concatenate(list(map(pickle.loads, runs))), shape)`."""
    import numpy

    return _Call(numpy.reshape, _Call(numpy.concatenate, _Call(list, _loaded_runs(pickles))), shape)


def _joined_runs(pickles: list[bytes]) -> _Call:
    """A list pickled as the pickles of its runs, in a form plain `pickle.loads` reads:
    `list(chain.from_iterable(map(pickle.loads, runs)))`."""
    return _Call(list, _Call(itertools.chain.from_iterable, _loaded_runs(pickles)))


def _fixed_pickles(pickles: list[bytes]) -> dict[tuple[int, int], Any]:
    """The kept pickles of runs as `fixed` buffers (bytes never change), by (id, size)."""
    return {(id(run), len(run)): run for run in pickles}


class Serialized:
    """The pickle stream of one value and the raw buffers it refers to, in order.

    `fixed` has, per buffer, (address, size, owner) when the buffer's memory cannot change
    while `owner` lives (an Arrow string array's), else None.
    """

    __slots__ = ("buffers", "fixed", "stream")

    def __init__(self, stream: bytes, buffers: list[memoryview], fixed: list[Fixed | None]) -> None:
        self.stream = stream
        self.buffers = buffers
        self.fixed = fixed

    @property
    def size(self) -> int:
        return len(self.stream) + sum(b.nbytes for b in self.buffers)


class Skeleton:
    """`root` to be pickled with the values in `refs` registered before `order` as references,
    and numpy views in it as views of the array `views(view)` names, if any: (its persistent
    id, the array)."""

    __slots__ = ("order", "refs", "root", "views")

    def __init__(self, root: Any, refs: Refs, order: int,
                 views: Callable[[Any], tuple[tuple[str, ...], Any] | None] | None = None) -> None:
        self.root = root
        self.refs = refs
        self.order = order
        self.views = views


class Unsaved:
    """Stands, in a loaded container or object, for a part that was not saved."""

    __slots__ = ("name", "reason")

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def __repr__(self) -> str:
        return f"<not saved: {self.name}: {self.reason}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return Unsaved, (self.name, self.reason)


class StandIn:
    """An object of a class the saving script defined, loaded where that class is not defined.

    Its attributes are all there, its methods are not; define or import the class in
    `__main__` before loading to get real instances.
    """

    __chkpt_class__ = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        self = object.__new__(cls)
        if args or kwargs:
            self.__dict__["_args"] = (args, kwargs) if kwargs else args
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Arguments were kept by __new__."""

    def __setstate__(self, state: Any) -> None:
        slots = None
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict | type(None)):
            state, slots = state
        if isinstance(state, dict):
            self.__dict__.update(state)
        elif state is not None:
            self.__dict__["_state"] = state
        if slots:
            self.__dict__.update(slots)

    def __setitem__(self, key: Any, value: Any) -> None:  # a dict subclass's items
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value: Any) -> None:  # a list subclass's items
        self.__dict__.setdefault("_list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("_list", []).extend(values)

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}: {type(value).__name__}" for key, value in vars(self).items())
        return f"<stand-in for __main__.{self.__chkpt_class__} ({fields})>"


_stand_ins: dict[str, type] = {}


def stand_in(qualname: str) -> type:
    """The stand-in class for `__main__.<qualname>` (one per name, so instances share it)."""
    cls = _stand_ins.get(qualname)
    if cls is None:
        name = qualname.rpartition(".")[2]
        cls = _stand_ins[qualname] = type(name, (StandIn,), {
            "__chkpt_class__": qualname, "__qualname__": qualname, "__module__": __name__})
    return cls


class _OutOfBand:
    """A large bytes value in an object's reduced form, written as a raw buffer."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return bytes, (pickle.PickleBuffer(self.data),)


def _is_large_bytes(value: Any) -> bool:
    return type(value) is bytes and len(value) >= OUT_OF_BAND_STATE


_BYTES_APART = frozenset({bytes, list, tuple, dict})


def _large_bytes_apart(obj: Any, buffer_callback: Callable[[Any], None] | None
                       ) -> tuple[bytes, dict[tuple[int, int], Any]]:
    """The pickle of a large bytes value, or of a list, tuple or dict of plain values, with each
    large bytes item a raw buffer of its own: an unchanged item is then found stored by its hash
    (a changed list stores only its new items), and, as bytes never change, is not hashed again
    while it lives (`fixed`)."""
    cls = type(obj)
    items = [obj] if cls is bytes else obj.values() if cls is dict else obj
    fixed = {(id(item), len(item)): item for item in items if _is_large_bytes(item)}
    if fixed:
        def apart(value: Any) -> Any:
            return _OutOfBand(value) if _is_large_bytes(value) else value

        obj = apart(obj) if cls is bytes else {k: apart(v) for k, v in obj.items()} if cls is dict \
            else cls(map(apart, obj))
    return pickle.dumps(obj, protocol=5, buffer_callback=buffer_callback), fixed


def _large_bytes_out_of_band(obj: Any) -> Any:
    """The reduced form of an object of the `_STATE_MODULES`, with its large bytes state or
    arguments out of band, else NotImplemented."""
    if issubclass(type(obj), type):  # classes pickle by name
        return NotImplemented
    reduced = obj.__reduce_ex__(5)
    if type(reduced) is not tuple or len(reduced) < 2:
        return NotImplemented

    big = _is_large_bytes
    args = reduced[1]
    state = reduced[2] if len(reduced) > 2 else None
    if not big(state) and not (type(args) is tuple and any(big(a) for a in args)):
        return reduced  # not NotImplemented: the pickler would call __reduce_ex__ a second time
    if type(args) is tuple:
        args = tuple(_OutOfBand(a) if big(a) else a for a in args)
    return (reduced[0], args, _OutOfBand(state) if big(state) else state, *reduced[3:])


def _in_main(cls: type) -> bool:
    """The default rule, without the salience rules: the classes of `__main__` are the program's."""
    return plain.module_name(cls) == "__main__"


class _Reference:
    """Stands, in a reduced form, for a value saved on its own: pickled as its persistent id."""

    __slots__ = ("pid",)

    def __init__(self, pid: tuple[str, ...]) -> None:
        self.pid = pid


class _AsIs:
    """An object pickled by its own class's reducer, from inside a reduced form that wraps it."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.obj.__reduce_ex__(protocol)


class _Memory:
    """The memory an array's elements span, as an array interface of bytes (no copy); it keeps
    the array alive while an array is made of it."""

    def __init__(self, array: Any, start: int, size: int) -> None:
        self.base = array
        self.__array_interface__ = {"data": (start, not array.flags.writeable), "shape": (size,),
                                    "typestr": "|u1", "version": 3}


def _reduced_array(array: Any, skeleton: Skeleton | None) -> Any:
    """numpy.ndarray `array` reduced keeping what numpy's own pickling drops, or NotImplemented
    (numpy's own does): a view of an array saved on its own (`skeleton.views`) as a view of it;
    a view whose elements overlap as the memory they span; a non-contiguous read-only array
    read-only (a contiguous one is pickled as a read-only buffer, which loads read-only)."""
    if array.dtype.hasobject:
        return NotImplemented
    if array.base is not None:
        viewed = None if skeleton is None or skeleton.views is None else skeleton.views(array)
        if viewed is not None:
            pid, target = viewed
            return _as_view, (_Reference(pid), salience.address(array) - salience.address(target), array.shape,
                              array.strides, array.dtype, array.flags.writeable)
        flags = array.flags
        low, span = (0, array.nbytes) if flags.c_contiguous or flags.f_contiguous else salience.array_span(array)
        if span < array.nbytes:  # elements that overlap: only a non-contiguous array's can
            import numpy

            memory = numpy.asarray(_Memory(array, salience.address(array) + low, span))
            return _strided, (memory, -low, array.shape, array.strides, array.dtype, array.flags.writeable)
    if not array.flags.writeable and not (array.flags.c_contiguous or array.flags.f_contiguous):
        return _read_only, (_AsIs(array),)
    return NotImplemented


def _as_view(viewed: Any, offset: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: Any,
             writeable: bool) -> Any:
    """An array viewing the memory of `viewed` (loaded once for every view of it) as it did when saved."""
    if type(viewed) is Unsaved:
        return Unsaved(viewed.name, f"the array this one views was not saved: {viewed.reason}")
    memory = viewed.ravel(order="K").view("u1")  # no copy: the viewed array is contiguous
    return _strided(memory, offset, shape, strides, dtype, writeable and viewed.flags.writeable)


def _strided(memory: Any, offset: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: Any,
             writeable: bool) -> Any:
    """An array of `shape` and `strides` over the bytes `memory`, its first element at `offset`."""
    import numpy

    array = numpy.ndarray(shape, dtype, buffer=memory, offset=offset, strides=strides)
    if not writeable:
        array.flags.writeable = False
    return array


def _read_only(array: Any) -> Any:
    array.flags.writeable = False
    return array


def _reduced_masked(masked: Any) -> Any:
    """A numpy masked array with the flags its own pickling drops (a hard mask among them)."""
    return _masked, (_AsIs(masked), masked._hardmask, masked._sharedmask, masked._isfield)


def _masked(masked: Any, hard: bool, shared: bool, field: bool) -> Any:
    masked._hardmask, masked._sharedmask, masked._isfield = hard, shared, field
    return masked


class _Pickler(pickle.Pickler):
    """Protocol 5, large bytes states out of band, a skeleton's parts as references, the
    program's objects by their plain state (`how`), numpy arrays with what numpy's pickling drops;
    with `arrays`, large object arrays pickled apart, as out-of-band buffers (`ObjectArrays`),
    pandas' Arrow-backed arrays not copied, and the buffers of Arrow string arrays noted in
    `fixed` by (address, size)."""

    __slots__ = ("arrays", "fixed", "how", "skeleton")  # set by `_pickler`: no Python __init__ per value

    skeleton: Skeleton | None
    arrays: ObjectArrays | None
    how: Mapping[type, str | None]
    fixed: dict[tuple[int, int], Any]

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        how = self.how[cls]
        if how is not None:
            if how is plain.PLAIN:
                return plain.reduce(obj)
            if how is plain.BY_NAME:  # a class whose metaclass is not `type`
                return _named_class, (plain.module_name(obj), plain.class_qualname(obj))
            raise pickle.PicklingError(how)
        module = _module_of(cls)
        if type(module) is not str:
            return NotImplemented
        if module == "numpy":
            if _is_large_object_array(obj) and self.arrays is not None:
                pickled = self.arrays.pickled(obj, self.how)
                if pickled is not None:
                    pickles, kept = pickled
                    if not kept:  # pickle.loads of its own pickle: a stream plain Python reads
                        return pickle.loads, (pickle.PickleBuffer(pickles[0]),)
                    self.fixed.update(_fixed_pickles(pickles))
                    return _joined_object_runs(pickles, obj.shape).__reduce_ex__(5)
            if plain.class_name(cls) == "ndarray":
                return _reduced_array(obj, self.skeleton)
            return NotImplemented
        if module.startswith("numpy.ma") and plain.class_name(cls) == "MaskedArray":
            return _reduced_masked(obj)
        if self.arrays is not None:
            if module == "pyarrow.lib":
                if str(getattr(obj, "type", "")) in _FIXED_ARROW_TYPES and hasattr(obj, "buffers"):
                    self.fixed.update(((b.address, b.size), obj) for b in obj.buffers() if b is not None)
                return NotImplemented
            if module.startswith("pandas"):
                reduced = _arrow_backed(obj)
                if reduced is not None:
                    return reduced
        return _large_bytes_out_of_band(obj) if module.startswith(_STATE_MODULES) else NotImplemented


class _SkeletonPickler(_Pickler):
    """A `_Pickler` for a skeleton: its parts saved on their own, and the arrays its views view,
    as references (a pickler without `persistent_id` is not asked for one at every object)."""

    __slots__ = ()

    def persistent_id(self, obj: Any) -> tuple[str, ...] | None:
        if type(obj) is _Reference:
            return obj.pid
        skeleton = self.skeleton
        assert skeleton is not None
        entry = skeleton.refs.get(id(obj))
        if entry is None or entry[0] >= skeleton.order or entry[2] is not obj:
            return None
        return entry[1]


def _arrow_backed(obj: Any) -> tuple[Any, ...] | None:
    """The reduced form of a pandas Arrow-backed array (pandas 3's string columns) with its Arrow
    array as it is: pandas' own combines its chunks first, a copy of the column every time."""
    base = getattr(sys.modules.get("pandas.core.arrays.arrow.array"), "ArrowExtensionArray", None)
    if base is None or not issubclass(type(obj), base) or type(obj).__getstate__ is not base.__getstate__ \
            or "_pa_array" not in obj.__dict__:
        return None
    state = dict(obj.__dict__)
    if "_cache" in state:
        state["_cache"] = {}  # as pandas pickles it: cached properties are recomputed
    return copyreg.__newobj__, (type(obj),), state


def _is_large_object_array(obj: Any) -> bool:
    return (plain.class_name(type(obj)) == "ndarray" and obj.dtype.hasobject
            and obj.size >= OBJECT_ARRAY_MIN and obj.flags.c_contiguous and obj.dtype.fields is None)


_cloud_classes: dict[type, type] = {}


def _cloud(base: type) -> type:
    """`base` with cloudpickle's reductions after its own: functions and classes that pickle
    cannot name (lambdas, closures, those defined inside a function) pickled by value."""
    found = _cloud_classes.get(base)
    if found is None:
        import cloudpickle

        def reducer_override(self: Any, obj: Any) -> Any:
            reduced = base.reducer_override(self, obj)
            return cloudpickle.Pickler.reducer_override(self, obj) if reduced is NotImplemented else reduced

        found = _cloud_classes[base] = type(f"Cloud{base.__name__}", (base, cloudpickle.Pickler),
                                            {"__slots__": (), "reducer_override": reducer_override})
    return found


def _pickler(file: io.BytesIO, buffer_callback: Callable[[Any], None] | None, skeleton: Skeleton | None,
             arrays: ObjectArrays | None, how: Mapping[type, str | None], cloud: bool = False) -> _Pickler:
    base = _Pickler if skeleton is None else _SkeletonPickler
    pickler = (_cloud(base) if cloud else base)(file, 5, buffer_callback=buffer_callback)
    pickler.skeleton, pickler.arrays, pickler.how, pickler.fixed = skeleton, arrays, how, {}
    return pickler


def _dumps_plainly(obj: Any, how: Mapping[type, str | None]) -> bytes:
    """pickle.dumps(obj), the program's objects by their plain state, nothing apart."""
    file = io.BytesIO()
    _pickler(file, None, None, None, how).dump(obj)
    return file.getvalue()


def _pickle(obj: Any, buffer_callback: Callable[[Any], None] | None, kept: Kept | None,
            how: Mapping[type, str | None], cloud: bool = False) -> tuple[bytes, dict[tuple[int, int], Any]]:
    if kept is not None and type(obj) is list and len(obj) >= RECORDS_MIN:
        runs = kept.records.runs(obj)
        if runs is not None:
            return pickle.dumps(_joined_runs(runs), protocol=5, buffer_callback=buffer_callback), _fixed_pickles(runs)
    cls = type(obj)
    if cls in _NO_REFERENTS or (cls in _FLAT and _NO_REFERENTS.issuperset(map(type, obj)) and (
            cls is not dict or _NO_REFERENTS.issuperset(map(type, obj.values())))):
        # numbers and strings, or a container of only them: nothing for `_Pickler` to do, faster
        if kept is not None and cls in _BYTES_APART:
            return _large_bytes_apart(obj, buffer_callback)
        return pickle.dumps(obj, protocol=5, buffer_callback=buffer_callback), {}
    skeleton = obj if cls is Skeleton else None
    file = io.BytesIO()
    # object arrays and Arrow buffers are kept apart for the values of numpy, pandas and pyarrow;
    # a skeleton's object arrays stay in its stream: their elements may be its references
    arrays = kept.arrays if kept is not None and _module_of(cls).startswith(_ARRAY_MODULES) else None
    pickler = _pickler(file, buffer_callback, skeleton, arrays, how, cloud)
    pickler.dump(skeleton.root if skeleton else obj)
    return file.getvalue(), pickler.fixed


def dumps(obj: Any, kept: Kept | None = None, how: Mapping[type, str | None] | None = None) -> Serialized:
    """Serialize `obj` (or a Skeleton); raises whatever pickle raises for an unsaveable value.

    With `kept`, large object arrays in numpy and pandas values and long lists of plain builtin
    values are pickled apart and kept there, so that the next checkpoint does not pickle them
    again while they are unchanged. `how[cls]` says how objects of a class are pickled
    (salience's `Rules.pickling`); by default the classes of `__main__` are the program's.
    """
    buffers: list[pickle.PickleBuffer] = []
    how = plain.Pickling(_in_main) if how is None else how
    try:
        stream, fixed = _pickle(obj, buffers.append, kept, how)
    except REFUSED as refused:  # a lambda, a closure: cloudpickle saves them by value, when installed
        if not salience.fallback_available():
            raise
        buffers.clear()
        try:
            stream, fixed = _pickle(obj, buffers.append, None, how, cloud=True)
        except Exception:
            raise refused from None
    # pickle refuses non-contiguous buffers itself, so every one here has a raw view
    raw = [buffer.raw() for buffer in buffers]
    return Serialized(stream, raw, [_fixed(view, fixed) for view in raw])


def _fixed(view: memoryview, fixed: dict[tuple[int, int], Any]) -> Fixed | None:
    """(address, size, owner) of a buffer noted as fixed, None for any other."""
    if not fixed:
        return None
    owner = view.obj  # an Arrow buffer (its memory's address) or bytes kept by `Kept`
    key = (owner.address if type(owner).__module__ == "pyarrow.lib" else id(owner), view.nbytes)
    owner = fixed.get(key)
    return None if owner is None else (*key, owner)


class _Unpickler(pickle.Unpickler):
    def __init__(self, stream: Any, buffers: Sequence[Any], resolve: Callable[[str], Any] | None) -> None:
        super().__init__(io.BytesIO(stream), buffers=buffers)
        self.resolve = resolve

    def find_class(self, module: str, name: str) -> Any:
        return _main_class(name) if module == "__main__" else super().find_class(module, name)


    def persistent_load(self, pid: Any) -> Any:
        kind, name = pid[0], pid[1]
        if kind == "skip":
            return Unsaved(name, pid[2])
        if self.resolve is None:
            return Unsaved(name, "saved on its own; load it through its checkpoint")
        try:
            return self.resolve(name)
        except LookupError as exc:
            return Unsaved(name, str(exc).strip("'\""))


def _main_class(qualname: str) -> Any:
    """The class `__main__.<qualname>` of this process, or a stand-in for it."""
    found: Any = sys.modules.get("__main__")
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found if found is not None else stand_in(qualname)


def _named_class(module: str, qualname: str) -> Any:
    """A class pickled by its names (one whose metaclass is the program's: see _Pickler)."""
    if module == "__main__":
        return _main_class(qualname)
    __import__(module)
    found: Any = sys.modules[module]
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def loads(stream: bytes, buffers: Sequence[Any], resolve: Callable[[str], Any] | None = None) -> Any:
    """The value back from its stream and buffers (any buffer-protocol objects).

    `resolve(name)` gives the value of a part saved on its own (a skeleton's reference); it
    raises LookupError for a part that is not in the checkpoint (loaded as `Unsaved`).
    """
    return _Unpickler(stream, buffers, resolve).load()
