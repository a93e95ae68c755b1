"""Finds the salient objects of a scope and names them.

Input: the script's globals and the locals of the user's frames. Output: the values to save, each
under a Python-like path (`df`, `model.weights`, `results["train"]`, `frames[3]`), the
values skipped with the reason, and names that alias an already saved value.

Nested data: builtin containers and the attributes of objects are walked, to a bounded
depth and number of visited objects, to find the data objects inside; each is saved on its
own under its path. The container or object it was found in (`results`, `model`) is saved
too, as a *skeleton*: its own pickle, holding its small values inline and references to the
separately saved ones (and a placeholder for each unsaveable one, e.g. `model.lock`), so
`chkpt.load("model")` gives the whole object back and `chkpt.load("model.weights")` just the
array. One object reachable by two paths is saved once: the first path names it, later ones
are aliases. That holds for builtin containers and long strings too (found among the nests of
builtins in one pass, `_shared`); one that holds a container it is in stays in that one's
pickle, which keeps the cycle, and its other names alias the path to it (`l2` → `l[3]`).

Names follow the grammar of naming.py: globals keep their name, a local of the script that
clashes is qualified by its function (`step:batch`), a local of a function of the user's own
modules always by its module and function (`mylib.trainer.fit:w`), dict keys are written as
their `repr`.

No code of the program runs here: objects are looked into through their dict and slots and
measured through C-level methods (plain.py, salience.py), never through `isinstance` (which asks
a failing object its `__class__`), `len`, `getattr` or properties; a frame's locals are read
without refreshing a `locals()` dict the program holds (Python 3.12).
"""

from __future__ import annotations

import gc
import os
import sys
from types import FunctionType

from chkpt import naming, plain, salience, serialize
from chkpt.fmt import human_size
from chkpt.salience import CONTAINER, DATA, DEFINITION, LIBRARY_OBJECT, OTHER, SCALAR, USER_OBJECT

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType
    from typing import Any

MAX_DEPTH = 5  # results["a"]["b"]["c"]["d"]["e"]; deeper values stay inside their container
MAX_VISITS = 2_000  # nested values looked at per capture (the roots themselves are not counted)
MAX_CONTAINER_ITEMS = 1_000  # larger containers are saved whole rather than walked

_getsizeof = sys.getsizeof  # for values of the exact builtin types only; salience.size for any other
_size = salience.size
_NESTING = frozenset({dict, list, tuple, set, frozenset})
_BUILTIN_TYPES = salience.SCALAR_TYPES | _NESTING
_SIZED = _NESTING | {str, bytes, bytearray}  # the builtins described by their length
_LARGE_SCALARS = frozenset({str, bytes})  # the scalars large enough to be saved on their own, and shared
_WALKED = frozenset({dict, list, tuple})  # the containers looked into (a set's items have no names)
_SCALAR_SIZEOF = {cls: salience.SIZEOF[cls] for cls in salience.SCALAR_TYPES}  # their sys.getsizeof: no GC header
_LEAST_SIZE = object().__sizeof__()  # every value is at least a bare object
# The parts a group of nests is cut into when a bound over all of it rules out too few; a group
# of this many or fewer is left to be looked at nest by nest.
_SPLIT = 16


class Item:
    """One value to save: `obj` is what is serialized (a Skeleton for a walked container)."""

    __slots__ = ("info", "name", "obj", "scope", "size", "type")

    def __init__(self, name: str, obj: Any, size: int, scope: str, *, of: Any = None, kind: str | None = None) -> None:
        shown = obj if of is None else of
        self.name = name
        self.obj = obj
        self.size = size
        self.scope = scope
        cls = type(shown)
        if cls in _BUILTIN_TYPES:  # the many small values a crash keeps: described as describe() would, cheaply
            self.type = cls.__name__
            self.info = {"shape": [len(shown)]} if cls in _SIZED else {}
        else:
            self.type = salience.type_label(shown)
            self.info = salience.describe(shown, kind)


