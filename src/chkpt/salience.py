"""What is worth saving, and how big it is, without importing numpy, pandas or the like.

Data objects are recognised by the module their type comes from (the `modules` prefixes:
numpy, pandas, polars, pyarrow, torch, scipy.sparse, xarray by default) and measured by
duck-typed probes (`nbytes`, pandas' `memory_usage`, polars' `estimated_size()`, pyarrow's
`get_total_buffer_size()`, torch's `element_size() * nelement()`), then `sys.getsizeof`.
A value is measured by the bytes its serialization holds: a numpy view pickles only its own
elements, never its base, so it is charged its own `nbytes`; a pyarrow slice pickles the
whole buffers it refers to, so it is charged those.

Every value is sorted into a kind once per type (cached), because a capture looks at tens of
thousands of values and must stay in the low milliseconds.
"""

from __future__ import annotations

import sys
import types
from itertools import islice

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
_LOCK_TYPES = frozenset({"lock", "RLock", "_RLock", "Condition", "Semaphore", "BoundedSemaphore",
                         "Event", "Barrier"})

# Kinds of values, decided per type.
DEFINITION = "definition"  # modules, functions, classes: code, never saved nor listed
UNSAVEABLE = "unsaveable"  # skipped and listed with the reason
DATA = "data"              # an object of a data library (the `modules` prefixes)
SCALAR = "scalar"          # a builtin number, string or bytes
CONTAINER = "container"    # dict, list, tuple, set, frozenset (and their subclasses)
USER_OBJECT = "user"       # an instance of a class of the script or of the user's own modules
LIBRARY_OBJECT = "library"  # an instance of a third-party class: saved whole, never walked
OTHER = "other"            # anything else (stdlib objects, slotted objects): saved whole


def type_module(obj: Any) -> str:
    module = getattr(type(obj), "__module__", None)
    return module if isinstance(module, str) else ""


def type_label(obj: Any) -> str:
    """A short, public-looking type name: "numpy.ndarray", "pandas.DataFrame", "dict"."""
    cls = type(obj)
    module = type_module(obj)
    if module in ("builtins", ""):
        return cls.__qualname__
    return f"{module.split('.')[0]}.{cls.__qualname__}"


def _type_reason(cls: type) -> str | None:
    name = cls.__name__
    module = getattr(cls, "__module__", "") or ""
    if issubclass(cls, types.GeneratorType | types.CoroutineType | types.AsyncGeneratorType):
        return f"a {name} cannot be saved (its running state is not data)"
    if issubclass(cls, types.FrameType | types.TracebackType):
        return f"a {name} cannot be saved (it is interpreter state)"
    if module in ("_io", "io") and name in _FILE_TYPES:
        return f"an open file ({name}) cannot be saved"
    if module == "socket" or name == "socket":
        return "a socket cannot be saved"
    if module in ("_thread", "threading") and name in _LOCK_TYPES:
        return f"a {name} (thread synchronisation) cannot be saved"
    if module in ("mmap", "subprocess", "selectors", "ssl") or module.startswith(
            ("multiprocessing", "concurrent", "asyncio", "sqlite3")):
        return f"a {module.split('.')[0]}.{cls.__qualname__} holds live system resources and cannot be saved"
    return None


def _is_stdlib(module: str) -> bool:
    top = module.partition(".")[0]
    names = sys.stdlib_module_names
    return top in names or top.lstrip("_") in names or top == "builtins"


def _module_file(module: str) -> str | None:
    """The source file of a loaded module (of its package when it has none of its own)."""
    for name in (module, module.partition(".")[0]):
        path = getattr(sys.modules.get(name), "__file__", None)
        if isinstance(path, str):
            return path
    return None


def _matches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


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

    def kind(self, obj: Any) -> tuple[str, str | None]:
        """(kind, reason it cannot be saved or None); decided once per type."""
        cls = type(obj)
        if cls is types.FunctionType and obj.__name__ == "<lambda>":
            return UNSAVEABLE, "a lambda cannot be saved (code, not data)"
        known = self._kinds.get(cls)
        if known is None:
            known = self._kinds[cls] = self._classify(cls)
        return known

    def _classify(self, cls: type) -> tuple[str, str | None]:
        if issubclass(cls, _DEFINITIONS) or cls.__name__ in _FUNCTION_TYPE_NAMES:
            return DEFINITION, None
        reason = _type_reason(cls)
        if reason is not None:
            return UNSAVEABLE, reason
        module = getattr(cls, "__module__", "") or ""
        if _matches(module, self.skip_prefixes):
            top = module.partition(".")[0]
            return UNSAVEABLE, f"a {top}.{cls.__qualname__} is display state, not data (skip_modules)"
        if _matches(module, self.prefixes):
            return DATA, None
        if issubclass(cls, BUILTIN_SCALARS):
            return SCALAR, None
        if issubclass(cls, BUILTIN_CONTAINERS):
            return CONTAINER, None
        if _is_stdlib(module) or not getattr(cls, "__dictoffset__", 0):
            return OTHER, None
        if module == "__main__":
            return USER_OBJECT, None
        # a library's class, or a type an extension made without a source file of its own
        path = _module_file(module)
        return (USER_OBJECT if path is not None and self._is_user_file(path) else LIBRARY_OBJECT), None

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
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def buffer_owner(obj: Any) -> Any:
    """The object that owns the memory of a numpy view (the array itself otherwise)."""
    owner = obj
    for _ in range(64):
        base = getattr(owner, "base", None)
        if base is None or not hasattr(base, "nbytes"):
            break
        owner = base
    return owner


