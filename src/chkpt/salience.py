"""What is worth saving, and how big it is, without importing numpy, pandas or the like.

Data objects are recognised by the module their type comes from (the `modules` prefixes:
numpy, pandas, polars, pyarrow, torch, scipy.sparse, xarray by default) and measured by
duck-typed probes (`nbytes`, pandas' `memory_usage`, polars' `estimated_size()`, torch's
`element_size() * nelement()`), then `sys.getsizeof`. A numpy view is charged to the buffer
it shares, so a view and its base count once.
"""

from __future__ import annotations

import sys
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from chkpt.config import Config

BUILTIN_CONTAINERS = (dict, list, tuple, set, frozenset)
BUILTIN_SCALARS = (int, float, complex, bool, type(None), str, bytes, bytearray)
_DEFINITIONS = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type,
                types.MethodType, types.CodeType, staticmethod, classmethod, property)


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


def is_definition(obj: Any) -> bool:
    """Modules, functions and classes are code, not data: never saved, never listed."""
    if isinstance(obj, types.FunctionType) and obj.__name__ == "<lambda>":
        return False
    return isinstance(obj, _DEFINITIONS)


def unsaveable_reason(obj: Any) -> str | None:
    """Why `obj` cannot be saved (open files, sockets, locks, generators, lambdas), else None."""
    name = type(obj).__name__
    module = type_module(obj)
    if isinstance(obj, types.GeneratorType | types.CoroutineType | types.AsyncGeneratorType):
        return f"a {name} cannot be saved (its running state is not data)"
    if isinstance(obj, types.FunctionType) and obj.__name__ == "<lambda>":
        return "a lambda cannot be saved (code, not data)"
    if module in ("_io", "io") or name in ("TextIOWrapper", "BufferedReader", "BufferedWriter"):
        return f"an open file ({name}) cannot be saved"
    if module == "socket" or name == "socket":
        return "a socket cannot be saved"
    if module in ("_thread", "threading") or name in ("lock", "RLock", "Condition", "Semaphore"):
        return f"a {name} (thread synchronisation) cannot be saved"
    if module.startswith(("multiprocessing", "concurrent", "asyncio", "sqlite3")):
        return f"a {type_label(obj)} holds live system resources and cannot be saved"
    return None


class Rules:
    """The salience rules of one config."""

    def __init__(self, config: Config) -> None:
        self.prefixes = tuple(config.modules)
        self.min_size = config.min_size
        self.max_object_size = config.max_object_size
        self.include_names = list(config.include_names)
        self.exclude_names = list(config.exclude_names)

    def is_data(self, obj: Any) -> bool:
        """Whether `obj` is an object of one of the data libraries."""
        module = type_module(obj)
        return any(module == p or module.startswith(p + ".") for p in self.prefixes)

    def name_forced(self, name: str) -> bool:
        return _name_matches(name, self.include_names)

    def name_excluded(self, name: str) -> bool:
        return _name_matches(name, self.exclude_names)


def _name_matches(name: str, patterns: list[str]) -> bool:
    if not patterns:
        return False
    import fnmatch

    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


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
    """Estimated bytes held by a data-library object (duck-typed probes)."""
    try:
        estimated = getattr(obj, "estimated_size", None)  # polars
        if callable(estimated) and type_module(obj).startswith("polars"):
            return int(estimated())
        memory_usage = getattr(obj, "memory_usage", None)  # pandas
        if callable(memory_usage) and type_module(obj).startswith("pandas"):
            usage = memory_usage(index=True, deep=False)
            return int(usage.sum()) if hasattr(usage, "sum") else int(usage)
        element_size = getattr(obj, "element_size", None)  # torch
        if callable(element_size) and hasattr(obj, "nelement"):
            return int(element_size()) * int(obj.nelement())
        nbytes = _int_or_none(getattr(obj, "nbytes", None))  # numpy, pyarrow, xarray
        if nbytes is not None:
            return nbytes
        parts = [getattr(obj, a, None) for a in ("data", "indices", "indptr", "row", "col")]
        sizes = [_int_or_none(getattr(p, "nbytes", None)) for p in parts if p is not None]
        if any(s is not None for s in sizes):  # scipy.sparse
            return sum(s for s in sizes if s is not None)
    except Exception:
        pass
    return sys.getsizeof(obj)


def builtin_size(obj: Any, budget: int = 1000) -> int:
    """Estimated bytes of a builtin value, sampling large containers."""
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        items = obj.items()
        count = len(obj)
        sample = [sys.getsizeof(k) + sys.getsizeof(v) for k, v in _first(items, budget)]
    elif isinstance(obj, list | tuple | set | frozenset):
        count = len(obj)
        sample = [sys.getsizeof(v) for v in _first(obj, budget)]
    else:
        return size
    if sample:
        size += sum(sample) * count // len(sample)
    return size


def _first(iterable: Any, n: int) -> list[Any]:
    out = []
    for item in iterable:
        if len(out) >= n:
            break
        out.append(item)
    return out


def describe(obj: Any) -> dict[str, Any]:
    """shape and dtype where the object has them, as JSON-friendly values."""
    info: dict[str, Any] = {}
    try:
        shape = getattr(obj, "shape", None)
        if isinstance(shape, tuple) and all(isinstance(d, int) for d in shape):
            info["shape"] = list(shape)
        elif isinstance(obj, BUILTIN_CONTAINERS | str | bytes):
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
