"""The `chkpt` command line (and `chkpt-gc`, and `python -m chkpt script.py`).

Subcommands: run, ls, show, export (alias load), shell, gc, config, doctor, resume. Listing
commands take `--json` (contract in SPEC §7). Tables are aligned, sizes and times human,
colour only on a terminal without NO_COLOR; long loads and exports show progress on stderr.
User mistakes (an unknown run, variable or command) end with one line on stderr naming the
closest matches and exit status 2; unreadable store files exit 1; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from chkpt import api, fmt, naming
from chkpt import config as config_module
from chkpt.activation import disabled_by_env
from chkpt.store import StoreError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SUBCOMMANDS = ("run", "ls", "show", "export", "load", "shell", "gc", "config", "doctor", "resume")
STATUS_STYLES = {"finished": "green", "crashed": "red", "killed": "yellow", "running": "cyan"}


class CliError(Exception):
    """A user mistake: printed as one line, exit status 2."""


def _painter() -> fmt.Painter:
    return fmt.Painter(fmt.colour_enabled(sys.stdout))


def _warn(message: str) -> None:
    print(f"chkpt: {message}", file=sys.stderr)


# -- run ---------------------------------------------------------------------------------------

RUN_OPTIONS = {
    "--interval": "interval", "--dir": "dir", "--min-size": "min_size",
    "--max-object-size": "max_object_size", "--max-checkpoint-size": "max_checkpoint_size",
    "--max-run-size": "max_run_size", "--keep": "keep", "--modules": "modules",
}
RUN_USAGE = """usage: chkpt run [OPTIONS] script.py [ARGS…]
       chkpt run [OPTIONS] -m package.module [ARGS…]
       python -m chkpt [OPTIONS] script.py [ARGS…]

Run a script under chkpt, with or without the autoload .pth installed.
Options (each overrides the config; see `chkpt config`):
  --interval 30s  --dir PATH  --min-size 1KiB  --max-object-size 2GiB
  --max-checkpoint-size 4GiB  --max-run-size 20GiB  --keep 10  --modules numpy,pandas

examples:
  chkpt run train.py --epochs 10
  python -m chkpt --interval 5m -m mypkg.pipeline
