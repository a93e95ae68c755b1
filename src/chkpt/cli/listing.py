"""`chkpt ls` and `chkpt show`: runs, checkpoints and variables as tables, or as JSON.

Every text a run saved goes through `fmt.printable` before it is shown; `--json` prints
the exact saved strings (JSON escapes them itself).
"""

from __future__ import annotations

import json
import os
import sys
import time

from chkpt import api, fmt, naming
from chkpt.guard import warn

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

STATUS_STYLES = {"finished": "green", "crashed": "red", "killed": "yellow", "running": "cyan",
                 "damaged": "red"}


def _run_json(run: api.Run) -> dict[str, Any]:
    crash = run.crash
    described = dict(run.meta, checkpoints=len(run.checkpoints), size=run.size, status=run.status,
                     duration=run.duration, crash_line=crash.line if crash else None)
    if run.status == "damaged":
        described["problem"] = run.problems[0]
    return described


def _end_text(run: api.Run) -> str:
    """How the run ended, for people: "crashed at train.py:42 in step(): ValueError: …"."""
    if run.status == "crashed":
        crash = run.crash
        where = f" at {crash.where}" if crash and crash.line else ""
        return f"crashed{where}: {run.exception or '?'}"
    code = run.meta.get("exit_code")
    if run.status == "finished" and code not in (0, None):
        return f"finished, exit code {code}"
    if run.status == "killed":
        signal = next((c for c in run.checkpoints if c.trigger == "signal"), None)
        return f"killed ({signal.label or 'signal'})" if signal else "killed (died without exiting)"
    return run.status


def _status(run: api.Run, paint: fmt.Painter, width: int | None = None) -> str:
    text = fmt.printable(_end_text(run))
    return paint(fmt.shorten(text, width) if width else text, STATUS_STYLES.get(run.status, ""))


def _report(problems: list[str]) -> None:
    for problem in problems:
        warn(fmt.printable(problem))


def cmd_ls(args: argparse.Namespace) -> int:
    store = api.default_store()
    found = [r for r in api.all_runs(store) if args.script is None or api.matches_script(r, args.script)]
    limit = (0 if args.json else 30) if args.limit is None else args.limit
    shown = found[:limit] if limit > 0 else found
    if args.json:
        print(json.dumps([_run_json(r) for r in shown], indent=1, default=str))
    elif not shown:
        what = f"runs of {fmt.printable(args.script)}" if args.script else "runs"
        print(f"no {what} in {store.root}")
    else:
        paint = fmt.Painter.for_stream(sys.stdout)
        rows = [[paint(fmt.printable(run.id), "cyan"), fmt.printable(os.path.basename(run.script)),
                 fmt.relative_time(run.started) if run.started else "-", fmt.human_duration(run.duration),
                 str(len(run.checkpoints)), fmt.human_size(run.size), _status(run, paint, 70)]
                for run in shown]
        print(fmt.table(["RUN", "SCRIPT", "STARTED", "DURATION", "CKPTS", "SIZE", "STATUS"],
                        rows, right={3, 4, 5}, paint=paint))
        blobs: dict[str, int] = {}
        for run in shown:
            blobs.update(run.blobs)
        more = f" (of {len(found)}; -n 0 lists all)" if len(shown) < len(found) else ""
        print(paint(f"{fmt.plural(len(shown), 'run')}{more}, {fmt.human_size(sum(blobs.values()))} "
                    f"of data in {store.root}; details: chkpt show RUN", "dim"))
    _report([problem for run in shown for problem in run.problems])
    return 0


def _checkpoint_json(checkpoint: api.Checkpoint) -> dict[str, Any]:
    manifest = dict(checkpoint.manifest, index=checkpoint.index, where=checkpoint.where,
                    size=checkpoint.size)
    manifest["variables"] = [
        {k: v for k, v in entry.items() if k not in ("pickle", "buffers")}
        for entry in manifest.get("variables", [])
    ]
    manifest.setdefault("skipped", [])
    return manifest


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


def cmd_show(args: argparse.Namespace) -> int:
    run, selector = api.resolve(args.ref)
    if args.names:
        return _show_values(run.checkpoint(selector), args.names)
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
    details = [("script", run.script), ("command", f"python {command}" if command else "-"),
               ("started", f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(run.started))} "
                           f"({fmt.relative_time(run.started)}), ran {fmt.human_duration(run.duration)}"),
               ("python", f"{run.meta.get('python', '?')}, pid {run.meta.get('pid', '?')}"
                          f" on {run.meta.get('host') or '?'}"),
               ("data", f"{fmt.human_size(run.size)} in {fmt.plural(len(checkpoints), 'checkpoint')}")]
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
                     "+" + fmt.human_duration(c.time - run.started), text(c.where),
                     str(len(c.variables)), fmt.human_size(c.size),
                     fmt.human_size(int(c.manifest.get("new_bytes", 0)))])
    print(fmt.table(["", "#", "TRIGGER", "TIME", "AFTER", "WHERE", "VARS", "SIZE", "WRITTEN"], rows,
                    right={1, 4, 6, 7, 8}, paint=paint))
    exception = f": {chosen.exception}" if chosen.exception else ""
    where = f" at {chosen.where}" if chosen.line else ""
    print(f"\n{paint(text(f'checkpoint {chosen.ref}'), 'bold')} — {text(chosen.trigger + where + exception)}")
    rows = [[text(v.name), text(v.type), api.shape_text(v.shape), text(v.dtype or ""), fmt.human_size(v.size),
             paint(text(v.scope), "dim")] for v in chosen.variables]
    if rows:
        print(fmt.table(["NAME", "TYPE", "SHAPE", "DTYPE", "SIZE", "SCOPE"], rows, right={4}, paint=paint))
    else:
        print("  (no variables)")
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


def _show_values(checkpoint: api.Checkpoint, names: list[str]) -> int:
    """`chkpt show REF NAME…`: each value's description and a preview of its contents."""
    variables = [checkpoint.variable(name) for name in names]  # every name checked first
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


def _preview(value: Any, max_lines: int = 30, max_width: int = 160) -> str:
    """repr(value), cut to a screenful (numpy and pandas already summarise large data)."""
    import reprlib

    limits = reprlib.Repr(maxlevel=3, maxlist=20, maxdict=20, maxtuple=20, maxset=20,
                          maxstring=max_width, maxother=max_width)
    module = type(value).__module__.split(".")[0]
    text = repr(value) if module in ("numpy", "pandas") else limits.repr(value)
    lines = [fmt.printable(line) for line in text.split("\n")]
    lines = [fmt.shorten(line, max_width) if len(line) > max_width else line for line in lines]
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], f"… ({len(lines) - max_lines + 1} more lines)"]
    return "\n".join(lines)
