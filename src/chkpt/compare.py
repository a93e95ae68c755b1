"""What changed between two checkpoints: variables added, removed and changed.

Variables are compared by their content hashes, so unchanged data is never loaded. A changed
variable is loaded on both sides only to summarise the change: its shape or dtype, and for
numbers (numpy arrays, numeric pandas frames and series) the largest absolute difference and
the fraction of elements that differ (NaN equals NaN), for a single number both values.
"""

from __future__ import annotations

from chkpt import api, fmt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Change:
    """One variable that differs: `kind` is "added", "removed" or "changed"."""

    def __init__(self, name: str, kind: str, before: api.Variable | None, after: api.Variable | None) -> None:
        self.name = name
        self.kind = kind
        self.before = before
        self.after = after
        self.max_abs: float | None = None  # for numbers of the same shape
        self.fraction: float | None = None  # of the elements that differ
        self.numbers: tuple[float, float] | None = None  # before and after, for a single number
        self.note = ""  # why no numbers could be given, when they could not

    @property
    def shown(self) -> api.Variable:
        variable = self.after or self.before
        assert variable is not None
        return variable

    @property
    def summary(self) -> str:
        """"max |Δ| 0.5, 12% changed", "2 → 3", "shape 10 → 20", "added"."""
        if self.kind != "changed":
            return self.kind
        assert self.before is not None and self.after is not None
        parts = []
        for what, old, new in (("type", self.before.type, self.after.type),
                               ("shape", api.shape_text(self.before.shape), api.shape_text(self.after.shape)),
                               ("dtype", self.before.dtype or "", self.after.dtype or "")):
            if old != new:
                parts.append(f"{what} {old or '-'} → {new or '-'}")
        if self.numbers is not None:
            parts.append(f"{self.numbers[0]:.6g} → {self.numbers[1]:.6g}")
        elif self.max_abs is not None and self.fraction is not None:
            parts.append(f"max |Δ| {self.max_abs:.4g}, {self.fraction:.0%} changed")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts) or "content changed"

    def as_json(self) -> dict[str, Any]:
        variable = self.shown
        return {"name": self.name, "change": self.kind, "type": variable.type, "shape": variable.shape,
                "dtype": variable.dtype, "before": _described(self.before), "after": _described(self.after),
                "max_abs_difference": self.max_abs, "fraction_changed": self.fraction,
                "values": list(self.numbers) if self.numbers else None, "summary": self.summary}


def _described(variable: api.Variable | None) -> dict[str, Any] | None:
    if variable is None:
        return None
    return {"type": variable.type, "shape": variable.shape, "dtype": variable.dtype, "size": variable.size}


class Diff:
    """The differences from checkpoint `before` to checkpoint `after`."""

    def __init__(self, before: api.Checkpoint, after: api.Checkpoint) -> None:
        self.before = before
        self.after = after
        old = {v.name: v for v in before.variables}
        new = {v.name: v for v in after.variables}
        self.changes: list[Change] = []
        self.unchanged: list[str] = []
        for name in sorted(old.keys() | new.keys(), key=fmt.natural_key):
            if name not in old:
                self.changes.append(Change(name, "added", None, new[name]))
            elif name not in new:
                self.changes.append(Change(name, "removed", old[name], None))
            elif old[name].content != new[name].content:
                change = Change(name, "changed", old[name], new[name])
                _measure(change)
                self.changes.append(change)
            else:
                self.unchanged.append(name)

    def of_kind(self, kind: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    @property
    def added(self) -> list[Change]:
        return self.of_kind("added")

    @property
    def removed(self) -> list[Change]:
        return self.of_kind("removed")

    @property
    def changed(self) -> list[Change]:
        return self.of_kind("changed")

    @property
    def title(self) -> str:
        return (f"{self.before.ref} ({self.before.description}) → "
                f"{self.after.ref} ({self.after.description})")

    @property
    def counts(self) -> str:
        return (f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed, "
                f"{len(self.unchanged)} unchanged")

    def rows(self) -> list[list[str]]:
        """[mark, name, type, shape, dtype, summary] per change; marks + - ~."""
        marks = {"added": "+", "removed": "-", "changed": "~"}
        return [[marks[c.kind], c.name, c.shown.type, api.shape_text(c.shown.shape), c.shown.dtype or "",
                 c.summary] for c in self.changes]

    def as_json(self) -> dict[str, Any]:
        return {"before": self.before.ref, "after": self.after.ref,
                "changes": [c.as_json() for c in self.changes], "unchanged": self.unchanged}

    def __repr__(self) -> str:
        lines = [f"<Diff {self.title}: {self.counts}>"]
        lines += [f"  {mark} {name}: {summary}" for mark, name, _, _, _, summary in self.rows()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return fmt.html_table(["", "NAME", "TYPE", "SHAPE", "DTYPE", "CHANGE"], self.rows(),
                              caption=f"{self.title}: {self.counts}")


def diff(before: str | api.Checkpoint, after: str | api.Checkpoint | None = None,
         store: api.Store | None = None) -> Diff:
    """The differences between two checkpoints (references such as "latest@crash" or
    `Checkpoint`s); without `after`, from the checkpoint before `before` in its run to `before`."""
    first = api.checkpoint_at(before, store)
    if after is None:
        return Diff(api.previous(first), first)
    return Diff(first, api.checkpoint_at(after, store))


def _measure(change: Change) -> None:
    """Fill in the numeric summary of a changed variable, loading both versions."""
    assert change.before is not None and change.after is not None
    if not (_numeric_kind(change.before) and _numeric_kind(change.after)):
        return
    try:
        old, new = change.before.load(), change.after.load()
    except (api.LoadError, api.NotFound, api.StoreError) as exc:
        change.note = f"not compared ({exc})"
        return
    import numpy

    try:
        old_values = numpy.asarray(old.to_numpy() if hasattr(old, "to_numpy") else old, dtype=float)
        new_values = numpy.asarray(new.to_numpy() if hasattr(new, "to_numpy") else new, dtype=float)
    except (TypeError, ValueError):
        return  # not all numbers after all (an object column)
    if old_values.shape != new_values.shape:
        return
    if old_values.ndim == 0:
        change.numbers = (float(old_values), float(new_values))
    differs = ~((old_values == new_values) | (numpy.isnan(old_values) & numpy.isnan(new_values)))
    change.fraction = float(differs.mean()) if differs.size else 0.0
    both = differs & ~numpy.isnan(old_values) & ~numpy.isnan(new_values)
    change.max_abs = float(numpy.abs(new_values[both] - old_values[both]).max()) if both.any() else 0.0


def _numeric_kind(variable: api.Variable) -> bool:
    """Whether the saved value is a number or numbers, by what its record says (no loading)."""
    if variable.type in ("int", "float") or variable.type.startswith(("numpy.int", "numpy.uint", "numpy.float")):
        return True
    numeric = (variable.dtype or "").startswith(("int", "uint", "float", "bool"))  # a mixed frame: "mixed"
    return numeric and variable.type in ("numpy.ndarray", "pandas.Series", "pandas.DataFrame")