class Capture:
    """What one checkpoint saves, what it skipped and why, and names that alias others."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.skipped: list[dict[str, str]] = []
        self.aliases: dict[str, str] = {}

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append({"name": name, "reason": reason})


class Roots:
    """The named values of a scope, in the order a capture takes them: tracked values, the
    script's globals, then the locals of each user frame, innermost first.

    The globals are kept as a copy of the dict, not as a tuple per name: a namespace can hold
    tens of thousands of them, and a periodic capture rules most of them out unseen.
    """

    __slots__ = ("globals", "locals", "tracked")

    def __init__(self, tracked: list[tuple[str, Any, str]], main_globals: dict[str, Any],
                 frame_locals: list[tuple[str, Any, str]]) -> None:
        self.tracked = tracked
        self.globals = main_globals
        self.locals = frame_locals

    def named_globals(self, names: list[str] | None = None) -> list[tuple[str, Any, str]]:
        """(name, value, "global") for `names` (all globals by default) that are roots: dunder
        names are Python's, and a tracked name is the tracked value's."""
        values = self.globals
        taken = {name for name, _, _ in self.tracked}
        return [(name, values[name], "global") for name in (values if names is None else names)
                if name[:2] != "__" and name not in taken]

    def __iter__(self) -> Iterator[tuple[str, Any, str]]:
        yield from self.tracked
        yield from self.named_globals()
        yield from self.locals


def named_roots(main_globals: dict[str, Any], frames: list[FrameType], tracked: dict[str, Any]) -> Roots:
    """The tracked values, the globals, then the locals of each frame, innermost first."""
    snapshot = main_globals.copy()  # one atomic copy: the program's other threads may change it
    used = set(tracked)
    local_roots = []
    seen_functions: dict[str, int] = {}
    for frame in frames:
        in_script = frame.f_globals is main_globals
        if in_script and frame.f_code.co_name == "<module>":
            continue  # its locals are the globals
        function = frame.f_code.co_name if in_script else _module_function(frame)
        seen_functions[function] = seen_functions.get(function, 0) + 1
        count = seen_functions[function]
        module_code = frame.f_code.co_name == "<module>"  # a user module being imported
        for name, value in frame_locals(frame):
            if module_code and name.startswith("__"):
                continue
            qualify = name in used or name in snapshot or not in_script
            final = naming.qualified_local(function, count, name) if qualify else name
            if final in used or final in snapshot:
                continue
            used.add(final)
            local_roots.append((final, value, f"local of {function}"))
    return Roots([(name, value, "tracked") for name, value in tracked.items()], snapshot, local_roots)


def frame_locals(frame: FrameType) -> list[tuple[str, Any]]:
    """A frame's local variables, read without changing anything the program can see.

    On Python 3.12 `frame.f_locals` writes the current fast locals into the dict `locals()`
    returned in that frame, which the program may hold: that dict is put back as it was
    (`_Python312Locals`). A class body's own namespace mapping is read only if it is a dict
    (reading another mapping would run its code).
    """
    code = frame.f_code
    if code.co_flags & _CO_OPTIMIZED:
        if _FRAME_LAYOUT_KNOWN:
            return _python312_locals().read(frame)
        # 3.13+: a FrameLocalsProxy (PEP 667), a view that writes nothing; elsewhere (3.11, other
        # builds of 3.12) a held locals() dict is refreshed, as by Python's own tracers
        return list(frame.f_locals.items())
    found = frame.f_locals
    return list(dict.items(found)) if issubclass(type(found), dict) else []


_CO_OPTIMIZED = 0x1
# The offsets _Python312Locals reads are those of CPython 3.12's 64-bit release builds; on any
# other build (debug builds add fields to every object, 32-bit pointers) it is never used.
_FRAME_LAYOUT_KNOWN = (sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 12)
                       and sys.maxsize > 2**32 and not hasattr(sys, "gettotalrefcount"))
_locals_reader: _Python312Locals | None = None


def _python312_locals() -> _Python312Locals:
    global _locals_reader
    if _locals_reader is None:
        _locals_reader = _Python312Locals()
    return _locals_reader


class _Python312Locals:
    """Reads a function frame's locals on Python 3.12 and then puts its locals dict back as it was.

    CPython 3.12 keeps, per frame, one dict that `locals()` returns and that `frame.f_locals`
    refreshes from the fast locals in place, and marks the frame as converted (a tracer's next
    call then copies that dict back into the fast locals). A program holding that dict would see
    it change at a checkpoint; so the dict's content and the mark are read first (through the
    frame's C struct, its layout checked against the frame's own code and globals) and restored
    after. A dict made by the read itself is emptied: it must not keep the program's values alive.
    """

    # offsets in CPython 3.12's PyFrameObject and _PyInterpreterFrame (64-bit, release build)
    FRAME_DATA, FAST_AS_LOCALS, CODE, GLOBALS, LOCALS = 24, 46, 0, 24, 40

    def __init__(self) -> None:
        import ctypes

        self.ctypes = ctypes

    def read(self, frame: FrameType) -> list[tuple[str, Any]]:
        ctypes = self.ctypes
        pointer = ctypes.c_void_p.from_address
        data = pointer(id(frame) + self.FRAME_DATA).value
        if not data or pointer(data + self.CODE).value != id(frame.f_code) \
                or pointer(data + self.GLOBALS).value != id(frame.f_globals):
            return list(frame.f_locals.items())  # not the layout this expects: read as Python does
        mark = ctypes.c_char.from_address(id(frame) + self.FAST_AS_LOCALS)
        was_marked = mark.value
        held = pointer(data + self.LOCALS).value
        before = dict(ctypes.cast(held, ctypes.py_object).value) if held else None
        refreshed = frame.f_locals
        found = list(refreshed.items())
        refreshed.clear()
        if before is not None:
            refreshed.update(before)
        mark.value = was_marked
        return found


def _module_function(frame: FrameType) -> str:
    """What qualifies the locals of a frame outside the script: its module's name and the
    function's qualified name (`mylib.trainer.fit`, `mylib.Trainer.step`), or the module's
    name alone for its own code (`mylib.trainer`)."""
    module = dict.get(frame.f_globals, "__name__")
    if type(module) is not str or not all(part.isidentifier() for part in module.split(".")):
        module = os.path.splitext(os.path.basename(frame.f_code.co_filename))[0]  # a name of the grammar
    code = frame.f_code
    return module if code.co_name == "<module>" else f"{module}.{code.co_qualname}"


class _Walker:
    """One capture's traversal: what is saved under which name, and what refers to what."""

    def __init__(self, rules: salience.Rules, keep_small: bool, capture: Capture) -> None:
        self.rules = rules
        self.min_size = rules.min_size
        self.keep_small = keep_small
        # small values can be dropped unseen (unless a small one could be over max_object_size)
        self.drop_small = not keep_small and not rules.include_names and rules.min_size <= rules.max_object_size
        self.capture = capture
        self.visits_left = MAX_VISITS
        self.saved_as: dict[int, str] = {}  # id of a saved value → its name (later paths alias it)
        self.refs: serialize.Refs = {}  # id → (order, persistent id, value), for skeletons
        self.walked: set[int] = set()  # containers and objects already walked (shared or cyclic)
        self.arrays: dict[int, list[Any]] = {}  # saved contiguous arrays, by the array owning their memory
        self.ndarray = salience.array_class()
        self.linked = 0  # nested values saved or aliased so far
        self.pending: list[tuple[str, str]] = []  # unsaveable values inside the current root
        self.shared: set[int] = set()  # builtin values several paths reach (`_shared`): each saved once
        self.open: set[int] = set()  # the containers being walked, the current one's holders
        self.inline_at: dict[int, str] = {}  # a shared container kept in a holder's pickle (a cycle): its path

    # -- roots ----------------------------------------------------------------------------------

    def root(self, name: str, obj: Any, scope: str) -> bool:
        """Handle one named value; True when it is a nest of builtins left for `walk_root` later."""
        if self.drop_small and type(obj) in salience.SCALAR_TYPES and _getsizeof(obj) < self.min_size \
                and scope != "tracked":
            return False  # the common case, kept cheap: a number or a short string
        rules = self.rules
        kind, reason = rules.kind(obj)
        if kind is DEFINITION or rules.name_excluded(name):
            return False
        if kind is SCALAR:  # never an alias, nothing inside: the many small values a crash keeps
            measure = _SCALAR_SIZEOF.get(type(obj), _size)
            self.consider(name, obj, scope, measure(obj), self.forced(name, scope))
            return False
        known = self.saved_as.get(id(obj))
        if known is not None:
            self.capture.aliases[name] = known
            return False
        if reason is not None:
            self.capture.skip(name, reason)
            return False
        if kind is DATA or kind is OTHER or kind is LIBRARY_OBJECT:
            self.consider(name, obj, scope, self.whole_size(obj, kind), self.forced(name, scope))
            return False
        if kind is CONTAINER and type(obj) in _NESTING and len(obj) <= MAX_CONTAINER_ITEMS:
            held = set(map(type, obj.values() if type(obj) is dict else obj))
            if held <= salience.SCALAR_TYPES:  # numbers and strings only: nothing to look for
                size = salience.builtin_size(obj)
                if size < self.min_size or not held & _LARGE_SCALARS or not _holds_large(obj, self.min_size):
                    self.consider(name, obj, scope, size, self.forced(name, scope))
                    return False
                return True  # a large string or bytes in it may be another value's too: decided with the rest
            if held <= _BUILTIN_TYPES:
                return True  # builtins in builtins: rarely data, looked into once the rest is done
        self.walk_root(name, obj, scope)
        return False

    def walk_root(self, name: str, obj: Any, scope: str) -> None:
        """Look inside a container or object: save its data parts, and it as a skeleton."""
        kind = self.rules.kind(obj)[0]
        forced = self.forced(name, scope)
        linked, self.pending = self.linked, []
        inline = self.inside(name, obj, scope, kind, MAX_DEPTH)
        if inline is None:  # nothing to look into: an ordinary value
            self.consider(name, obj, scope, self.whole_size(obj, kind), forced)
        elif self.linked > linked or (self.pending and (forced or self.keep_small or inline >= self.min_size)):
            self.skeleton(name, obj, scope, inline)
        else:
            self.consider(name, obj, scope, inline, forced)

    def forced(self, name: str, scope: str) -> bool:
        """Whether `name` is saved whatever its size (tracked, or matching include_names)."""
        return scope == "tracked" or (not self.drop_small and self.rules.name_forced(name))

    def skeleton(self, name: str, obj: Any, scope: str, size: int) -> None:
        """Save `obj` with its separately saved parts as references."""
        for nested, reason in self.pending:
            self.capture.skip(nested, reason)
        if size > self.rules.max_object_size:
            self.capture.skip(name, self.too_large(size) + "; its parts are saved on their own")
            return
        order = len(self.refs)
        self.record(name, obj, ("ref", name))
        self.capture.items.append(Item(name, serialize.Skeleton(obj, self.refs, order, self.viewed), size, scope,
                                       of=obj, kind=self.rules.kind(obj)[0]))

    def consider(self, name: str, obj: Any, scope: str, size: int, forced: bool) -> bool:
        """Save `obj` on its own if its size is within the limits; whether it was."""
        if size > self.rules.max_object_size:
            self.capture.skip(name, self.too_large(size))
            self.refs[id(obj)] = (len(self.refs), ("skip", name, self.too_large(size)), obj)
            return False
        if size < self.min_size and not (forced or self.keep_small):
            return False
        self.record(name, obj, ("ref", name))
        kind = None if type(obj) in _BUILTIN_TYPES else self.rules.kind(obj)[0]
        self.capture.items.append(Item(name, obj, size, scope, kind=kind))
        return True

    def too_large(self, size: int) -> str:
        return f"{human_size(size)} is over max_object_size ({human_size(self.rules.max_object_size)})"

    def record(self, name: str, obj: Any, pid: tuple[str, ...]) -> None:
        cls = type(obj)
        if cls not in salience.SCALAR_TYPES or id(obj) in self.shared or (
                cls in _LARGE_SCALARS and _SCALAR_SIZEOF[cls](obj) >= self.min_size):  # a path to it aliases it
            self.saved_as[id(obj)] = name
            if cls is self.ndarray and not obj.dtype.hasobject and (obj.flags.c_contiguous or obj.flags.f_contiguous):
                # an array views of the same memory may be saved as views of (see `viewed`)
                self.arrays.setdefault(id(salience.buffer_owner(obj)), []).append((-len(self.refs), pid, obj))
        self.refs[id(obj)] = (len(self.refs), pid, obj)

    def viewed(self, view: Any) -> tuple[tuple[str, ...], Any] | None:
        """(persistent id, array) of the saved contiguous array whose memory holds all of numpy
        view `view`'s, if any: the largest, and only one larger than it or, as large, saved
        before it, so that no two arrays are saved as views of each other."""
        candidates = self.arrays.get(id(salience.buffer_owner(view)))
        if not candidates:
            return None
        if len(candidates[0]) == 3:  # where each lies in memory, largest first: found once, at the first view
            candidates[:] = sorted(((array.nbytes, order, salience.address(array), pid, array)
                                    for order, pid, array in candidates), key=_size_and_order, reverse=True)
        low, span = salience.array_span(view)
        start = salience.address(view) + low
        rank = (span, -self.refs.get(id(view), (len(self.refs),))[0])
        for size, order, begin, pid, array in candidates:
            if (size, order) <= rank:
                return None  # the others are smaller still
            if array is not view and begin <= start and start + span <= begin + size:
                return pid, array
        return None

    # -- nested values ----------------------------------------------------------------------------

    def inside(self, name: str, obj: Any, scope: str, kind: str, depth: int) -> int | None:
        """Visit the values in `obj`; the bytes that stay in its own pickle, None if not walked."""
        if depth <= 0 or self.visits_left <= 0:
            return None
        if kind is CONTAINER:
            cls = type(obj)
            if cls in _WALKED:  # in C: the builtin itself
                base, count, size = cls, len(obj), _getsizeof(obj)
                values: Any = obj.values() if cls is dict else obj
            else:  # a subclass, read as the builtin it is (its own methods are the program's code)
                base = plain.builtin_base(cls)
                if base not in _WALKED:
                    return None
                count, size, values = plain.length(obj), _size(obj), list(plain.values(obj))
            if count > MAX_CONTAINER_ITEMS:
                return None
        else:  # the program's object: its dict and slots, never its code
            attributes = plain.attributes(obj)
            entries = [*(dict.items(attributes) if attributes is not None else ()), *plain.slots(obj).items()]
            if attributes is None and not entries:
                return None
            size = _size(obj) + (_getsizeof(attributes) if attributes is not None else 0)
            values = [value for _, value in entries]
        if salience.SCALAR_TYPES.issuperset(map(type, values)) and not (
                self.shared and self.shared.intersection(map(id, values))):
            return None  # only numbers and strings (none that another path reaches): nothing to find
        self.walked.add(id(obj))
        self.open.add(id(obj))
        try:
            if kind is CONTAINER and base is dict:
                for key, value in list(dict.items(obj)):
                    text = naming.key_text(key)
                    if text is None:
                        size += self.whole_size(value, self.rules.kind(value)[0])
                    else:
                        size += self.nested(naming.item(name, text), value, scope, depth - 1)
            elif kind is CONTAINER:
                for index, value in enumerate(list(values)):
                    size += self.nested(naming.item(name, str(index)), value, scope, depth - 1)
            else:  # dunder attributes (`__doc__`, `__wrapped__`) are Python's, not data
                for key, value in entries:
                    if type(key) is str and key.isidentifier() and not key.startswith("__"):
                        size += self.nested(naming.attribute(name, key), value, scope, depth - 1)
                    else:
                        size += _size(value)
        finally:
            self.open.discard(id(obj))
        return size

    def nested(self, name: str, obj: Any, scope: str, depth: int) -> int:
        """Handle a value found inside a root; the bytes it adds to the root's own pickle."""
        self.visits_left -= 1
        rules = self.rules
        kind, reason = rules.kind(obj)
        if kind is SCALAR:
            size = _SCALAR_SIZEOF.get(type(obj), _size)(obj)
            if size < self.min_size:
                return size
            known = self.saved_as.get(id(obj))  # a string or bytes that another path reached first
            if known is not None:
                self.capture.aliases[name] = known
                self.linked += 1
                return 0
            self.linked += self.consider(name, obj, scope, size, False)
            return 0
        if kind is DEFINITION:
            if issubclass(type(obj), type(sys)):  # a module cannot be pickled; functions and classes can
                self.refs[id(obj)] = (len(self.refs), ("skip", name, "a module (code, not data)"), obj)
            return 0
        if rules.name_excluded(name):
            self.refs[id(obj)] = (len(self.refs), ("skip", name, "excluded by exclude_names"), obj)
            return 0
        known = self.saved_as.get(id(obj))
        if known is not None:
            self.capture.aliases[name] = known
            self.linked += 1
            return 0
        if id(obj) in self.walked:
            return 0
        if reason is not None:
            self.pending.append((name, reason))
            self.refs[id(obj)] = (len(self.refs), ("skip", name, reason), obj)
            return 0
        if kind is DATA:
            size = salience.data_size(obj)
            if size < self.min_size and not self.keep_small:
                return size
            self.linked += self.consider(name, obj, scope, size, True)
            return 0
        if kind is OTHER:
            return _size(obj)
        if kind is CONTAINER and id(obj) in self.shared:
            if not self.open.intersection(_below(obj, self.min_size)):
                self.shared_part(name, obj, scope, depth)
                self.linked += 1
                return 0
            self.inline_at.setdefault(id(obj), name)  # it holds a container it is in: it stays in that one's pickle
        inline = None if kind is LIBRARY_OBJECT else self.inside(name, obj, scope, kind, depth)
        if inline is not None:
            return inline
        size = self.whole_size(obj, kind)
        if (kind is CONTAINER or kind is LIBRARY_OBJECT) and size >= self.min_size:
            self.linked += self.consider(name, obj, scope, size, False)
            return 0
        return size

    def saved_path(self, obj: Any) -> str | None:
        """The name `obj` is saved under, or the path to it inside a saved value; None if neither."""
        known = self.saved_as.get(id(obj))
        path = self.inline_at.get(id(obj)) if known is None else None
        if path is not None:
            saved = {item.name for item in self.capture.items}
            if any(prefix in saved for prefix, _ in naming.prefixes(path)):
                return path
        return known

    def shared_part(self, name: str, obj: Any, scope: str, depth: int) -> None:
        """Save a builtin container that several paths reach on its own, whatever its size (a
        skeleton if parts of it are saved on their own): every path then loads the same object."""
        linked, pending = self.linked, self.pending
        self.pending = []
        inline = self.inside(name, obj, scope, CONTAINER, depth)
        if inline is not None and (self.linked > linked or self.pending):
            self.skeleton(name, obj, scope, inline)
        else:
            self.consider(name, obj, scope, self.whole_size(obj, CONTAINER) if inline is None else inline, True)
        self.linked, self.pending = linked, pending

    def whole_size(self, obj: Any, kind: str) -> int:
        """Estimated bytes of `obj` saved as one value."""
        if kind is DATA:
            return salience.data_size(obj)
        if kind is CONTAINER:
            return salience.builtin_size(obj, self.element_size)
        if kind is USER_OBJECT or kind is LIBRARY_OBJECT:
            attributes = plain.attributes(obj)
            extra = salience.builtin_size(attributes, self.element_size) if attributes is not None else 0
            if kind is USER_OBJECT:
                extra += sum(map(self.element_size, plain.slots(obj).values()))
            return _size(obj) + extra
        if type(obj) is FunctionType and obj.__closure__:  # saved by cloudpickle with what it holds
            return _size(obj) + sum(self.element_size(value) for value in salience.closure_values(obj).values())
        return _size(obj)

    def element_size(self, obj: Any) -> int:
        return salience.data_size(obj) if self.rules.kind(obj)[0] is DATA else _size(obj)

    # -- after the walk -------------------------------------------------------------------------

    def note_views(self) -> None:
        """Mark arrays that view another saved array (`view_of`), and save them as views of it:
        they load sharing its memory, and store only where in it they are."""
        for item in self.capture.items:
            obj = item.obj
            if type(obj) is self.ndarray and obj.base is not None and not obj.dtype.hasobject:
                viewed = self.viewed(obj)
                if viewed is not None:
                    item.info["view_of"] = viewed[0][1]
                    item.obj = serialize.Skeleton(obj, self.refs, self.refs[id(obj)][0], self.viewed)