"""


def cmd_run(argv: list[str]) -> int:
    from chkpt import runner

    overrides: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            print(RUN_USAGE, end="")
            return 0
        option, eq, value = arg.partition("=")
        if option in RUN_OPTIONS:
            if not eq:
                if i + 1 >= len(argv):
                    raise CliError(f"{option} needs a value")
                i += 1
                value = argv[i]
            overrides[RUN_OPTIONS[option]] = value
            i += 1
            continue
        break
    rest = argv[i:]
    if not rest:
        raise CliError("run needs a script or -m module (see chkpt run --help)")
    try:
        if rest[0] == "-m":
            if len(rest) < 2:
                raise CliError("-m needs a module name")
            config = config_module.load(os.getcwd(), overrides)
            runner.run_module(rest[1], rest[2:], config)
        elif rest[0].startswith("-"):
            raise CliError(f"unknown option {rest[0]} (see chkpt run --help)")
        else:
            path = rest[0]
            config = config_module.load(os.path.dirname(os.path.abspath(path)), overrides)
            runner.run_script(path, rest[1:], config)
    except runner.UsageError as exc:
        raise CliError(str(exc)) from None
    return 0


# -- ls / show ---------------------------------------------------------------------------------

def _run_json(run: api.Run) -> dict[str, Any]:
    crash = run.crash
    return dict(run.meta, checkpoints=len(run.checkpoints), size=run.size,
                duration=run.duration, crash_line=crash.line if crash else None)


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
    text = _end_text(run)
    return paint(fmt.shorten(text, width) if width else text, STATUS_STYLES.get(run.status, ""))


def cmd_ls(args: argparse.Namespace) -> int:
    store = api.default_store()
    problems: list[str] = []
    found = [r for r in api.all_runs(store, problems)
             if args.script is None or api.matches_script(r, args.script)]
    limit = (0 if args.json else 30) if args.limit is None else args.limit
    shown = found[:limit] if limit > 0 else found
    if args.json:
        print(json.dumps([_run_json(r) for r in shown], indent=1, default=str))
    elif not shown:
        what = f"runs of {args.script}" if args.script else "runs"
        print(f"no {what} in {store.root}")
    else:
        paint = _painter()
        rows = []
        for run in shown:
            rows.append([paint(run.id, "cyan"), os.path.basename(run.script),
                         fmt.relative_time(run.started), fmt.human_duration(run.duration),
                         str(len(run.checkpoints)), fmt.human_size(run.size),
                         _status(run, paint, 70)])
        print(fmt.table(["RUN", "SCRIPT", "STARTED", "DURATION", "CKPTS", "SIZE", "STATUS"],
                        rows, right={3, 4, 5}, paint=paint))
        blobs: dict[str, int] = {}
        for run in shown:
            blobs.update(run.blobs)
        more = f" (of {len(found)}; -n 0 lists all)" if len(shown) < len(found) else ""
        print(paint(f"{fmt.plural(len(shown), 'run')}{more}, {fmt.human_size(sum(blobs.values()))} "
                    f"of data in {store.root}; details: chkpt show RUN", "dim"))
    for run in shown:
        problems.extend(run.problems)
    for problem in problems:
        _warn(problem)
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
        print(json.dumps({"run": _run_json(run),
                          "checkpoints": [_checkpoint_json(c) for c in checkpoints]},
                         indent=1, default=str))
        return 0
    paint = _painter()
    print(f"{paint('run ' + run.id, 'bold', 'cyan')}  {os.path.basename(run.script)}  "
          f"{_status(run, paint)}")
    command = " ".join(run.meta.get("argv") or [])
    details = [("script", run.script), ("command", f"python {command}" if command else "-"),
               ("started", f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(run.started))} "
                           f"({fmt.relative_time(run.started)}), ran {fmt.human_duration(run.duration)}"),
               ("python", f"{run.meta.get('python', '?')}, pid {run.meta.get('pid', '?')}"
                          f" on {run.meta.get('host') or '?'}"),
               ("data", f"{fmt.human_size(run.size)} in {fmt.plural(len(checkpoints), 'checkpoint')}")]
    for key, value in details:
        print(f"  {paint(key.ljust(8), 'dim')} {value}")
    if chosen is None:
        print("\nno checkpoint was saved")
        _report_problems(run)
        return 0
    print()
    rows = []
    for c in checkpoints:
        trigger = c.trigger + (f" ({c.label})" if c.label else "")
        rows.append([">" if c is chosen else "", str(c.index),
                     paint(trigger, "red" if c.trigger == "crash" else ""), _clock(c.time),
                     "+" + fmt.human_duration(c.time - run.started), c.where,
                     str(len(c.variables)), fmt.human_size(c.size),
                     fmt.human_size(int(c.manifest.get("new_bytes", 0)))])
    print(fmt.table(["", "#", "TRIGGER", "TIME", "AFTER", "WHERE", "VARS", "SIZE", "WRITTEN"], rows,
                    right={1, 4, 6, 7, 8}, paint=paint))
    exception = f": {chosen.exception}" if chosen.exception else ""
    where = f" at {chosen.where}" if chosen.line else ""
    print(f"\n{paint(f'checkpoint {chosen.ref}', 'bold')} — {chosen.trigger}{where}{exception}")
    rows = [[v.name, v.type, api.shape_text(v.shape), v.dtype or "", fmt.human_size(v.size),
             paint(v.scope, "dim")] for v in chosen.variables]
    if rows:
        print(fmt.table(["NAME", "TYPE", "SHAPE", "DTYPE", "SIZE", "SCOPE"], rows, right={4},
                        paint=paint))
    else:
        print("  (no variables)")
    if chosen.aliases:
        print(paint("same object, saved once:", "bold"))
        for alias, target in chosen.aliases.items():
            print(f"  {alias} is {target}")
    if chosen.skipped:
        print(paint("skipped:", "bold"))
        width = max(len(entry["name"]) for entry in chosen.skipped)
        for entry in chosen.skipped:
            print(f"  {entry['name'].ljust(width)}  {paint(entry['reason'], 'yellow')}")
    print(paint(f"\nload: chkpt shell {chosen.ref}  ·  chkpt export {chosen.ref} NAME --to DIR"
                f"  ·  chkpt show {chosen.ref} NAME", "dim"))
    _report_problems(run)
    return 0


def _show_values(checkpoint: api.Checkpoint, names: list[str]) -> int:
    """`chkpt show REF NAME…`: each value's description and a preview of its contents."""
    variables = [checkpoint.variable(name) for name in names]  # every name checked first
    paint = _painter()
    for number, (name, variable) in enumerate(zip(names, variables, strict=True)):
        if number:
            print()
        same = f" (the same object as {variable.name})" if naming.canonical(name) != variable.name else ""
        details = ", ".join(filter(None, [variable.type, api.shape_text(variable.shape),
                                          variable.dtype, fmt.human_size(variable.size),
                                          variable.scope]))
        print(f"{paint(naming.canonical(name), 'bold')}{same}  {paint(details, 'dim')}")
        print(_preview(variable.load()))
    return 0


