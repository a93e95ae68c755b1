"""What to restore and what to re-run to resume from one checkpoint, or why not.

A value the code from the resume point on reads is restored when the checkpoint saved it;
otherwise the statements before the point that bind or change it are re-run, and so on for
what those read. Definitions and imports before the point always re-run, in their edited
version. A Plan is built from the manifest alone: no value is loaded.
"""

from __future__ import annotations

import ast
import os

from chkpt import naming
from chkpt.resume.align import Alignment, describe, statement_key
from chkpt.resume.analysis import enumerate_counter, is_definition, target_names
from chkpt.resume.errors import Refusal
from chkpt.resume.locate import Point, locate

TYPE_CHECKING = False
if TYPE_CHECKING:
    from chkpt import api
    from chkpt.resume.analysis import Module


class Plan:
    """For one checkpoint: where to continue (`index` in the edited script, `loop` when in a
    loop), what to restore (`restored`, `overlays`), and what to re-run first (`rerun`, with
    the saved values each re-run statement reads in `inputs`)."""

    def __init__(self, checkpoint: api.Checkpoint, old: Module, new: Module, force: bool) -> None:
        self.run = checkpoint.run
        self.checkpoint = checkpoint
        self.old = old
        self.new = new
        self.force = force
        self.point = locate(old, checkpoint)
        alignment = Alignment(old, new, self.point)
        for problem in alignment.problems:
            self.check(problem)
        self.index = alignment.index
        self.loop = self._same_loop() if self.point.in_loop else None
        self.restored, self.overlays = self._saved()
        self.needed = new.closure(set().union(*(new.facts[i].loads for i in range(self.index, len(new.body)))))
        self.rerun, self.inputs = self._reruns()
        self._check_edits(alignment.edited)
        if self.loop is not None:
            self._check_loop_state()

    def check(self, message: str) -> None:
        """A forceable refusal, unless --force."""
        if not self.force:
            raise Refusal(message)

    @property
    def ref(self) -> str:
        return self.checkpoint.ref

    def _same_loop(self) -> ast.For | ast.While:
        """The edited script's counterpart of the loop the checkpoint was taken in."""
        old_loop = self.old.body[self.point.index]
        new = self.new.body[self.index] if self.index < len(self.new.body) else None
        if isinstance(old_loop, ast.For) and isinstance(new, ast.For):
            same = [ast.dump(new.target), ast.dump(new.iter)] == [ast.dump(old_loop.target), ast.dump(old_loop.iter)]
        else:
            same = isinstance(old_loop, ast.While) and isinstance(new, ast.While)
        if not same:
            raise Refusal(f"the script no longer has the loop `{describe(old_loop)}` (line "
                          f"{old_loop.lineno} of the run's script) where it was", False)
        assert isinstance(new, ast.For | ast.While) and isinstance(old_loop, ast.For | ast.While)
        done = self.point.body if self.point.body != Point.NEXT else 0
        if [ast.dump(s) for s in old_loop.body[:done]] != [ast.dump(s) for s in new.body[:done]]:
            self.check(f"the loop body above line {old_loop.body[done].lineno} already ran in the "
                       "iteration being resumed, but was changed since the run")
        if isinstance(new, ast.For):
            counter = enumerate_counter(new)
            wanted = {counter} if counter else target_names(new)
            saved = {v.name for v in self.checkpoint.variables} | set(self.checkpoint.aliases)
            if not wanted <= saved:
                raise Refusal(f"the loop variable {sorted(wanted - saved)[0]} was not saved, so chkpt "
                              "cannot tell which iteration was running", False)
        return new

    def _saved(self) -> tuple[dict[str, str], dict[str, str]]:
        """Globals to restore (name → saved name) and nested paths to put into rebuilt objects."""
        module_names = set().union(*(f.binds for f in self.old.facts))
        # an object saved with a placeholder for an unsaveable part (`parts['lock']`) is rebuilt
        incomplete = {naming.root_of(s["name"]) for s in self.checkpoint.skipped}
        restored: dict[str, str] = {}
        overlays: dict[str, str] = {}
        for variable in self.checkpoint.variables:
            if variable.scope != "global":
                continue
            if not variable.name.isidentifier():
                overlays[variable.name] = variable.name
            elif variable.name not in incomplete:
                restored[variable.name] = variable.name
        for alias, target in self.checkpoint.aliases.items():
            if alias.isidentifier() and alias in module_names:
                restored.setdefault(alias, target)
            elif naming.root_of(alias) in module_names:
                overlays.setdefault(alias, target)
        overlays = {path: saved for path, saved in overlays.items() if naming.root_of(path) not in restored}
        return restored, overlays

    def _reruns(self) -> tuple[list[int], dict[int, set[str]]]:
        """Statements before the point to run again, and the saved values each needs first.

        A saved value stands in for what a re-run statement reads only if nothing from that
        statement to the point changed it. An object whose parts were saved (`model.weights`)
        is rebuilt by its assignments only, then gets the parts.
        """
        new = self.new
        rebuilt = {naming.root_of(path) for path in self.overlays}
        rerun = {i for i in range(self.index) if is_definition(new.body[i])}
        inputs: dict[int, set[str]] = {}
        todo = [(name, self.index) for name in self.needed | rebuilt]
        todo += [(name, i) for i in rerun for name in new.reads(i)]
        seen: set[tuple[str, int]] = set()
        while todo:
            name, before = todo.pop()
            if (name, before) in seen:
                continue
            seen.add((name, before))
            if name in self.restored and not any(name in new.touches(k) for k in range(before, self.index)):
                if before < self.index:
                    inputs.setdefault(before, set()).add(name)
                continue
            binders = [k for k in range(before) if name in new.touches(k)]
            if name in rebuilt:
                binders = [k for k in binders if name in new.facts[k].binds] or binders
            for k in binders:
                if k not in rerun:
                    rerun.add(k)
                    todo += [(n, k) for n in new.reads(k)]
        return sorted(rerun), inputs

    def _check_edits(self, edited: set[str]) -> None:
        """A definition edited since the run must not have fed a result that is kept."""
        rerun_keys = {statement_key(self.new.body[i]) for i in self.rerun}
        for stmt, facts in zip(self.old.body[: self.point.index], self.old.facts, strict=False):
            if is_definition(stmt) or statement_key(stmt) in rerun_keys:
                continue
            used = edited & self.old.closure(facts.loads)
            if used:
                name = sorted(used)[0]
                self.check(f"{name} was changed since the run, but line {stmt.lineno} "
                           f"(`{describe(stmt)}`), before the resume point, already ran the old one "
                           "and its result is kept")

    def _check_loop_state(self) -> None:
        """What the loop reads or changes must come back saved: re-running the statements
        before it would give the values from before its first iteration."""
        assert self.loop is not None
        facts = self.old.facts[self.point.index]
        changed = self.old.touches(self.point.index)
        for name in sorted(((facts.loads | changed) & self.needed) - set(self.restored) - target_names(self.loop)):
            computed = [k for k in range(self.index)
                        if name in self.new.touches(k) and not is_definition(self.new.body[k])]
            if computed or name in changed - facts.mutates:  # `np.zeros(…)` changes no value
                self.check(f"{name} is used by the loop at line {self.loop.lineno} but was not saved, "
                           "so its value in the middle of the loop cannot be recreated")

    def summary(self) -> list[str]:
        """The `chkpt:` lines saying where it resumes from, what it restored and re-ran."""
        checkpoint = self.checkpoint
        where = f" at line {checkpoint.line}" if checkpoint.line else ""
        lines = [f"resuming {os.path.basename(self.run.script)} from {self.ref} "
                 f"({checkpoint.trigger}{where})"]
        names = sorted(self.restored) + sorted(self.overlays)
        shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
        lines.append(f"restored {len(names)} value{'s' if len(names) != 1 else ''}"
                     + (f": {shown}" if names else ""))
        definitions = [i for i in self.rerun if is_definition(self.new.body[i])]
        others = [f"line {self.new.body[i].lineno} (`{describe(self.new.body[i])}`)"
                  for i in self.rerun if i not in definitions]
        parts = ([f"{len(definitions)} import/definition statement{'s' if len(definitions) != 1 else ''}"]
                 if definitions else []) + others
        lines.append("re-ran " + (", ".join(parts) if parts else "nothing"))
        return lines
