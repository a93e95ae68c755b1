"""`chkpt ls`, `chkpt show` and `chkpt diff`: runs, checkpoints, variables and the changes
between two checkpoints as tables, or as JSON.

Every text a run saved goes through `fmt.printable` before it is shown; `--json` prints
the exact saved strings (JSON escapes them itself).
"""

from __future__ import annotations

import itertools
import json
import os
import reprlib
import shlex
import sys

from chkpt import api, fmt, naming, records
from chkpt.cli.parsing import CliError
from chkpt.guard import warn

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

STATUS_STYLES = {"finished": "green", "crashed": "red", "interrupted": "yellow", "killed": "yellow",
                 "running": "cyan", "damaged": "red"}


def _run_json(run: api.Run, waiting: list[str] | tuple[()] = ()) -> dict[str, Any]:
    place = run.summary.get("crash") or {}
    described = dict(run.meta, checkpoints=run.checkpoint_count, size=run.size, stored=run.stored,
                     status=run.status,
                     duration=run.duration, crash_line=place.get("line"), pinned=run.pinned)
    described.pop("summary", None)  # the listing's own cache, not the run's facts
    if run.status == "damaged":
        described["problem"] = run.problems[0]
    if run.id in waiting:  # a shared store's run that this machine has not uploaded yet
        described["waiting_upload"] = True
    return described


def _status(run: api.Run, paint: fmt.Painter, width: int | None = None) -> str:
    text = fmt.printable(run.end_text)
    return paint(fmt.shorten(text, width) if width else text, STATUS_STYLES.get(run.status, ""))


def _report(problems: list[str]) -> None:
    for problem in problems:
        warn(problem)


def _filters_text(args: argparse.Namespace) -> str:
    given = [f"--{key} {getattr(args, key)}" for key in ("script", "status", "since", "until")
             if getattr(args, key) is not None]
    return " ".join(given)


def _repeated_names(shown: list[api.Run]) -> bool:
    """Whether one script name stands for scripts in several folders among `shown`."""
    folders: dict[str, set[str]] = {}
    for run in shown:
        folders.setdefault(os.path.basename(run.script), set()).add(run.folder)
    return any(len(f) > 1 for f in folders.values())