def _size_and_order(candidate: tuple[Any, ...]) -> tuple[int, int]:
    return candidate[0], candidate[1]


def collect(roots: Roots, rules: salience.Rules, *, keep_small: bool = False) -> Capture:
    """The values to save from `roots`, by the salience rules."""
    capture = Capture()
    walker = _Walker(rules, keep_small, capture)
    later = [root for root in roots.tracked if walker.root(*root)]
    drop_small, min_size = walker.drop_small, rules.min_size
    found = roots.named_globals(_sizeable(roots.globals, min_size, walker.saved_as) if drop_small else None)
    later += [root for root in found if walker.root(*root)]
    found = roots.locals
    if drop_small and found:
        kept = set(_sizeable({name: value for name, value, _ in found}, min_size, walker.saved_as))
        found = [root for root in found if root[0] in kept]
    later += [root for root in found if walker.root(*root)]
    pure = salience.held_builtins([value for _, value, _ in later], MAX_DEPTH) is not None
    walker.shared = _shared([value for _, value, _ in later], walker.saved_as, min_size)
    for name, value, scope in later:
        known = walker.saved_path(value)
        if known is not None:  # saved as (or inside) a part of a root before it
            capture.aliases[name] = known
        elif walker.shared and walker.shared.intersection(_below(value, min_size)):
            walker.walk_root(name, value, scope)  # what it shares with others is saved once
        elif pure or salience.held_builtins([value], MAX_DEPTH) is not None:
            walker.consider(name, value, scope, salience.builtin_size(value), walker.forced(name, scope))
        else:
            walker.walk_root(name, value, scope)
    walker.note_views()
    return capture


