"""The grammar of saved variable names: `df`, `model.weights`, `results['train']`, `step:batch`.

A saved value is named by a Python-like path from a root name: attributes (`.weights`) and
items whose key has a literal (`['train']`, `[3]`, `[(1, 2)]`). Dict keys are written as their
`repr`, so one path has one spelling; `canonical` maps any other spelling of it
(`results["train"]`, spaces) to that one. A local of the script's functions whose name is
already taken is qualified by its function: `step:batch`, and `step#2:batch` for a second
frame of `step`; a local of a function in the user's own modules always is, by the module and
the function's qualified name: `mylib.trainer.fit:w`, `mylib.trainer.fit:model.weights`.
Capture writes names with this module; the API, the CLI and resume read them with it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_QUALIFIER_CHARS = frozenset("_.<>#")  # mylib.trainer.Trainer.fit, main.<locals>.step, step#2
Steps = list[tuple[str, "Any"]]  # ("attr", name) or ("item", key), outermost first


def key_text(key: Any) -> str | None:
    """A dict key as it appears in a path (`'train'`, `3`, `(1, 2)`); None if it has no literal."""
    cls = type(key)
    if cls in (str, int, float, bool, bytes) or key is None:
        return repr(key)
    if cls is tuple and all(key_text(part) is not None for part in key):
        return repr(key)
    return None


def item(name: str, key_literal: str) -> str:
    """The path of an item below `name`: `results` and `'train'` → `results['train']`."""
    return f"{name}[{key_literal}]"


def attribute(name: str, attr: str) -> str:
    """The path of an attribute below `name`: `model` and `weights` → `model.weights`."""
    return f"{name}.{attr}"


def qualified_local(function: str, occurrence: int, name: str) -> str:
    """A local qualified by its function: `step:batch`, `step#2:batch`, `mylib.trainer.fit:w`."""
    qualifier = function if occurrence == 1 else f"{function}#{occurrence}"
    return f"{qualifier}:{name}"


def _split_qualifier(name: str) -> tuple[str, str]:
    """`mylib.trainer.fit:w['a']` → ("mylib.trainer.fit:", "w['a']"); ("", name) when unqualified."""
    colon = name.find(":")
    if colon > 0 and all(c.isalnum() or c in _QUALIFIER_CHARS for c in name[:colon]):
        return name[: colon + 1], name[colon + 1 :]
    return "", name


def parse(name: str) -> tuple[str, Steps] | None:
    """`results['train'].x` → ("results", [("item", "train"), ("attr", "x")]); None if not a path."""
    import ast

    qualifier, name = _split_qualifier(name)
    cut = min((i for i in (name.find("."), name.find("[")) if i >= 0), default=len(name))
    root, rest = name[:cut], name[cut:]
    if not root:
        return None
    root = qualifier + root
    try:
        node = ast.parse("_" + rest, mode="eval").body
    except SyntaxError:
        return None
    steps: Steps = []
    while not isinstance(node, ast.Name):
        if isinstance(node, ast.Attribute):
            steps.append(("attr", node.attr))
            node = node.value
        elif isinstance(node, ast.Subscript):
            try:
                steps.append(("item", ast.literal_eval(node.slice)))
            except ValueError:
                return None
            node = node.value
        else:
            return None
    if node.id != "_":
        return None
    steps.reverse()
    return root, steps


def format_path(root: str, steps: Steps) -> str:
    """The canonical spelling of a parsed path."""
    name = root
    for kind, key in steps:
        name = attribute(name, key) if kind == "attr" else item(name, str(key_text(key)))
    return name


def canonical(name: str) -> str:
    """The one spelling capture saves a path under: `results["train"]` → `results['train']`."""
    name = name.strip()
    path = parse(name)
    return format_path(*path) if path else name


def root_of(name: str) -> str | None:
    """`model` for a nested path like `model.weights` or `results['train']`; None for a root."""
    path = parse(name)
    return path[0] if path and path[1] else None


def prefixes(name: str) -> list[tuple[str, Steps]]:
    """Each shorter path above `name` with the steps below it, longest first:
    `a['b'].c` → [(`a['b']`, [c]), (`a`, [['b'], c])]."""
    path = parse(name)
    if path is None:
        return []
    root, steps = path
    return [(format_path(root, steps[:cut]), steps[cut:]) for cut in range(len(steps) - 1, -1, -1)]


def follow(obj: Any, steps: Steps) -> Any:
    """The value at `steps` below `obj` (attributes and items)."""
    for kind, key in steps:
        obj = getattr(obj, key) if kind == "attr" else obj[key]
    return obj
