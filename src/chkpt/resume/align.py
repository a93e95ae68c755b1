"""Lining the edited script up with the run's: where the resume point is in the edited
script, and what was changed before it.

Statements are compared by their AST (`difflib` over `statement_key`s), so comments, blank
lines and moved lines are no edits; functions, classes and lambda assignments match by the
name they bind, so an edited one shows as a changed definition, not as a new statement.
"""

from __future__ import annotations

import ast
import difflib

from chkpt.resume.analysis import Facts, is_definition

TYPE_CHECKING = False
if TYPE_CHECKING:
    from chkpt.resume.analysis import Module
    from chkpt.resume.locate import Point


def statement_key(stmt: ast.stmt) -> str:
    """Equal for the same statement; definitions match by what they define, so edits show."""
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return f"def {stmt.name}"
    if is_definition(stmt) and not isinstance(stmt, ast.Import | ast.ImportFrom):
        return "def " + ast.dump(getattr(stmt, "targets", [None])[0] or ast.Constant(None))
    return ast.dump(stmt)


def definitions(body: list[ast.stmt]) -> dict[str, str]:
    """name → what the definitions of `body` bind it to (later ones win)."""
    bound: dict[str, str] = {}
    for stmt in body:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            for alias in stmt.names:
                name = (alias.asname or alias.name).split(".")[0]
                bound[name] = ast.dump(stmt) if alias.name == "*" else f"{getattr(stmt, 'module', '')}:{alias.name}"
        elif is_definition(stmt) and not isinstance(stmt, ast.Expr):
            for name in Facts(stmt).binds:
                bound[name] = ast.dump(stmt)
    return bound


def describe(stmt: ast.stmt) -> str:
    """The statement's first line, shortened to 50 characters, for messages."""
    text = ast.unparse(stmt).splitlines()[0]
    return text if len(text) <= 50 else text[:47] + "..."


class Alignment:
    """Where the old resume point is in the edited script (`index`), what changed before it
    (`problems`, one sentence each) and the names whose definitions differ (`edited`)."""

    def __init__(self, old: Module, new: Module, point: Point) -> None:
        self.problems: list[str] = []
        i = point.index
        matcher = difflib.SequenceMatcher(None, [statement_key(s) for s in old.body],
                                          [statement_key(s) for s in new.body], autojunk=False)
        self.index = len(new.body)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if i1 >= i:  # wholly at or after the point (insertions just before it run after it)
                self.index = min(self.index, j1)
                break
            if i2 > i:  # straddles the point
                self.index = j1 + (i - i1 if tag == "equal" else min(i - i1, j2 - j1))
            if tag != "equal":
                self._changed(old.body[i1:min(i2, i)], new.body[j1:j2 if i2 <= i else self.index])
        while self.index < len(new.body) and is_definition(new.body[self.index]) and not point.in_loop:
            self.index += 1  # definitions right at the point run in the prelude
        old_defs = definitions(old.body[:i])
        new_defs = definitions(new.body[:self.index])
        self.edited = {n for n in old_defs.keys() | new_defs.keys() if old_defs.get(n) != new_defs.get(n)}

    def _changed(self, removed: list[ast.stmt], added: list[ast.stmt]) -> None:
        removed = [s for s in removed if not is_definition(s)]
        added = [s for s in added if not is_definition(s)]
        if removed and added:
            self.problems.append(f"line {added[0].lineno} ({describe(added[0])}), before the resume "
                                 f"point, was changed since the run (it was: {describe(removed[0])})")
        elif added:
            self.problems.append(f"line {added[0].lineno} ({describe(added[0])}) was added before "
                                 "the resume point")
        elif removed:
            self.problems.append(f"the statement {describe(removed[0])} (line {removed[0].lineno} in "
                                 "the run's script), before the resume point, was removed")