SHARING_LOOKS = 50_000  # values `_shared` looks at, at most: past that, nests are saved as before


def _reached(values: list[Any], min_size: int) -> list[Any] | None:
    """The containers, and the strings and bytes of `min_size` or more, that `values` hold, to
    MAX_DEPTH levels (each container looked into once, so a cycle ends): one entry per path from
    a value into them. Level by level with gc.get_referents, in C; None past SHARING_LOOKS."""
    found: list[Any] = []
    looked = set(map(id, values))
    layer, budget = values, SHARING_LOOKS
    for _ in range(MAX_DEPTH):
        held = gc.get_referents(*layer)
        budget -= len(held)
        if budget < 0:
            return None
        held = [value for value in held if type(value) in _NESTING
                or (type(value) in _LARGE_SCALARS and _SCALAR_SIZEOF[type(value)](value) >= min_size)]
        found += held
        layer = [value for value in held if type(value) in _NESTING and id(value) not in looked]
        looked.update(map(id, layer))
        if not layer:
            break
    return found


def _shared(nests: list[Any], saved: dict[int, str], min_size: int) -> set[int]:
    """The ids of what several paths from `nests` (builtin values the walk left for last) reach,
    or what they reach and a saved value is: each is saved once, the other paths alias it
    (`holder = [big]; d = {"x": big}`, an index dict over a list's records, `l2 = [l]`)."""
    nests = list({id(nest): nest for nest in nests}.values())  # one value under two names is one
    if not nests:
        return set()
    reached = _reached(nests, min_size)
    if reached is None:
        return set()
    counts = dict.fromkeys(map(id, nests), 1)
    for value in reached:
        counts[id(value)] = counts.get(id(value), 0) + 1
    return {key for key, count in counts.items() if count > 1 or key in saved}


