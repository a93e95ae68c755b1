"""What is worth saving, and how big it is, without importing numpy, pandas or the like.

Data objects are recognised by the module their type comes from (the `modules` prefixes:
numpy, pandas, polars, pyarrow, torch, scipy.sparse, xarray by default) and measured by
duck-typed probes (`nbytes`, pandas' `memory_usage`, polars' `estimated_size()`, pyarrow's
`get_total_buffer_size()`, torch's `element_size() * nelement()`), each only where the type
itself defines it (a polars LazyFrame, a query, has none: it is never made to resolve
anything); every other value by the C-level `__sizeof__` of its class (plain.py), so no code
of the program runs to measure or describe its values. A value is measured by the bytes its
serialization holds: a numpy view is charged its own `nbytes`, or the memory it spans where
that is less (`broadcast_to`, sliding windows); a pyarrow slice pickles the whole buffers it
refers to, so it is charged those.

Classes of the program (defined in the script or the user's own modules) are saved by their
plain state (plain.py) when they derive from `object` or a builtin type; one that derives from
a library's class is pickled by that library's code, unless the program's class defines a
pickling or attribute hook over it (then it is skipped, with the reason).

Every value is sorted into a kind once per type (cached), because a capture looks at tens of
thousands of values and must stay in the low milliseconds.
"""

from __future__ import annotations

import _io
import _weakref
import gc
import sys
import types
from itertools import islice

from chkpt import plain

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from chkpt.config import Config

BUILTIN_CONTAINERS = (dict, list, tuple, set, frozenset)
BUILTIN_SCALARS = (int, float, complex, bool, type(None), str, bytes, bytearray)
# Exact types whose values hold no other object: a container made only of these is never walked.
SCALAR_TYPES = frozenset({int, float, complex, bool, type(None), str, bytes, bytearray})
_DEFINITIONS = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type,
                types.MethodType, types.CodeType, staticmethod, classmethod, property,
                types.WrapperDescriptorType, types.MethodWrapperType, types.MethodDescriptorType,
                types.ClassMethodDescriptorType, types.GetSetDescriptorType,
                types.MemberDescriptorType)
# Compiled functions of extension modules (Cython's, as in scikit-learn and pandas) are code too.
_FUNCTION_TYPE_NAMES = frozenset({"cython_function_or_method", "fused_cython_function"})
_FILE_TYPES = frozenset({"TextIOWrapper", "BufferedReader", "BufferedWriter", "BufferedRandom",
                         "FileIO"})
_FILE_CLASSES = frozenset({_io.TextIOWrapper, _io.BufferedReader, _io.BufferedWriter, _io.BufferedRandom, _io.FileIO})
_LOCK_TYPES = frozenset({"lock", "RLock", "_RLock", "Condition", "Semaphore", "BoundedSemaphore",
                         "Event", "Barrier"})
_PROXIES = (_weakref.ProxyType, _weakref.CallableProxyType)

# Kinds of values, decided per type.
DEFINITION = "definition"  # modules, functions, classes: code, never saved nor listed
UNSAVEABLE = "unsaveable"  # skipped and listed with the reason
DATA = "data"              # an object of a data library (the `modules` prefixes)
SCALAR = "scalar"          # a builtin number, string or bytes
CONTAINER = "container"    # dict, list, tuple, set, frozenset (and their subclasses)
USER_OBJECT = "user"       # an instance of a class of the script or of the user's own modules
LIBRARY_OBJECT = "library"  # an instance of a third-party class: saved whole, never walked
OTHER = "other"            # anything else (stdlib objects): saved whole

class_module = plain.module_name


def type_module(obj: Any) -> str:
    return class_module(type(obj))


def type_label(obj: Any) -> str:
    """A short, public-looking type name: "numpy.ndarray", "pandas.DataFrame", "dict"."""
    cls = type(obj)
    module = type_module(obj)
    if module in ("builtins", ""):
        return plain.class_qualname(cls)
    return f"{module.split('.')[0]}.{plain.class_qualname(cls)}"


