"""Lining the edited script up with the run's: where the resume point is in the edited
script, and what was changed before it.

The statements that are not definitions are lined up by their AST (`difflib`), so comments,
blank lines and moved definitions are no edits. Definitions (which always re-run) are
compared by the names they bind instead: `Alignment.edited`.
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
    """Equal for the same statement, whatever its comments, blank lines and position."""
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
        old_at = [k for k, stmt in enumerate(old.body) if not is_definition(stmt)]
        new_at = [k for k, stmt in enumerate(new.body) if not is_definition(stmt)]
        i = sum(1 for k in old_at if k < point.index)  # the point's position in old_at
        matcher = difflib.SequenceMatcher(None, [statement_key(old.body[k]) for k in old_at],
                                          [statement_key(new.body[k]) for k in new_at], autojunk=False)
        j = len(new_at)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if i1 >= i:  # wholly at or after the point (insertions just before it run after it)
                j = min(j, j1)
                break
            if i2 > i:  # straddles the point
                j = j1 + (i - i1 if tag == "equal" else min(i - i1, j2 - j1))
            if tag != "equal":
                self._changed([old.body[k] for k in old_at[i1:min(i2, i)]],
                              [new.body[k] for k in new_at[j1:j2 if i2 <= i else j]])
        # definitions between the statements either side of the point run in the prelude
        self.index = new_at[j] if j < len(new_at) else len(new.body)
        old_end = old_at[i] if i < len(old_at) else len(old.body)
        old_defs = definitions(old.body[:old_end])
        new_defs = definitions(new.body[:self.index])
        self.edited = {n for n in old_defs.keys() | new_defs.keys() if old_defs.get(n) != new_defs.get(n)}

    def _changed(self, removed: list[ast.stmt], added: list[ast.stmt]) -> None:
        if removed and added:
            self.problems.append(f"line {added[0].lineno} ({describe(added[0])}), before the resume "
                                 f"point, was changed since the run (it was: {describe(removed[0])})")
        elif added:
            self.problems.append(f"line {added[0].lineno} ({describe(added[0])}) was added before "
                                 "the resume point")
        elif removed:
            self.problems.append(f"the statement {describe(removed[0])} (line {removed[0].lineno} in "
                                 "the run's script), before the resume point, was removed")