def _holds_large(container: Any, min_size: int) -> bool:
    """Whether a builtin container holds a string or bytes of `min_size` or more."""
    values = container.values() if type(container) is dict else container
    return any(type(value) in _LARGE_SCALARS and _SCALAR_SIZEOF[type(value)](value) >= min_size for value in values)


def _below(value: Any, min_size: int) -> set[int]:
    """The ids of what `_reached` finds in `value`."""
    return set(map(id, _reached([value], min_size) or ()))


def _sizeable(values: dict[str, Any], min_size: int, saved: dict[int, str]) -> list[str]:
    """The names in `values` less those of builtin values that would be dropped as smaller than
    `min_size`.

    Most globals are numbers, short strings and small settings dicts; deciding each in a
    comprehension, not a call, keeps a capture of tens of thousands of them in milliseconds.
    A nest of builtins already saved (a tracked value) is kept: it is listed as an alias.
    """
    names = [name for name, value in values.items()
             if (measure := _SCALAR_SIZEOF.get(type(value))) is None or measure(value) >= min_size]
    found = list(map(values.__getitem__, names))
    nests = [value for value in found if type(value) in _NESTING and len(value) <= MAX_CONTAINER_ITEMS
             and (not saved or id(value) not in saved)]
    small = _small_nests(nests, min_size)
    return [name for name, value in zip(names, found, strict=True) if id(value) not in small] if small else names