def cmd_ls(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 0:
        raise CliError(f"-n {args.limit}: give how many runs to list (0: all)")
    store = api.default_store()
    everything = api.all_runs(store)
    found = api.select(everything, script=args.script, since=args.since, until=args.until, status=args.status)
    limit = (0 if args.json else 30) if args.limit is None else args.limit
    shown = found[:limit] if limit > 0 else found
    waiting: list[str] = []
    if store.shared:
        from chkpt import shared

        waiting = shared.waiting_runs(store)
    if args.json:  # one run a line: the C encoder (no indent) keeps 10,000 runs under a second
        print("[" + ",\n ".join(json.dumps(_run_json(r, waiting), default=str) for r in shown) + "]")
    elif not shown:
        filters = _filters_text(args)
        matching = f" matching {fmt.printable(filters)}" if filters else ""
        where = fmt.printable(store.location)
        print(f"no runs{matching} in {where} ({fmt.plural(len(everything), 'run')} in all)"
              if everything else f"no runs in {where}")
    else:
        print(_runs_table(shown, store.shared))
        print(_footer(args, shown, found, everything, store.location))
    if waiting and not args.json:
        print(fmt.Painter.for_stream(sys.stdout)(fmt.printable(shared.waiting_line(store) or ""), "dim"))
    _report([problem for run in shown for problem in run.problems])
    return 0


def _runs_table(shown: list[api.Run], shared: bool) -> str:
    """The table of runs; a HOST column for a shared store or runs of several hosts."""
    paint = fmt.Painter.for_stream(sys.stdout)
    with_host = shared or len({run.meta.get("host") for run in shown} - {None, ""}) > 1
    with_folder = _repeated_names(shown)
    with_args = any(run.args for run in shown)
    with_pins = any(run.pinned for run in shown)
    headers = ["RUN", "SCRIPT", *(["HOST"] * with_host), *(["FOLDER"] * with_folder), *(["ARGS"] * with_args),
               "STARTED", "DURATION", "CKPTS", "SIZE", "STORED", *(["PIN"] * with_pins), "STATUS"]
    rows = []
    for run in shown:
        row = [paint(fmt.printable(run.id), "cyan"), fmt.printable(os.path.basename(run.script))]
        if with_host:
            row.append(fmt.printable(str(run.meta.get("host") or "?")))
        if with_folder:
            row.append(fmt.printable(fmt.short_path(run.folder)))
        if with_args:
            row.append(fmt.printable(fmt.shorten(shlex.join(run.args), 30)))
        row += [fmt.relative_time(run.start_time) if run.start_time else "-", _duration_text(run),
                str(run.checkpoint_count), fmt.human_size(run.size), fmt.human_size(run.stored)]
        if with_pins:
            row.append(paint("pinned", "bold") if run.pinned else "")
        row.append(_status(run, paint, 70))
        rows.append(row)
    first_number = headers.index("DURATION")
    return fmt.table(headers, rows, right=set(range(first_number, first_number + 4)), paint=paint)


def _duration_text(run: api.Run) -> str:
    """The duration; "≥ 5m02s" for a killed run, which ran at least until its last sign of life."""
    text = fmt.human_duration(run.duration)
    return f"≥{text}" if run.status == "killed" and run.duration is not None else text


def _footer(args: argparse.Namespace, shown: list[api.Run], found: list[api.Run],
            everything: list[api.Run], root: str) -> str:
    """What was shown of what exists: "3 runs (of 12 matching --status crashed; 340 in all), …"."""
    paint = fmt.Painter.for_stream(sys.stdout)
    blobs: dict[str, int] = {}
    for run in shown:
        blobs.update(run.blobs)
    counts = []
    if len(shown) < len(found):
        counts.append(f"of {len(found)}" + (" matching" if len(found) < len(everything) else ""))
    filters = _filters_text(args)
    if filters:
        counts.append(("" if counts else "matching ") + filters)
    if len(found) < len(everything):
        counts.append(f"{len(everything)} in all")
    more = f" ({'; '.join(counts)})" if counts else ""
    hint = "; -n 0 lists all" if len(shown) < len(found) else ""
    pinned = sum(run.pinned for run in shown)
    pins = f", {pinned} pinned" if pinned else ""
    return paint(fmt.printable(f"{fmt.plural(len(shown), 'run')}{more}{pins}, "
                               f"{fmt.human_size(sum(blobs.values()))} of data in {root}; "
                               f"details: chkpt show RUN{hint}"), "dim")


def _checkpoint_json(checkpoint: api.Checkpoint) -> dict[str, Any]:
    manifest = dict(checkpoint.manifest, index=checkpoint.index, where=checkpoint.where,
                    size=checkpoint.size)
    manifest["variables"] = [
        {**{k: v for k, v in entry.items() if k not in ("pickle", "buffers")},
         "stored": records.variable_stored(entry)}
        for entry in manifest.get("variables", [])
    ]
    manifest.setdefault("skipped", [])
    return manifest


def _pause_text(seconds: Any) -> str:
    """How long the checkpoint stopped the program (waiting for the one before included)."""
    if not isinstance(seconds, int | float):
        return "-"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else fmt.human_duration(seconds)


def _clock(when: float) -> str:
    return fmt.date_time(when)[11:]


def cmd_show(args: argparse.Namespace) -> int:
    run, selector = api.resolve(args.ref)
    if args.names:
        return _show_values(run.checkpoint(selector), args.names, args.json)
    checkpoints = run.checkpoints
    chosen = run.checkpoint(selector) if checkpoints or selector else None
    if args.json:
        print(json.dumps({"run": _run_json(run), "checkpoints": [_checkpoint_json(c) for c in checkpoints]},
                         indent=1, default=str))
        return 0
    paint = fmt.Painter.for_stream(sys.stdout)
    text = fmt.printable
    print(f"{paint(text('run ' + run.id), 'bold', 'cyan')}  {text(os.path.basename(run.script))}  "
          f"{_status(run, paint)}")
    command = " ".join(run.meta.get("argv") or [])
    details = [("notebook" if run.notebook else "script", run.script),
               ("kernel" if run.notebook else "command", f"python {command}" if command else "-"),
               ("started", f"{fmt.date_time(run.start_time)} "
                           f"({fmt.relative_time(run.start_time)}), ran {_duration_text(run)}"),
               ("python", f"{run.meta.get('python', '?')}, pid {run.meta.get('pid', '?')}"
                          f" on {run.meta.get('host') or '?'}"),
               ("data", f"{fmt.human_size(run.size)} in {fmt.plural(len(checkpoints), 'checkpoint')}, "
                        f"{fmt.human_size(run.stored)} stored")]
    if isinstance(run.meta.get("restored_from"), str):
        details.append(("restored", f"from {run.meta['restored_from']} (%chkpt restore)"))
    if isinstance(run.meta.get("resumed_from"), str):
        details.append(("resumed", f"from {run.meta['resumed_from']} (chkpt resume)"))
    for key, value in details:
        print(f"  {paint(key.ljust(8), 'dim')} {text(value)}")
    if chosen is None:
        print("\nno checkpoint was saved")
        _report(run.problems)
        return 1 if run.problems else 0
    print()
    rows = []
    for c in checkpoints:
        trigger = text(c.trigger + (f" ({c.label})" if c.label else ""))
        rows.append([">" if c is chosen else "", str(c.index),
                     paint(trigger, "red" if c.trigger == "crash" else ""), _clock(c.time),
                     "+" + fmt.human_duration(c.time - run.start_time), text(c.where),
                     str(len(c.variables)), fmt.human_size(c.size),
                     fmt.human_size(int(c.manifest.get("new_bytes", 0))), _pause_text(c.manifest.get("pause"))])
    print(fmt.table(["", "#", "TRIGGER", "TIME", "AFTER", "WHERE", "VARS", "SIZE", "WRITTEN", "PAUSE"], rows,
                    right={1, 4, 6, 7, 8, 9}, paint=paint))
    exception = f": {chosen.exception}" if chosen.exception else ""
    where = f" at {chosen.where}" if chosen.line else ""
    what = chosen.description if chosen.trigger == "cell" else chosen.trigger + where
    print(f"\n{paint(text(f'checkpoint {chosen.ref}'), 'bold')} — {text(what + exception)}")
    for cell in chosen.cells[-CELLS_SHOWN:]:  # a notebook's: the cells since the checkpoint before
        count = "?" if cell["count"] is None else cell["count"]
        print(paint(f"  [{count}] ", "dim") + text(fmt.shorten(" ⏎ ".join(cell["source"].strip().splitlines()), 100)))
    rows = [[text(name), text(kind), api.shape_text(shape), text(dtype), fmt.human_size(size),
             fmt.human_size(stored), paint(text(scope), "dim")]
            for name, kind, shape, dtype, size, stored, scope in _grouped(chosen.variables)]
    if rows:
        print(fmt.table(["NAME", "TYPE", "SHAPE", "DTYPE", "SIZE", "STORED", "SCOPE"], rows, right={4, 5},
                        paint=paint))
    else:
        returned = [c for c in checkpoints if c.trigger == "return" and c.variables]
        print("  (no variables" + (f"; main()'s locals as it returned: chkpt show {text(returned[-1].ref)})"
                                   if returned else ")"))
    if chosen.aliases:
        print(paint("same object, saved once:", "bold"))
        for alias, target in chosen.aliases.items():
            print(f"  {text(alias)} is {text(target)}")
    if chosen.skipped:
        print(paint("skipped:", "bold"))
        names = [text(entry["name"]) for entry in chosen.skipped]
        width = max(map(len, names))
        for name, entry in zip(names, chosen.skipped, strict=True):
            print(f"  {name.ljust(width)}  {paint(text(entry['reason']), 'yellow')}")
    ref = text(chosen.ref)
    print(paint(f"\nload: chkpt shell {ref}  ·  chkpt export {ref} NAME --to DIR  ·  chkpt show {ref} NAME", "dim"))
    _report(run.problems)
    return 1 if run.problems else 0  # some of the run's files cannot be read


CELLS_SHOWN = 5  # of a notebook's checkpoint, the last cells before it shown by `show`
GROUP_AT = 5  # this many consecutive items of one container, alike, take one row


def _grouped(variables: list[api.Variable]) -> list[tuple[str, str, list[int] | None, str, int, int, str]]:
    """(name, type, shape, dtype, size, stored size, scope) rows, with runs of `GROUP_AT` or more
    items of one list or dict that are alike (`out[0]` … `out[19]`, all 3-element float arrays) in
    one row `out[0…19]`, typed "20 numpy.ndarray" and sized in all."""
    rows: list[tuple[str, str, list[int] | None, str, int, int, str]] = []
    group: list[api.Variable] = []

    def flush() -> None:
        if len(group) >= GROUP_AT:
            first, last = group[0], group[-1]
            name = f"{first.name[:first.name.rindex('[')]}[{_item(first.name)}…{_item(last.name)}]"
            rows.append((name, f"{len(group)} {first.type}", first.shape, first.dtype or "",
                         sum(v.size for v in group), sum(v.stored for v in group), first.scope))
        else:
            rows.extend((v.name, v.type, v.shape, v.dtype or "", v.size, v.stored, v.scope) for v in group)
        group.clear()

    def kind(variable: api.Variable) -> tuple[Any, ...] | None:
        if not variable.name.endswith("]") or "[" not in variable.name:
            return None
        return (variable.name[:variable.name.rindex("[")], variable.type, variable.shape,
                variable.dtype, variable.scope)

    for variable in variables:
        if group and (kind(variable) is None or kind(variable) != kind(group[0])):
            flush()
        if kind(variable) is None:
            rows.append((variable.name, variable.type, variable.shape, variable.dtype or "", variable.size,
                         variable.stored, variable.scope))
        else:
            group.append(variable)
    flush()
    return rows


def _item(name: str) -> str:
    """"out[12]" → "12"."""
    return name[name.rindex("[") + 1:-1]


def _show_values(checkpoint: api.Checkpoint, names: list[str], as_json: bool) -> int:
    """`chkpt show REF NAME…`: each value's description and a preview of its contents."""
    variables = [checkpoint.variable(name) for name in names]  # every name checked first
    if as_json:
        described = [{"name": naming.canonical(name), "saved_as": variable.name, "type": variable.type,
                      "shape": variable.shape, "dtype": variable.dtype, "size": variable.size,
                      "scope": variable.scope, "preview": _preview(variable.load(), escape=False)}
                     for name, variable in zip(names, variables, strict=True)]
        print(json.dumps({"checkpoint": checkpoint.ref, "values": described}, indent=1))
        return 0
    paint = fmt.Painter.for_stream(sys.stdout)
    for number, (name, variable) in enumerate(zip(names, variables, strict=True)):
        if number:
            print()
        canonical = naming.canonical(name)
        same = f" (the same object as {variable.name})" if canonical != variable.name else ""
        details = ", ".join(filter(None, [variable.type, api.shape_text(variable.shape),
                                          variable.dtype, fmt.human_size(variable.size),
                                          variable.scope]))
        print(f"{paint(fmt.printable(canonical), 'bold')}{fmt.printable(same)}  {paint(fmt.printable(details), 'dim')}")
        print(_preview(variable.load()))
    return 0


class _Limits(reprlib.Repr):
    """reprlib's cut-down repr, with dicts in their own order, as repr shows them (reprlib sorts
    their keys: a record would read differently from the program's)."""

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{" + self.fillvalue + "}"
        pieces = [f"{self.repr1(key, level - 1)}: {self.repr1(value, level - 1)}"
                  for key, value in itertools.islice(x.items(), self.maxdict)]
        if len(x) > self.maxdict:
            pieces.append(self.fillvalue)
        return "{" + ", ".join(pieces) + "}"


def _preview(value: Any, max_lines: int = 30, max_width: int = 160, escape: bool = True) -> str:
    """repr(value), cut to a screenful (numpy and pandas already summarise large data);
    `escape` shows control characters as escapes (for a terminal; JSON escapes them itself)."""
    limits = _Limits(maxlevel=3, maxlist=20, maxdict=20, maxtuple=20, maxset=20,
                     maxstring=max_width, maxother=max_width)
    module = type(value).__module__.split(".")[0]
    text = repr(value) if module in ("numpy", "pandas") else limits.repr(value)
    lines = [fmt.printable(line) if escape else line for line in text.split("\n")]
    lines = [fmt.shorten(line, max_width) if len(line) > max_width else line for line in lines]
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], f"… ({len(lines) - max_lines + 1} more lines)"]
    return "\n".join(lines)


def cmd_diff(args: argparse.Namespace) -> int:
    from chkpt import compare

    found = compare.diff(args.ref, args.other) if args.other else compare.diff(args.ref)
    if args.json:
        print(json.dumps(found.as_json(), indent=1))
        return 0
    paint = fmt.Painter.for_stream(sys.stdout)
    print(paint(fmt.printable(found.title), "bold"))
    styles = {"+": "green", "-": "red", "~": "yellow"}
    rows = [[paint(row[0], styles[row[0]]), *(fmt.printable(cell) for cell in row[1:])] for row in found.rows()]
    if rows:
        print(fmt.table(["", "NAME", "TYPE", "SHAPE", "DTYPE", "CHANGE"], rows, paint=paint))
    else:
        print("  no variable differs")
    print(paint(found.counts, "dim"))
    return 0