def _preview(value: Any, max_lines: int = 30, max_width: int = 160) -> str:
    """repr(value), cut to a screenful (numpy and pandas already summarise large data)."""
    import reprlib

    limits = reprlib.Repr(maxlevel=3, maxlist=20, maxdict=20, maxtuple=20, maxset=20,
                          maxstring=max_width, maxother=max_width)
    module = type(value).__module__.split(".")[0]
    text = repr(value) if module in ("numpy", "pandas") else limits.repr(value)
    lines = [fmt.shorten(line, max_width) if len(line) > max_width else line
             for line in text.splitlines()]
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], f"… ({len(lines) - max_lines + 1} more lines)"]
    return "\n".join(lines)


def _report_problems(run: api.Run) -> None:
    for problem in run.problems:
        _warn(problem)


# -- export / shell ----------------------------------------------------------------------------

def file_stem(name: str) -> str:
    """A variable name as a file name needing no shell quotes: `results['train']` → `results.train`."""
    stem = []
    for char in name:
        if char.isalnum() or char in "-_.":
            stem.append(char)
        elif char in "[:":
            stem.append(".")
    return "".join(stem).strip(".") or "value"


def export_value(value: Any, stem: str, directory: str) -> list[str]:
    """Write `value` in formats other tools read; returns the files written.

    Arrays: .npy. DataFrames/Series: .parquet when pyarrow is installed and can hold the
    frame, else .pkl (exact) plus .csv (for any tool). Plain JSON data: .json. Else .pkl.
    """
    base = os.path.join(directory, stem)
    module = type(value).__module__.split(".")[0]
    if module == "numpy":
        import numpy

        if type(value) is numpy.ndarray or isinstance(value, numpy.generic):
            numpy.save(base + ".npy", value, allow_pickle=value.dtype.hasobject)
            return [base + ".npy"]
    if module == "pandas" and hasattr(value, "to_csv"):
        return _export_frame(value, stem, base)
    if _is_json_data(value):
        with open(base + ".json", "w") as handle:
            json.dump(value, handle, indent=1)
        return [base + ".json"]
    return [_pickle(value, base + ".pkl")]


def _export_frame(frame: Any, stem: str, base: str) -> list[str]:
    import importlib.util

    if importlib.util.find_spec("pyarrow") is not None:
        table = frame if hasattr(frame, "columns") else frame.to_frame(
            name=stem if frame.name is None else str(frame.name))
        try:
            table.to_parquet(base + ".parquet")
            return [base + ".parquet"]
        except Exception as exc:  # pyarrow's errors vary by cause; the fallback covers all
            if os.path.exists(base + ".parquet"):
                os.unlink(base + ".parquet")
            _warn(f"{stem}: Parquet cannot hold it ({fmt.shorten(str(exc), 100)}); "
                  "writing pickle and CSV instead")
    path = _pickle(frame, base + ".pkl")
    frame.to_csv(base + ".csv")
    return [path, base + ".csv"]


def _pickle(value: Any, path: str) -> str:
    import pickle

    with open(path, "wb") as handle:
        pickle.dump(value, handle, protocol=5)
    return path


def _is_json_data(value: Any) -> bool:
    """Whether JSON holds `value` exactly (so reading it back gives an equal value)."""
    if not isinstance(value, str | int | float | bool | list | dict) or value is None:
        return False
    try:
        return bool(json.loads(json.dumps(value)) == value)
    except (TypeError, ValueError):
        return False


