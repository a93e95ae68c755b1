"""Objects taken apart and put together again without running any code of their classes.

A capture looks at the program's objects while the program is paused, and must never run the
program's own code where it could be seen: a `__getstate__` that prints or strips its object,
a `__getattr__` or `__getattribute__` that logs every access, a `__len__` or `__sizeof__` that
raises, a mock that records each use. So this module reads what an object is made of (its
instance dict, its slots, the items or value of the builtin type it derives from) and measures
it only through the C-level descriptors and methods of `type`, `object` and the builtin types,
found on the class's MRO by reading the classes' own dicts, never by an attribute lookup on the
object. `new` and `set_state` make such an object again the same way: `object.__new__` (or the
builtin's `__new__`), then its dict, slots and items set directly, never calling the class's
`__new__`, `__init__`, `__setstate__`, `__setattr__` or item methods.

A class of the saving script that the loading process does not define loads as a stand-in
(serialize.py): its dict and slots become the stand-in's attributes, and the builtin part is
kept as `_list`, `_items`, `_set`, `_args` (a tuple's) or `_value`.
"""

from __future__ import annotations

import sys
import types

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

_type_dict = type.__dict__["__dict__"].__get__  # a class's own namespace, never its metaclass's hooks
_type_mro = type.__dict__["__mro__"].__get__
_type_flags = type.__dict__["__flags__"].__get__
_type_module = type.__dict__["__module__"].__get__
class_name = type.__dict__["__name__"].__get__  # a class's names, read without its metaclass's hooks
class_qualname = type.__dict__["__qualname__"].__get__
_C_METHODS = (types.WrapperDescriptorType, types.MethodDescriptorType)

# The builtin types an object's own state can derive from, and how each one's value is read
# as a plain builtin (a copy made in C: `list.copy`, not `list(obj)`, which calls `__iter__`).
_VALUE: dict[type, Callable[[Any], Any]] = {
    list: list.copy,
    dict: lambda obj: dict(dict.items(obj)),
    set: set.copy,
    bytearray: bytearray.copy,
    frozenset: frozenset.copy,
    tuple: lambda obj: tuple.__getitem__(obj, slice(None)),
    str: str.__str__,
    bytes: bytes.__bytes__,
    int: int.__index__,
    float: float.__float__,
    complex: complex.__complex__,
}
BASES = frozenset(_VALUE)
_MUTABLE = {list: list.extend, dict: dict.update, set: set.update, bytearray: bytearray.extend}
# where a stand-in (a class not defined where it loads) keeps a builtin part
_STAND_IN_NAMES = {list: "_list", dict: "_items", set: "_set", frozenset: "_set", tuple: "_args"}

_GC_HEADER = sys.getsizeof([]) - [].__sizeof__()
_HAVE_GC = 1 << 14
_PREHEADER = (1 << 3) | (1 << 4)  # managed weakref, managed dict: two pointers before the object


def mro(cls: type) -> tuple[type, ...]:
    return _type_mro(cls)


def module_name(cls: type) -> str:
    """The `__module__` of a class, read without its metaclass's attribute hooks ("" if none)."""
    module = _type_module(cls)
    return module if type(module) is str else ""


def own(cls: type, name: str) -> Any:
    """`name` in the class's own namespace (not inherited), or None."""
    return _type_dict(cls).get(name)


def find(cls: type, name: str) -> tuple[type, Any] | None:
    """The first class on `cls`'s MRO whose own namespace has `name`, and what it holds there."""
    for klass in _type_mro(cls):
        found = _type_dict(klass).get(name)
        if found is not None:
            return klass, found
    return None


# Per-class facts, found once per checkpoint: `forget()` drops them after it, so that chkpt holds
# no class of the program's (and through its methods, its globals) past a checkpoint.
_bases: dict[type, type | None] = {}


def forget() -> None:
    """Drop the per-class facts found so far (after each checkpoint)."""
    for cache in (_bases, _sizers, _dict_getters, _slot_lists):
        cache.clear()


def builtin_base(cls: type) -> type | None:
    """The builtin container or scalar type `cls` derives from (None for plain objects)."""
    try:
        return _bases[cls]
    except KeyError:
        found = _bases[cls] = next((klass for klass in _type_mro(cls) if klass in BASES), None)
        return found


def length(obj: Any) -> int:
    """len() of a value of a builtin container type or a subclass of one, as the builtin counts it."""
    base = builtin_base(type(obj))
    return 0 if base is None or base in (int, float, complex) else base.__len__(obj)