def _small_nests(nests: list[Any], min_size: int) -> set[int]:
    """The ids of the `nests` that hold nothing but builtins (a walk would find no data in them)
    and that a bound proves smaller than `min_size`.

    `builtin_size` charges a container its own size plus, per item, at most the largest size of
    anything directly in it plus KEY_SIZE; the largest is found once for a whole group of nests
    (what `gc.get_referents` gives, each measured by its type's `__sizeof__`). A group that
    holds data somewhere, or whose largest item is too large to rule out the rest (a long
    string in one settings dict), is cut into parts, each bounded again: a few such nests among
    thousands cost a few passes over smaller groups, not a look at each nest; what is left in
    small groups is left to the walker, nest by nest.
    """
    sizes, header = salience.SIZEOF, salience.GC_HEADER  # sys.getsizeof of a container: both
    limit, per_item = min_size - header, header + salience.KEY_SIZE
    small: set[int] = set()
    groups = [(nests, False)]  # nests, and whether they are known to hold only builtins
    while groups:
        group, pure = groups.pop()
        held = gc.get_referents(*group) if pure else salience.held_builtins(group, MAX_DEPTH)
        if held is not None:
            largest = max([sizes[type(value)](value) for value in held], default=0) + per_item
            ruled_out = [id(value) for value in group if sizes[type(value)](value) + len(value) * largest < limit]
            small.update(ruled_out)
            if len(ruled_out) == len(group):
                continue
            least = _LEAST_SIZE + per_item  # what a group of the smallest values would bound each item by
            group = [value for value in group if id(value) not in small
                     and sizes[type(value)](value) + len(value) * least < limit]
        if len(group) > _SPLIT:
            step = -(-len(group) // _SPLIT)
            groups += [(group[start:start + step], held is not None) for start in range(0, len(group), step)]
    return small