def cmd_export(args: argparse.Namespace) -> int:
    run, selector = api.resolve(args.ref)
    checkpoint = run.checkpoint(selector)
    variables = ([checkpoint.variable(name) for name in args.names] if args.names
                 else checkpoint.variables)
    if not variables:
        raise CliError(f"checkpoint {checkpoint.ref} saved no variables")
    os.makedirs(args.to, exist_ok=True)
    stems: set[str] = set()
    failed = 0
    written: list[dict[str, Any]] = []
    with fmt.Progress("exporting", len(variables), sum(v.size for v in variables)) as progress:
        for variable in variables:
            progress.step(variable.name, variable.size)
            stem = file_stem(variable.name)
            while stem in stems:
                stem += "_"
            stems.add(stem)
            try:
                files = export_value(variable.load(), stem, args.to)
            except api.LoadError as exc:
                _warn(str(exc))
                failed += 1
                continue
            written.append({"name": variable.name, "files": files})
            for path in [] if args.json else files:
                progress.echo(f"{variable.name} → {path} ({fmt.human_size(os.path.getsize(path))})")
    if args.json:
        print(json.dumps({"checkpoint": checkpoint.ref, "exported": written}, indent=1))
    return 1 if failed else 0


def shell_namespace(checkpoint: api.Checkpoint) -> tuple[dict[str, Any], str]:
    """Every variable of `checkpoint` loaded, and the banner that says how to reach each.

    Names that are identifiers are bound directly; every name (also `results['train']` or
    `step:batch`) is a key of the dict `ckpt` (`chkpt_vars` if the script had a `ckpt`).
    """
    values: dict[str, Any] = {}
    failed: list[str] = []
    variables = checkpoint.variables
    with fmt.Progress("loading", len(variables), sum(v.size for v in variables)) as progress:
        for variable in variables:
            progress.step(variable.name, variable.size)
            try:
                values[variable.name] = variable.load()
            except (api.LoadError, StoreError) as exc:
                failed.append(f"{variable.name} ({exc})")
    for alias, target in checkpoint.aliases.items():
        if target in values:
            values[alias] = values[target]
    namespace = {name: value for name, value in values.items() if name.isidentifier()}
    for name in values:  # containers rebuilt from their saved parts, where the API can
        root = name.replace("[", ".").split(".")[0]
        if root.isidentifier() and root not in namespace and root not in values:
            try:
                namespace[root] = checkpoint.load(root)
            except (api.NotFound, api.LoadError, StoreError):
                continue
    holder = "ckpt" if "ckpt" not in namespace else "chkpt_vars"
    namespace[holder] = values
    run = checkpoint.run
    exception = f": {checkpoint.exception}" if checkpoint.exception else ""
    lines = [f"chkpt shell — run {run.id} ({os.path.basename(run.script)}), checkpoint "
             f"{checkpoint.index}: {checkpoint.trigger} at {checkpoint.where}{exception}"]
    direct = [name for name in namespace if name != holder]
    lines.append(f"variables: {', '.join(direct) or '(none)'}")
    others = [name for name in values if name not in namespace]
    if others:
        lines.append("more, by name in the dict " + holder + ": "
                     + ", ".join(f"{holder}[{name!r}]" for name in others))
    lines.append(f"{holder} holds every variable by its saved name. Ctrl-D leaves.")
    for failure in failed:
        lines.append(f"not loaded: {failure}")
    return namespace, "\n".join(lines)


def cmd_shell(args: argparse.Namespace) -> int:
    run, selector = api.resolve(args.ref)
    namespace, banner = shell_namespace(run.checkpoint(selector))
    try:
        import IPython
    except ImportError:
        import code

        if sys.stdin.isatty():
            try:
                import readline
                import rlcompleter

                readline.set_completer(rlcompleter.Completer(namespace).complete)
                readline.parse_and_bind("tab: complete")
            except ImportError:
                pass
        code.interact(banner=banner, local=namespace, exitmsg="")
    else:
        print(banner)
        IPython.start_ipython(argv=[], user_ns=namespace, display_banner=False)
    return 0


# -- gc / config / doctor ----------------------------------------------------------------------