def values(obj: Any) -> Iterable[Any]:
    """The values of a builtin container or of a subclass of one, iterated in C."""
    base = builtin_base(type(obj))
    return dict.values(obj) if base is dict else base.__iter__(obj)  # type: ignore[union-attr]


_sizers: dict[type, tuple[Callable[[Any], int], int]] = {}


def size_of(obj: Any) -> int:
    """sys.getsizeof(obj) as the C-level `__sizeof__` of its class counts it: one written in
    Python (or a mock's) is never called, and a failure or a negative answer gives the bare
    object's size, so one odd value never costs more than its own size estimate."""
    cls = type(obj)
    sizer = _sizers.get(cls)
    if sizer is None:
        sizer = _sizers[cls] = _sizer(cls)
    measure, header = sizer
    try:
        size = measure(obj)
    except Exception:
        size = -1
    if type(size) is not int or size < 0:
        size = object.__sizeof__(obj)
    return size + header


def _sizer(cls: type) -> tuple[Callable[[Any], int], int]:
    flags = _type_flags(cls)
    header = (_GC_HEADER if flags & _HAVE_GC else 0) + (2 * _pointer() if flags & _PREHEADER else 0)
    for klass in _type_mro(cls):
        found = _type_dict(klass).get("__sizeof__")
        if type(found) in _C_METHODS:
            return found, header
    return object.__sizeof__, header


def _pointer() -> int:
    return 8 if sys.maxsize > 2**32 else 4


_dict_getters: dict[type, Any] = {}


def attributes(obj: Any) -> dict[str, Any] | None:
    """The instance dict of `obj` (the object's own, not a copy), or None if it has none."""
    cls = type(obj)
    getter = _dict_getters.get(cls, False)
    if getter is False:
        descriptor = next((found for klass in _type_mro(cls)
                           if type(found := _type_dict(klass).get("__dict__")) is types.GetSetDescriptorType), None)
        getter = _dict_getters[cls] = None if descriptor is None else descriptor.__get__
    if getter is None:
        return None
    try:
        found = getter(obj, cls)
    except Exception:
        return None
    return found if type(found) is dict else None


_slot_lists: dict[type, tuple[tuple[str, Any], ...]] = {}


def _slot_descriptors(cls: type) -> tuple[tuple[str, Any], ...]:
    """(name, member descriptor) of the slots Python classes on `cls`'s MRO declared, the
    first of a name only (the one attribute lookup would find)."""
    found = _slot_lists.get(cls)
    if found is None:
        named: dict[str, Any] = {}
        for klass in _type_mro(cls):
            if klass in BASES or klass is object:
                continue
            for name, value in _type_dict(klass).items():
                if type(value) is types.MemberDescriptorType and name not in named \
                        and "__slots__" in _type_dict(klass):
                    named[name] = value
        found = _slot_lists[cls] = tuple(named.items())
    return found


def slots(obj: Any) -> dict[str, Any]:
    """The slot values set on `obj`, by name (an unset slot is left out)."""
    found: dict[str, Any] = {}
    described = _slot_lists.get(type(obj))
    if described == ():
        return found
    for name, descriptor in described or _slot_descriptors(type(obj)):
        try:
            found[name] = descriptor.__get__(obj, type(obj))
        except AttributeError:
            pass
    return found


PLAIN = "plain"
# Hooks of a program's class that would run its code if a library's reducer pickled its objects.
_PICKLING_HOOKS = ("__reduce_ex__", "__reduce__", "__getstate__", "__getnewargs_ex__", "__getnewargs__",
                   "__getattr__", "__getattribute__", "__class__", "__dict__")


BY_NAME = "by name"


class Pickling(dict):  # type: ignore[type-arg]
    """`pickling(cls)` of each class asked for (`decisions[cls]`, a C-level lookup once known)."""

    def __init__(self, is_program: Callable[[type], bool]) -> None:
        super().__init__()
        self.is_program = is_program

    def __missing__(self, cls: type) -> str | None:
        decided = self[cls] = pickling(cls, self.is_program)
        return decided