def data_size(obj: Any) -> int:
    """Estimated bytes a data-library object serializes to (duck-typed probes)."""
    module = type_module(obj)
    try:
        if module.startswith("polars"):
            return int(obj.estimated_size())
        if module.startswith("pandas"):
            usage = obj.memory_usage(index=True, deep=False) if hasattr(obj, "index") \
                else obj.memory_usage(deep=False)
            return int(usage.sum()) if hasattr(usage, "sum") else int(usage)
        if module.startswith("pyarrow") and hasattr(obj, "get_total_buffer_size"):
            return int(obj.get_total_buffer_size())  # a slice pickles its whole buffers
        element_size = getattr(obj, "element_size", None)  # torch
        if callable(element_size) and hasattr(obj, "nelement"):
            return int(element_size()) * int(obj.nelement())
        nbytes = _int_or_none(getattr(obj, "nbytes", None))  # numpy, pyarrow, xarray
        if nbytes is not None:
            return nbytes
        parts = [getattr(obj, a, None) for a in ("data", "indices", "indptr", "row", "col", "coords")]
        sizes = [_int_or_none(getattr(p, "nbytes", None)) for p in parts if p is not None]
        if any(s is not None for s in sizes):  # scipy.sparse
            return sum(s for s in sizes if s is not None)
    except Exception:
        pass
    return sys.getsizeof(obj)


_BUILTIN_TYPES = SCALAR_TYPES | {dict, list, tuple, set, frozenset}
# Each builtin type's own `__sizeof__`, called unbound (several times cheaper than sys.getsizeof):
# `sys.getsizeof` of a value of one of these exact types is it plus GC_HEADER for the containers.
SIZEOF: dict[type, Callable[[Any], int]] = {cls: cls.__sizeof__ for cls in _BUILTIN_TYPES}
GC_HEADER = sys.getsizeof([]) - [].__sizeof__()
KEY_SIZE = 64  # a dict key, usually a short string: counted, not measured (measuring costs more)


def builtin_size(obj: Any, element_size: Callable[[Any], int] = sys.getsizeof, sample: int = 32) -> int:
    """Estimated bytes of a builtin value: large containers are measured on a sample."""
    size = sys.getsizeof(obj)
    if not isinstance(obj, BUILTIN_CONTAINERS) or not obj:
        return size
    count = len(obj)
    values: Any = obj.values() if isinstance(obj, dict) else obj
    if count > sample:
        values = list(islice(values, sample))
    if element_size is sys.getsizeof and _BUILTIN_TYPES.issuperset(map(type, values)):
        part = sum([SIZEOF[type(value)](value) for value in values])  # __sizeof__: no GC header
    else:
        part = sum(map(element_size, values))
    if isinstance(obj, dict):
        part += KEY_SIZE * min(count, sample)
    return size + part * count // min(count, sample)


def describe(obj: Any) -> dict[str, Any]:
    """shape and dtype where the object has them, as JSON-friendly values."""
    info: dict[str, Any] = {}
    try:
        shape = getattr(obj, "shape", None)
        if isinstance(shape, tuple) and all(isinstance(d, int) for d in shape):
            info["shape"] = list(shape)
        elif isinstance(obj, (*BUILTIN_CONTAINERS, str, bytes, bytearray)):
            info["shape"] = [len(obj)]
        dtype = getattr(obj, "dtype", None)
        if dtype is not None and not callable(dtype):
            info["dtype"] = str(dtype)
        else:
            dtypes = getattr(obj, "dtypes", None)
            if dtypes is not None and hasattr(dtypes, "unique"):  # pandas DataFrame
                uniques = [str(d) for d in dtypes.unique()]
                info["dtype"] = uniques[0] if len(uniques) == 1 else "mixed"
            elif isinstance(dtypes, list):  # polars
                uniques = sorted({str(d) for d in dtypes})
                info["dtype"] = uniques[0] if len(uniques) == 1 else "mixed"
    except Exception:
        pass
    return info