def _type_reason(cls: type) -> str | None:
    name = plain.class_name(cls)
    module = class_module(cls)
    if issubclass(cls, types.GeneratorType | types.CoroutineType | types.AsyncGeneratorType):
        return f"a {name} cannot be saved (its running state is not data)"
    if issubclass(cls, types.FrameType | types.TracebackType):
        return f"a {name} cannot be saved (it is interpreter state)"
    if module in ("_io", "io") and name in _FILE_TYPES:
        return f"a file object ({name}) cannot be saved"  # Rules.kind says whether it is open
    if module == "socket" or name == "socket":
        return "a socket cannot be saved"
    if module in ("_thread", "threading") and name in _LOCK_TYPES:
        return f"{_a(name)} {name} (thread synchronisation) cannot be saved"
    if module in ("mmap", "subprocess", "selectors", "ssl") or module.startswith(
            ("multiprocessing", "concurrent", "asyncio", "sqlite3")):
        return (f"{_a(module)} {module.split('.')[0]}.{plain.class_qualname(cls)} belongs to the running process "
                "(its files, processes, connections, threads or event loop) and cannot be saved")
    if module == "unittest.mock":  # each mock has a class of its own, named after its base
        base = next((plain.class_name(klass) for klass in plain.mro(cls)[1:] if class_module(klass) == "unittest.mock"),
                    name)
        return f"a mock (unittest.mock.{base}) is not saved: it records every use of it"
    if issubclass(cls, _PROXIES):
        return "a weak reference proxy cannot be saved (it stands for another object)"
    return None