def cmd_gc(args: argparse.Namespace) -> int:
    from chkpt import cleanup

    config = config_module.load(os.getcwd())
    max_size = config_module.parse_size(args.max_size) if args.max_size else config.max_store_size
    older = config_module.parse_duration(args.older_than) if args.older_than else None
    store = api.default_store()
    report = cleanup.collect(store, max_size=max_size, older_than=older, script=args.script,
                        dry_run=args.dry_run)
    assert report is not None  # a blocking collect always runs
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "runs": [r["id"] for r in report.runs],
                          "freed": report.freed, "size_before": report.store_size_before,
                          "size_after": report.store_size_after,
                          "problems": report.problems}, indent=1))
        return 0
    for run in report.runs:
        print(f"{'would remove' if args.dry_run else 'removed'} run {run['id']} "
              f"{os.path.basename(str(run.get('script')))} ({fmt.human_size(run['freed'])})")
    if not report.runs:
        print("no run to remove")
    verb = "would free" if args.dry_run else "freed"
    print(f"{verb} {fmt.human_size(report.freed)}; store {fmt.human_size(report.store_size_before)}"
          f" → {fmt.human_size(report.store_size_after)} (cap {fmt.human_size(max_size)})")
    for problem in report.problems:
        _warn(problem)
    return 0


def _config_value(key: str, value: Any) -> str:
    parse = config_module.SETTINGS[key].parse
    if parse is config_module.parse_size:
        return fmt.human_size(value)
    if parse is config_module.parse_duration:
        return fmt.human_duration(value)
    if isinstance(value, list):
        return ", ".join(value) or "(none)"
    return str(value) if value != "" else "(default)"


def cmd_config(args: argparse.Namespace) -> int:
    from chkpt import paths

    start = os.path.abspath(args.script_dir or os.getcwd())
    config = config_module.load(start)
    for warning in config.warnings:
        _warn(warning)
    if args.json:
        print(json.dumps({k: {"value": v, "source": config.sources[k]}
                          for k, v in config.as_dict().items()}, indent=1))
        return 0
    paint = _painter()
    rows = [[key, _config_value(key, value),
             paint(config.sources[key], "dim" if config.sources[key] == "default" else "")]
            for key, value in config.as_dict().items()]
    print(fmt.table(["KEY", "VALUE", "FROM"], rows, paint=paint))
    user_file = paths.user_config_file()
    project = paths.find_project_file(start)
    print(paint(f"\nstore        {config.store_dir}\n"
                f"user file    {user_file}{'' if os.path.isfile(user_file) else ' (not present)'}\n"
                f"project file {project if project else '(none at or above ' + start + ')'}\n"
                f"environment  CHKPT_<KEY> (e.g. CHKPT_INTERVAL=5m); CHKPT=0 switches chkpt off",
                "dim"))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import importlib.util
    import sysconfig

    checks: list[tuple[str, bool, str]] = []  # (topic, ok, text)
    python_ok = sys.version_info >= (3, 12)
    checks.append(("python", python_ok, f"{sys.version.split()[0]} ({sys.executable})"
                   + ("" if python_ok else ": chkpt needs Python 3.12+")))
    purelib = sysconfig.get_paths()["purelib"]
    pth = os.path.join(purelib, "chkpt_autoload.pth")
    disabled = disabled_by_env()
    if not os.path.exists(pth):
        checks.append(("autoload", False, f"not installed in {purelib}; use chkpt run SCRIPT"))
    elif disabled:
        checks.append(("autoload", False, f"installed ({pth}) but CHKPT={os.environ['CHKPT']} "
                                          "switches it off here"))
    else:
        checks.append(("autoload", True, f"active: every `{sys.executable} script.py` is traced"))
    config = config_module.load(os.getcwd())
    checks.extend(("config", False, warning) for warning in config.warnings)
    store = api.default_store()
    try:
        store.probe_writable()
        checks.append(("store", True, f"writable: {store.root} "
                                      f"({fmt.plural(len(store.run_ids()), 'run')})"))
    except (OSError, StoreError) as exc:
        checks.append(("store", False, f"{store.root} is not writable ({exc})"))
    has_arrow = importlib.util.find_spec("pyarrow") is not None
    checks.append(("export", True, "frames export as Parquet" if has_arrow
                   else "pyarrow not installed: frames export as pickle + CSV"))
    has_ipython = importlib.util.find_spec("IPython") is not None
    checks.append(("shell", True, "IPython" if has_ipython
                   else "IPython not installed: chkpt shell opens the plain Python prompt"))
    ok = all(passed for _, passed, _ in checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [{"topic": t, "ok": p, "text": x}
                                               for t, p, x in checks]}, indent=1))
    else:
        paint = _painter()
        for topic, passed, text in checks:
            mark = paint("ok", "green") if passed else paint("PROBLEM", "red", "bold")
            print(f"{topic.ljust(9)} {mark.ljust(2)}  {text}")
    return 0 if ok else 1


