"""Finds the salient objects of a scope and names them (SPEC §4, §7).

Input: the script's globals and the locals of its frames. Output: the values to save, each
under a Python-like path (`df`, `model.weights`, `results["train"]`, `frames[3]`), and the
values skipped with the reason. Data objects nested in user objects and builtin containers
are found to a bounded depth and number of visited objects; an object reachable by two
names is saved once (the second name is an alias).

Naming: globals keep their name; a local keeps its name unless another global or local
already has it, then it is qualified by its function: `step:batch` (and `step#2:batch` for
a second frame of the same function).
"""

from __future__ import annotations

from chkpt import salience
from chkpt.fmt import human_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any

MAX_DEPTH = 4
MAX_VISITS = 20_000
MAX_CONTAINER_ITEMS = 100  # larger containers are saved whole rather than walked


class Item:
    """One value to save."""

    __slots__ = ("info", "name", "obj", "scope", "size", "type")

    def __init__(self, name: str, obj: Any, size: int, scope: str) -> None:
        self.name = name
        self.obj = obj
        self.size = size
        self.scope = scope
        self.type = salience.type_label(obj)
        self.info = salience.describe(obj)


class Capture:
    """What one checkpoint saves, what it skipped and why, and names that alias others."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.skipped: list[dict[str, str]] = []
        self.aliases: dict[str, str] = {}

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append({"name": name, "reason": reason})


def named_roots(
    main_globals: dict[str, Any], frames: list[FrameType], tracked: dict[str, Any]
) -> list[tuple[str, Any, str]]:
    """(name, value, scope) for the globals, then the locals of each frame, innermost first."""
    roots: list[tuple[str, Any, str]] = []
    used: set[str] = set()
    for name, value in tracked.items():
        roots.append((name, value, "tracked"))
        used.add(name)
    for name, value in list(main_globals.items()):
        if not name.startswith("__") and name not in used:
            roots.append((name, value, "global"))
            used.add(name)
    seen_functions: dict[str, int] = {}
    for frame in frames:
        if frame.f_globals is main_globals and frame.f_code.co_name == "<module>":
            continue  # its locals are the globals
        function = frame.f_code.co_name
        seen_functions[function] = seen_functions.get(function, 0) + 1
        count = seen_functions[function]
        qualifier = function if count == 1 else f"{function}#{count}"
        for name, value in list(frame.f_locals.items()):
            final = name if name not in used else f"{qualifier}:{name}"
            if final in used:
                continue
            used.add(final)
            roots.append((final, value, f"local of {function}"))
    return roots


class _Walker:
    def __init__(self, rules: salience.Rules, keep_small: bool, capture: Capture) -> None:
        self.rules = rules
        self.keep_small = keep_small
        self.capture = capture
        self.visits = 0
        self.saved_as: dict[int, str] = {}
        self.owners_counted: set[int] = set()

    def visit(self, name: str, obj: Any, scope: str, depth: int) -> None:
        self.visits += 1
        if self.visits > MAX_VISITS or salience.is_definition(obj):
            return
        if self.rules.name_excluded(name):
            return
        known = self.saved_as.get(id(obj))
        if known is not None:
            self.capture.aliases[name] = known
            return
        forced = scope == "tracked" or self.rules.name_forced(name)
        reason = salience.unsaveable_reason(obj)
        if reason is not None:
            self.capture.skip(name, reason)
            return
        if self.rules.is_data(obj):
            self.consider(name, obj, scope, self.size_of_data(obj), forced)
        elif isinstance(obj, salience.BUILTIN_CONTAINERS):
            self.visit_container(name, obj, scope, depth, forced)
        elif isinstance(obj, salience.BUILTIN_SCALARS) or forced:
            self.consider(name, obj, scope, salience.builtin_size(obj), forced)
        elif depth < MAX_DEPTH:
            attributes = getattr(obj, "__dict__", None)
            if isinstance(attributes, dict):
                for key, value in list(attributes.items()):
                    if isinstance(key, str) and not key.startswith("__"):
                        self.visit(f"{name}.{key}", value, scope, depth + 1)

    def size_of_data(self, obj: Any) -> int:
        owner = salience.buffer_owner(obj)
        if owner is not obj:
            if id(owner) in self.owners_counted:
                return 0  # the view's memory is already counted with its base
            self.owners_counted.add(id(owner))
        return salience.data_size(obj)

    def visit_container(self, name: str, obj: Any, scope: str, depth: int, forced: bool) -> None:
        walkable = isinstance(obj, dict | list | tuple) and len(obj) <= MAX_CONTAINER_ITEMS
        if walkable and depth < MAX_DEPTH and not forced and self.holds_data(obj):
            if isinstance(obj, dict):
                for key, value in list(obj.items()):
                    if isinstance(key, str | int | float | bool | bytes | tuple):
                        self.visit(f"{name}[{key!r}]", value, scope, depth + 1)
            else:
                for index, value in enumerate(obj):
                    self.visit(f"{name}[{index}]", value, scope, depth + 1)
            return
        self.consider(name, obj, scope, salience.builtin_size(obj), forced)

    def holds_data(self, container: Any) -> bool:
        values = container.values() if isinstance(container, dict) else container
        return any(
            self.rules.is_data(v) or not isinstance(v, salience.BUILTIN_SCALARS)
            for v in values
        )

    def consider(self, name: str, obj: Any, scope: str, size: int, forced: bool) -> None:
        if size > self.rules.max_object_size:
            self.capture.skip(
                name,
                f"{human_size(size)} is over max_object_size "
                f"({human_size(self.rules.max_object_size)})",
            )
            return
        if size < self.rules.min_size and not (forced or self.keep_small):
            return
        self.saved_as[id(obj)] = name
        self.capture.items.append(Item(name, obj, size, scope))


def collect(
    roots: list[tuple[str, Any, str]], rules: salience.Rules, *, keep_small: bool = False
) -> Capture:
    """The values to save from `roots`, by the salience rules."""
    capture = Capture()
    walker = _Walker(rules, keep_small, capture)
    for name, value, scope in roots:
        walker.visit(name, value, scope, 0)
    return capture