def _a(word: str) -> str:
    """"a" or "an", as said before `word` (by its first letter)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _file_reason(obj: Any) -> str:
    """Why a file object of io's own classes is skipped, open or closed: whether it is closed is
    read from the OS file under it (io's C code, never a method of the program's)."""
    name = plain.class_name(type(obj))
    inner = obj
    for holder, member in ((_io.TextIOWrapper, "buffer"), (_io.BufferedReader, "raw"), (_io.BufferedWriter, "raw"),
                           (_io.BufferedRandom, "raw")):
        if isinstance(inner, holder):
            inner = holder.__dict__[member].__get__(inner)
    if type(inner) is not _io.FileIO:
        return f"a file object ({name}) cannot be saved"
    if _io.FileIO.__dict__["closed"].__get__(inner):
        return f"a closed file ({name}) cannot be saved (a file object, not data)"
    return f"an open file ({name}) cannot be saved"


def _is_stdlib(module: str) -> bool:
    top = module.partition(".")[0]
    names = sys.stdlib_module_names
    return top in names or top.lstrip("_") in names or top == "builtins"


_module_dict = types.ModuleType.__dict__["__dict__"].__get__


def _module_file(module: str) -> str | None:
    """The source file of a loaded module (of its package when it has none of its own)."""
    for name in (module, module.partition(".")[0]):
        found = sys.modules.get(name)
        if found is not None and issubclass(type(found), types.ModuleType):
            path = _module_dict(found).get("__file__")  # not getattr: a module's __getattr__ is its code
            if type(path) is str:
                return path
    return None


def _matches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


NO_FALLBACK = "pickle refuses it; with cloudpickle installed, pip install 'chkpt[cloudpickle]', it is saved"
_fallback: list[bool] = []  # whether cloudpickle is installed, once looked up


def fallback_available() -> bool:
    """Whether cloudpickle is installed: what pickle refuses (a lambda, a closure, a function or
    class defined inside another) is then saved by it. Looked up once, without importing it."""
    if not _fallback:
        import importlib.util

        try:
            _fallback.append(importlib.util.find_spec("cloudpickle") is not None)
        except (ImportError, ValueError):
            _fallback.append(False)
    return _fallback[0]


def closure_values(function: types.FunctionType) -> dict[str, Any]:
    """The values a closure holds, by the names its code gives them (an empty cell holds none)."""
    held = {}
    for name, cell in zip(function.__code__.co_freevars, function.__closure__ or (), strict=False):
        try:
            held[name] = cell.cell_contents
        except ValueError:  # an empty cell
            continue
    return held


def _closure_reason(function: types.FunctionType, kind: Callable[[Any], tuple[str, str | None]]) -> str | None:
    """Why a closure holding data is listed as skipped without cloudpickle (None for one holding
    only code)."""
    held = [f"{name}: {type_label(value)}" for name, value in closure_values(function).items()
            if kind(value)[0] not in (DEFINITION, SCALAR)]
    if not held:
        return None
    return f"a closure cannot be saved, nor the data it holds ({', '.join(held)}): {NO_FALLBACK}"


class Rules:
    """The salience rules of one config, with the per-type decisions they lead to."""

    def __init__(self, config: Config, is_user_file: Callable[[str], bool] | None = None) -> None:
        """`is_user_file` tells the user's own source files (the watched process's rule, with its
        settings); without one, the default rule of usercode.py decides."""
        if is_user_file is None:
            from chkpt.usercode import UserCode

            is_user_file = UserCode(None, None, "project", [], []).file
        self._is_user_file = is_user_file
        self.prefixes = tuple(config.modules)
        self.skip_prefixes = tuple(config.skip_modules)
        self.min_size = config.min_size
        self.max_object_size = config.max_object_size
        self.include_names = list(config.include_names)
        self.exclude_names = list(config.exclude_names)
        self._include = _name_matcher(self.include_names)
        self._exclude = _name_matcher(self.exclude_names)
        self._kinds: dict[type, tuple[str, str | None]] = {}
        self._program: dict[type, bool] = {}
        self.pickling = plain.Pickling(self.is_program)  # how objects of each class are pickled
        self.fallback = fallback_available()

    def kind(self, obj: Any) -> tuple[str, str | None]:
        """(kind, reason it cannot be saved or None); decided once per type."""
        cls = type(obj)
        if cls is types.FunctionType:  # saved by value by cloudpickle, when it is installed
            if obj.__name__ == "<lambda>":
                return (OTHER, None) if self.fallback else (UNSAVEABLE, f"a lambda cannot be saved: {NO_FALLBACK}")
            if obj.__closure__:
                reason = _closure_reason(obj, self.kind)
                if reason is not None:
                    return (OTHER, None) if self.fallback else (UNSAVEABLE, reason)
        known = self._kinds.get(cls)
        if known is None:
            known = self._kinds[cls] = self._classify(cls)
        if known[0] is UNSAVEABLE and cls in _FILE_CLASSES:
            return UNSAVEABLE, _file_reason(obj)
        return known

    def _classify(self, cls: type) -> tuple[str, str | None]:
        if issubclass(cls, _DEFINITIONS) or plain.class_name(cls) in _FUNCTION_TYPE_NAMES:
            return DEFINITION, None
        reason = _type_reason(cls)
        if reason is not None:
            return UNSAVEABLE, reason
        module = class_module(cls)
        if _matches(module, self.skip_prefixes):
            top = module.partition(".")[0]
            return UNSAVEABLE, f"a {top}.{plain.class_qualname(cls)} is display state, not data (skip_modules)"
        if _matches(module, self.prefixes):
            return DATA, None
        program = self.is_program(cls)
        how = self.pickling[cls] if program else None
        if how is not None and how is not plain.PLAIN:
            return UNSAVEABLE, f"not saved: {how}"
        if issubclass(cls, BUILTIN_SCALARS):
            return SCALAR, None
        if issubclass(cls, BUILTIN_CONTAINERS):
            return CONTAINER, None
        if program:  # walked through its dict and slots, never through its code
            return USER_OBJECT, None
        if _is_stdlib(module) or not type.__dict__["__dictoffset__"].__get__(cls):
            return OTHER, None
        return LIBRARY_OBJECT, None  # a library's class, or a type an extension made without a source file

    def is_program(self, cls: type) -> bool:
        """Whether the class is the program's own: defined in the script or the user's modules."""
        known = self._program.get(cls)
        if known is None:
            module = class_module(cls)
            if module == "__main__":
                known = True
            else:
                path = _module_file(module) if module and not _is_stdlib(module) else None
                known = path is not None and self._is_user_file(path)
            self._program[cls] = known
        return known

    def name_forced(self, name: str) -> bool:
        return self._include is not None and self._include(name) is not None

    def name_excluded(self, name: str) -> bool:
        return self._exclude is not None and self._exclude(name) is not None


def _name_matcher(patterns: list[str]) -> Callable[[str], Any] | None:
    """One compiled regular expression for a list of globs (None when there are none)."""
    if not patterns:
        return None
    import fnmatch
    import re

    return re.compile("|".join(fnmatch.translate(p) for p in patterns)).match


def _int_or_none(value: Any) -> int | None:
    return int(value) if type(value) is int else None


# The names data probes ask for; a type is asked only for those it defines itself (never a
# `__getattr__` that would make one up), found once per type and checkpoint (`forget`).
_PROBED = ("estimated_size", "memory_usage", "index", "get_total_buffer_size", "element_size", "nelement",
           "nbytes", "shape", "dtype", "dtypes")
_declared: dict[type, frozenset[str]] = {}


def _declares(cls: type, name: str) -> bool:
    found = _declared.get(cls)
    if found is None:
        found = _declared[cls] = frozenset(probe for probe in _PROBED if plain.find(cls, probe) is not None)
    return name in found


def forget() -> None:
    """Drop what was found per class (after each checkpoint: chkpt holds no class of the program's)."""
    _declared.clear()
    plain.forget()


_ndarray: type | None = None


def array_class() -> type | None:
    """numpy.ndarray, once numpy is imported (before, no value can be one)."""
    global _ndarray
    if _ndarray is None:
        numpy = sys.modules.get("numpy")
        if numpy is not None and issubclass(type(numpy), types.ModuleType):
            _ndarray = _module_dict(numpy).get("ndarray")
    return _ndarray


def buffer_owner(array: Any) -> Any:
    """The array that owns the memory of a numpy view (the array itself otherwise)."""
    ndarray = type(array)
    owner = array
    for _ in range(64):
        base = owner.base
        if base is None or not issubclass(type(base), ndarray):
            break
        owner = base
    return owner


def address(array: Any) -> int:
    """The address of a numpy array's first element."""
    return array.__array_interface__["data"][0]


def array_span(array: Any) -> tuple[int, int]:
    """(offset of the lowest byte from the first element's, bytes) of the memory a numpy array's
    elements span: less than its `nbytes` when elements overlap (`broadcast_to`, sliding windows)."""
    shape, strides = array.shape, array.strides
    if 0 in shape:
        return 0, 0
    low = sum(stride * (count - 1) for count, stride in zip(shape, strides, strict=True) if stride < 0)
    high = sum(stride * (count - 1) for count, stride in zip(shape, strides, strict=True) if stride > 0)
    return low, high - low + array.itemsize


def data_size(obj: Any) -> int:
    """Estimated bytes a data-library object serializes to (duck-typed probes, each asked only
    of a type that defines it)."""
    cls = type(obj)
    if cls is (_ndarray or array_class()):  # a view stores its elements or the memory they span
        flags = obj.flags
        if obj.base is None or flags.c_contiguous or flags.f_contiguous:
            return obj.nbytes
        return min(obj.nbytes, array_span(obj)[1])
    module = class_module(cls)
    try:
        if module.startswith("polars"):  # a LazyFrame is a query: nothing to measure without running it
            return int(obj.estimated_size()) if _declares(cls, "estimated_size") else plain.size_of(obj)
        if module.startswith("pandas") and _declares(cls, "memory_usage"):
            usage = obj.memory_usage(index=True, deep=False) if _declares(cls, "index") \
                else obj.memory_usage(deep=False)
            return int(usage.sum()) if hasattr(usage, "sum") else int(usage)
        if module.startswith("pyarrow") and _declares(cls, "get_total_buffer_size"):
            return int(obj.get_total_buffer_size())  # a slice pickles its whole buffers
        if _declares(cls, "element_size") and _declares(cls, "nelement"):  # torch
            return int(obj.element_size()) * int(obj.nelement())
        nbytes = _int_or_none(obj.nbytes) if _declares(cls, "nbytes") else None  # numpy, pyarrow, xarray
        if nbytes is not None:
            return nbytes
        fields = plain.attributes(obj) or {}  # scipy.sparse keeps its arrays in the instance dict
        parts = [fields[a] for a in ("data", "indices", "indptr", "row", "col", "coords") if a in fields]
        sizes = [_int_or_none(p.nbytes) for p in parts if _declares(type(p), "nbytes")]
        if any(s is not None for s in sizes):  # scipy.sparse
            return sum(s for s in sizes if s is not None)
    except Exception:
        pass
    return plain.size_of(obj)


_BUILTIN_TYPES = SCALAR_TYPES | {dict, list, tuple, set, frozenset}
_EXACT_CONTAINERS = frozenset(BUILTIN_CONTAINERS)
# Each builtin type's own `__sizeof__`, called unbound (several times cheaper than sys.getsizeof):
# `sys.getsizeof` of a value of one of these exact types is it plus GC_HEADER for the containers.
SIZEOF: dict[type, Callable[[Any], int]] = {cls: cls.__sizeof__ for cls in _BUILTIN_TYPES}
GC_HEADER = sys.getsizeof([]) - [].__sizeof__()
KEY_SIZE = 64  # a dict key, usually a short string: counted, not measured (measuring costs more)


def held_builtins(containers: list[Any], depth: int) -> list[Any] | None:
    """What `containers` hold directly, when nothing but builtin values is nested in them `depth`
    levels deep; None otherwise.

    Looked at level by level with `gc.get_referents`, in C: a namespace full of nested
    dicts of settings costs microseconds, not a Python-level walk.
    """
    first = layer = gc.get_referents(*containers)
    for _ in range(depth - 1):
        if not _BUILTIN_TYPES.issuperset(map(type, layer)):
            return None
        layer = gc.get_referents(*layer)  # numbers and strings have none; containers of any size are looked into
    return first if _BUILTIN_TYPES.issuperset(map(type, layer)) else None


def size(obj: Any) -> int:
    """sys.getsizeof(obj), without ever calling a `__sizeof__` written in Python (plain.size_of)."""
    return sys.getsizeof(obj) if type(obj) in _BUILTIN_TYPES else plain.size_of(obj)


def builtin_size(obj: Any, element_size: Callable[[Any], int] = size, sample: int = 32) -> int:
    """Estimated bytes of a builtin value (or of a subclass of one, read as the builtin): large
    containers are measured on a sample."""
    cls = type(obj)
    if cls in _EXACT_CONTAINERS:  # the common case, in C
        size_, base, count = sys.getsizeof(obj), cls, len(obj)
        values: Any = obj.values() if cls is dict else obj
    else:
        size_, base = plain.size_of(obj), plain.builtin_base(cls)
        if base not in BUILTIN_CONTAINERS:
            return size_ if base is not None else size(obj)
        count, values = plain.length(obj), plain.values(obj)
    if not count:
        return size_
    if count > sample or cls not in _EXACT_CONTAINERS:  # a sample; a subclass's values in one list
        values = list(islice(values, sample))
    if element_size is size and _BUILTIN_TYPES.issuperset(map(type, values)):
        part = sum([SIZEOF[type(value)](value) for value in values])  # __sizeof__: no GC header
    else:
        part = sum(map(element_size, values))
    if base is dict:
        part += KEY_SIZE * min(count, sample)
    return size_ + part * count // min(count, sample)


def describe(obj: Any, kind: str | None = None) -> dict[str, Any]:
    """shape and dtype where the object has them, as JSON-friendly values: a builtin container's
    or string's length, and what a data object's type defines (nothing that resolves a query)."""
    cls = type(obj)
    if kind is not DATA:
        base = plain.builtin_base(cls)
        return {"shape": [plain.length(obj)]} if base is not None and base not in (int, float, complex) else {}
    info: dict[str, Any] = {}
    if class_module(cls).startswith("polars") and not _declares(cls, "estimated_size"):
        return info
    try:
        shape = obj.shape if _declares(cls, "shape") else None
        if type(shape) is tuple and all(type(d) is int for d in shape):
            info["shape"] = list(shape)
        dtype = obj.dtype if _declares(cls, "dtype") else None
        if dtype is not None and not callable(dtype):
            info["dtype"] = str(dtype)
        elif _declares(cls, "dtypes"):
            dtypes = obj.dtypes
            if hasattr(dtypes, "unique"):  # pandas DataFrame
                uniques = [str(d) for d in dtypes.unique()]
                info["dtype"] = uniques[0] if len(uniques) == 1 else "mixed"
            elif type(dtypes) is list:  # polars
                uniques = sorted({str(d) for d in dtypes})
                info["dtype"] = uniques[0] if len(uniques) == 1 else "mixed"
    except Exception:
        pass
    return info