# -- resume ------------------------------------------------------------------------------------

def cmd_resume(argv: list[str]) -> int:
    from chkpt.resume import resume_script

    args = None
    if "--" in argv:
        argv, args = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    parser = argparse.ArgumentParser(
        prog="chkpt resume", usage="chkpt resume SCRIPT [--from REF] [--force] [-- ARGS…]",
        description="Run SCRIPT (possibly edited since) again from a checkpoint of an earlier run.",
        epilog="example:\n  chkpt resume train.py --from latest@crash",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", metavar="SCRIPT")
    parser.add_argument("--from", dest="ref", metavar="REF",
                        help="the run or checkpoint (default: the latest usable checkpoint)")
    parser.add_argument("--force", action="store_true", help="resume even where chkpt cannot vouch for the result")
    parsed = parser.parse_args(argv)
    return resume_script(parsed.script, parsed.ref, parsed.force, args)


# -- entry points ------------------------------------------------------------------------------

REFERENCES = """references (RUN):
  latest                 the newest run of any script
  latest:train.py        the newest run of train.py (also just: train.py)
  3fa2c1                 a run id, or any unique prefix of one
  then optionally @N (checkpoint number, @-1 the last), @crash, @exit, @signal, @first, @last
variable names: as `chkpt show` lists them: df, model.weights, results['train'], frames[3];
  a function's local that clashes with another name is qualified: step:batch
"""

EPILOG = f"""examples:
  chkpt ls                            runs, newest first
  chkpt show latest                   checkpoints and variables of the latest run
  chkpt show latest:train.py@crash    the crash checkpoint of train.py's latest run
  chkpt export latest df --to out/    df as Parquet (or pickle + CSV); arrays as .npy
  chkpt shell latest@crash            a Python prompt with the variables loaded
  chkpt gc --max-size 5GiB --dry-run  what evicting down to 5 GiB would remove

{REFERENCES}"""

EXAMPLES = {
    "ls": """examples:
  chkpt ls                          every run, newest first
  chkpt ls --script train.py -n 5   the last 5 runs of train.py
  chkpt ls --json                   for scripts: id, script, status, started, checkpoints, size…""",
    "show": """examples:
  chkpt show                        the latest run (same as: chkpt show latest)
  chkpt show latest@crash           the variables where the latest run crashed
  chkpt show latest:train.py@2      checkpoint 2 of train.py's latest run
  chkpt show 3fa2 df "results['train']"   a preview of these variables' contents
  chkpt show latest --json          the run and every checkpoint, for scripts""",
    "export": """examples:
  chkpt export latest df --to out/        out/df.parquet (or df.pkl + df.csv)
  chkpt export latest@crash --to crash/   every variable of the crash checkpoint
  chkpt export 3fa2@4 arr "results['train']"   arr.npy and results.train.npy here
formats: numpy arrays .npy; DataFrames/Series .parquet when pyarrow is installed, else
.pkl + .csv; JSON-like builtins .json; anything else .pkl""",
    "shell": """examples:
  chkpt shell latest@crash         the crash state of the latest run
  chkpt shell latest:train.py@exit
inside: variables with identifier names are bound directly; every variable, including
results['train'] or step:batch, is in the dict ckpt: ckpt["results['train']"]""",
    "gc": """examples:
  chkpt gc                          evict down to the configured max_store_size
  chkpt gc --max-size 5GiB --dry-run
  chkpt gc --older-than 30d --script train.py""",
    "config": """examples:
  chkpt config                      every key, its value and where it came from
  chkpt config --script-dir ~/proj  as a script in ~/proj would see it
  chkpt config --json""",
    "doctor": """examples:
  chkpt doctor                      exit status 0 when all is well, 1 otherwise
  chkpt doctor --json""",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chkpt", description="Inspect and load the checkpoints chkpt saved.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str, refs: bool = False, **kwargs: Any) -> argparse.ArgumentParser:
        epilog = EXAMPLES[name.replace("load", "export")] + ("\n\n" + REFERENCES if refs else "")
        return sub.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    sub.add_parser("run", help="run a script under chkpt (chkpt run --help)", add_help=False)
    ls = add("ls", "list runs: script, start, duration, how it ended, checkpoints, size")
    ls.add_argument("--script", help="only runs of this script (file name or path)")
    ls.add_argument("-n", "--limit", type=int, metavar="N",
                    help="at most N runs (0: all; default: 30, all with --json)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    show = add("show", "show a run's checkpoints and one checkpoint's variables", refs=True)
    show.add_argument("ref", nargs="?", default="latest", metavar="RUN",
                      help="run reference (default: latest)")
    show.add_argument("names", nargs="*", metavar="NAME", help="preview these variables' contents")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    for name in ("export", "load"):
        export = add(name, "write variables to files other tools read" if name == "export"
                     else "the same as export", refs=True)
        export.add_argument("ref", metavar="RUN", help="run reference, e.g. latest or latest@crash")
        export.add_argument("names", nargs="*", metavar="NAME", help="variables (default: all)")
        export.add_argument("--to", default=".", metavar="DIR",
                            help="output directory, created if needed (default: .)")
        export.add_argument("--json", action="store_true", help="list the files written as JSON")
    shell = add("shell", "a Python (or IPython) prompt with a checkpoint's variables loaded",
                refs=True)
    shell.add_argument("ref", nargs="?", default="latest", metavar="RUN",
                       help="run reference (default: latest)")
    gc = add("gc", "remove old runs and unreferenced data")
    gc.add_argument("--max-size", help="evict least recently used runs down to this size")
    gc.add_argument("--older-than", help="remove runs not used for this long (e.g. 7d, 12h)")
    gc.add_argument("--script", help="only runs of this script")
    gc.add_argument("--dry-run", action="store_true", help="say what would be removed")
    gc.add_argument("--json", action="store_true", help="machine-readable output")
    config = add("config", "the effective config and where each value came from")
    config.add_argument("--script-dir", help="resolve project config from here (default: .)")
    config.add_argument("--json", action="store_true", help="machine-readable output")
    doctor = add("doctor", "check that chkpt can work here")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("resume", help="re-run an edited script from a checkpoint (chkpt resume --help)",
                   add_help=False)
    return parser


COMMANDS = {"ls": cmd_ls, "show": cmd_show, "export": cmd_export, "load": cmd_export,
            "shell": cmd_shell, "gc": cmd_gc, "config": cmd_config, "doctor": cmd_doctor}


def _unknown_command(word: str) -> CliError:
    import difflib

    close = difflib.get_close_matches(word, SUBCOMMANDS, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return CliError(f"unknown command {word!r}{hint} (commands: {', '.join(SUBCOMMANDS)}; "
                    "to run a script: chkpt run SCRIPT)")


def main(argv: list[str] | None = None) -> int:
    """`chkpt …`; also `python -m chkpt script.py …` (a first argument that is no command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        first = argv[0] if argv else ""
        if first == "run":
            return cmd_run(argv[1:])
        if first == "resume":
            return cmd_resume(argv[1:])
        if first and first not in SUBCOMMANDS and first not in ("-h", "--help"):
            if first.startswith("-") or first.endswith(".py") or os.path.isfile(first):
                return cmd_run(argv)
            raise _unknown_command(first)
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 0
        return COMMANDS[args.command](args)
    except (CliError, api.NotFound, config_module.ConfigError) as exc:
        _warn(str(exc))
        return 2
    except (StoreError, api.LoadError) as exc:
        _warn(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`chkpt ls | head`): silence the flush at exit, no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # the store's disk or permissions, said in one line
        _warn(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        return 1


def gc_main() -> int:
    """`chkpt-gc …` is `chkpt gc …`."""
    return main(["gc", *sys.argv[1:]])