def pickling(cls: type, is_program: Callable[[type], bool]) -> str | None:
    """How objects of `cls` are pickled: PLAIN (by their plain state: `cls` or a class it
    derives from is the program's, and below the program's classes there is only `object` or a
    builtin type), BY_NAME (a class whose metaclass is the program's: by its names, read without
    its metaclass's hooks), None (by their class's own reducer: no class of the program on its
    MRO, or a library's class the program's derives from, with no pickling or attribute hook of
    the program's over it), or the reason they cannot be saved without running the program's code."""
    classes = _type_mro(cls)
    if issubclass(cls, type):  # a class: pickle saves it by name, through its metaclass's attribute hooks
        return BY_NAME if any(map(is_program, classes)) else None
    program = [klass for klass in classes if is_program(klass)]
    if not program:
        return None
    native = next(klass for klass in classes if not is_program(klass))
    if native is object or native in BASES:
        return PLAIN
    hooks = sorted({name for klass in program for name in _PICKLING_HOOKS if own(klass, name) is not None})
    if not hooks:
        return None
    return (f"its class {class_qualname(cls)} defines {', '.join(hooks)} over "
            f"{module_name(native).partition('.')[0]}.{class_qualname(native)}, and chkpt never runs the "
            "program's code to save a value")


def reduce(obj: Any) -> tuple[Any, ...]:
    """The reduced form (for pickle's `reducer_override`) of `obj` as plain state: its class,
    its builtin base's value and its dict and slots, loaded by `new` and `set_state`."""
    cls = type(obj)
    base = _bases.get(cls, False)
    if base is False:
        base = builtin_base(cls)
    value = contents = None
    if base is not None:
        value = _VALUE[base](obj)
        if base in _MUTABLE:  # set after the object exists, so a list that holds itself still pickles
            value, contents = None, value
    return new, (cls, base, value), (attributes(obj), slots(obj) or None, contents), None, None, set_state


def new(cls: type, base: type | None, value: Any) -> Any:
    """An object of `cls` with the builtin value `value`, made without calling `cls`'s own code."""
    if base is not None and _derives(cls, base):
        return base.__new__(cls) if value is None else base.__new__(cls, value)
    made = object.__new__(cls)
    if value is not None:  # a stand-in: keeps the builtin part as an attribute
        _dict_of(made)[_STAND_IN_NAMES.get(base, "_value")] = value  # type: ignore[arg-type]
    return made


def set_state(obj: Any, state: tuple[Any, ...]) -> Any:
    """Put the dict, slots and items saved by `reduce` back into `obj`, directly."""
    attributes_, slots_, contents = state
    cls = type(obj)
    if attributes_:
        _dict_of(obj).update(attributes_)
    if slots_:
        descriptors = dict(_slot_descriptors(cls))
        for name, value in slots_.items():
            descriptor = descriptors.get(name)
            if descriptor is not None:
                descriptor.__set__(obj, value)
            else:  # a stand-in, or a class that changed: an attribute
                _dict_of(obj)[name] = value
    if contents is not None:
        base = builtin_base(cls)
        if base is not None and base in _MUTABLE:
            _MUTABLE[base](obj, contents)
        else:
            _dict_of(obj)[_STAND_IN_NAMES.get(type(contents), "_value")] = contents
    return obj


def _derives(cls: type, base: type) -> bool:
    return base in _type_mro(cls)


def _dict_of(obj: Any) -> dict[str, Any]:
    found = attributes(obj)
    if found is None:
        raise TypeError(f"{type(obj).__qualname__} objects have no attribute dict to load into")
    return found


_SAFE_ARGUMENTS = frozenset({str, int, float, bool, type(None), bytes})
_exception_args = BaseException.__dict__["args"].__get__


def exception_text(exc: BaseException) -> str:
    """"ValueError: bad row", written by the first `__str__` in C on the exception's MRO (never one
    of the program's), and only when what it shows is builtin values; else the type's name alone."""
    cls = type(exc)
    name = class_name(cls)
    shown = [*_exception_args(exc)]
    if issubclass(cls, BaseExceptionGroup):  # its __str__ shows the message and counts the others
        shown = shown[:1]
    for field in ("filename", "filename2"):  # OSError shows these too
        found = find(cls, field)
        if found is not None and type(found[1]) is types.MemberDescriptorType:
            shown.append(found[1].__get__(exc, cls))
    if not _SAFE_ARGUMENTS.issuperset(map(type, shown)):
        return name
    for klass in _type_mro(cls):
        method = _type_dict(klass).get("__str__")
        if type(method) in _C_METHODS:
            try:
                text = method(exc)
            except Exception:
                return name
            return f"{name}: {text}" if type(text) is str and text else name
    return name
