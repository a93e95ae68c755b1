"""The `chkpt` command line (and `chkpt-gc`, and `python -m chkpt script.py`).

Subcommands: run, ls, show, export (alias load), shell, gc, config, doctor. Listing
commands take `--json` (contract in SPEC §7). User mistakes (an unknown run, variable or
option) end with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from chkpt import api, fmt
from chkpt import config as config_module
from chkpt.store import StoreError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SUBCOMMANDS = ("run", "ls", "show", "export", "load", "shell", "gc", "config", "doctor")


class CliError(Exception):
    """A user mistake: printed as one line, exit status 2."""


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
    return dict(run.meta, checkpoints=len(run.checkpoints), size=run.size)


def _end_text(run: api.Run) -> str:
    if run.status == "crashed":
        last = run.checkpoints[-1] if run.checkpoints else None
        where = f" at line {last.line}" if last and last.line else ""
        return f"crashed{where}: {run.meta.get('exception', '')}"
    if run.status == "finished" and run.meta.get("exit_code") not in (0, None):
        return f"finished, exit {run.meta['exit_code']}"
    return run.status


def cmd_ls(args: argparse.Namespace) -> int:
    store = api.default_store()
    problems: list[str] = []
    runs = [r for r in api.all_runs(store, problems)
            if args.script is None or api._matches_script(r, args.script)][: args.limit]
    if args.json:
        print(json.dumps([_run_json(r) for r in runs], indent=1, default=str))
    elif not runs:
        print(f"no runs in {store.root}")
    else:
        rows = []
        for run in runs:
            duration = (run.ended or time.time()) - run.started if run.started else None
            rows.append([run.id, os.path.basename(run.script), fmt.relative_time(run.started),
                         fmt.human_duration(duration), str(len(run.checkpoints)),
                         fmt.human_size(run.size), _end_text(run)])
        print(fmt.table(["RUN", "SCRIPT", "STARTED", "DURATION", "CKPTS", "SIZE", "STATUS"],
                        rows, right={4, 5}))
    for problem in problems:
        print(f"chkpt: {problem}", file=sys.stderr)
    return 0


def _checkpoint_json(checkpoint: api.Checkpoint) -> dict[str, Any]:
    manifest = dict(checkpoint.manifest)
    manifest["variables"] = [
        {k: v for k, v in entry.items() if k not in ("pickle", "buffers")}
        for entry in manifest.get("variables", [])
    ]
    return manifest


def cmd_show(args: argparse.Namespace) -> int:
    run, selector = api.resolve(args.ref)
    checkpoints = run.checkpoints
    chosen = run.checkpoint(selector) if checkpoints else None
    if args.json:
        print(json.dumps({"run": _run_json(run),
                          "checkpoints": [_checkpoint_json(c) for c in checkpoints]},
                         indent=1, default=str))
        return 0
    print(f"run {run.id}  {run.script}")
    print(f"  {' '.join(run.meta.get('argv', []))}")
    print(f"  started {fmt.relative_time(run.started)}, {_end_text(run)}")
    print()
    rows = [[("> " if c is chosen else "  ") + str(c.index), c.trigger + (f" ({c.label})" if c.label else ""),
             time.strftime("%H:%M:%S", time.localtime(c.time)),
             f"{c.function or ''}:{c.line}" if c.line else "-", str(len(c.variables))]
            for c in checkpoints]
    print(fmt.table(["#", "TRIGGER", "TIME", "WHERE", "VARS"], rows, right={4}))
    if chosen is None:
        return 0
    print(f"\ncheckpoint {chosen.index} ({chosen.trigger}):")
    rows = [[v.name, v.type, "x".join(map(str, v.shape)) if v.shape else "",
             v.dtype or "", fmt.human_size(v.size)] for v in chosen.variables]
    print(fmt.table(["NAME", "TYPE", "SHAPE", "DTYPE", "SIZE"], rows, right={4}))
    for alias, target in chosen.aliases.items():
        print(f"  {alias} is the same object as {target}")
    if chosen.skipped:
        print("skipped:")
        for entry in chosen.skipped:
            print(f"  {entry['name']}: {entry['reason']}")
    for problem in run.problems:
        print(f"chkpt: {problem}", file=sys.stderr)
    return 0


# -- export / shell ----------------------------------------------------------------------------

def export_value(value: Any, name: str, directory: str) -> str:
    """Write `value` in a format other tools read; returns the file written."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or "value"
    module = type(value).__module__.split(".")[0]
    if module == "numpy" and hasattr(value, "dtype"):
        import numpy

        path = os.path.join(directory, safe + ".npy")
        numpy.save(path, value, allow_pickle=False) if value.dtype != object else numpy.save(
            path, value, allow_pickle=True)
        return path
    if module == "pandas" and hasattr(value, "to_pickle"):
        if hasattr(value, "to_parquet"):
            try:
                path = os.path.join(directory, safe + ".parquet")
                value.to_parquet(path)
                return path
            except Exception:
                pass
        path = os.path.join(directory, safe + ".pkl")
        value.to_pickle(path)
        if hasattr(value, "to_csv"):
            value.to_csv(os.path.join(directory, safe + ".csv"))
        return path
    import pickle

    path = os.path.join(directory, safe + ".pkl")
    with open(path, "wb") as handle:
        pickle.dump(value, handle, protocol=5)
    return path


def cmd_export(args: argparse.Namespace) -> int:
    run, selector = api.resolve(args.ref)
    checkpoint = run.checkpoint(selector)
    names = args.names or [v.name for v in checkpoint.variables]
    os.makedirs(args.to, exist_ok=True)
    for name in names:
        value = checkpoint.load(name)
        print(export_value(value, name, args.to))
    return 0


def cmd_shell(args: argparse.Namespace) -> int:
    run, selector = api.resolve(args.ref)
    checkpoint = run.checkpoint(selector)
    namespace: dict[str, Any] = {}
    for variable in checkpoint.variables:
        try:
            namespace[variable.name] = variable.load()
        except Exception as exc:
            print(f"chkpt: could not load {variable.name}: {exc}", file=sys.stderr)
    banner = (f"chkpt: run {run.id} checkpoint {checkpoint.index} ({checkpoint.trigger}); "
              f"loaded: {', '.join(namespace) or 'nothing'}")
    valid = {k: v for k, v in namespace.items() if k.isidentifier()}
    try:
        import IPython
    except ImportError:
        import code

        code.interact(banner=banner, local=valid, exitmsg="")
    else:
        IPython.start_ipython(argv=[], user_ns=valid, display_banner=False)
    return 0


# -- gc / config / doctor ----------------------------------------------------------------------

def cmd_gc(args: argparse.Namespace) -> int:
    from chkpt import gc

    config = config_module.load(os.getcwd())
    max_size = config_module.parse_size(args.max_size) if args.max_size else config.max_store_size
    older = config_module.parse_duration(args.older_than) if args.older_than else None
    store = api.default_store()
    report = gc.collect(store, max_size=max_size, older_than=older, script=args.script,
                        dry_run=args.dry_run)
    assert report is not None  # a blocking collect always runs
    verb = "would free" if args.dry_run else "freed"
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "runs": [r["id"] for r in report.runs],
                          "freed": report.freed, "size_before": report.store_size_before,
                          "size_after": report.store_size_after,
                          "problems": report.problems}, indent=1))
        return 0
    for run in report.runs:
        print(f"{'would remove' if args.dry_run else 'removed'} run {run['id']} "
              f"{os.path.basename(str(run.get('script')))} ({fmt.human_size(run['freed'])})")
    print(f"{verb} {fmt.human_size(report.freed)}; store {fmt.human_size(report.store_size_before)}"
          f" -> {fmt.human_size(report.store_size_after)} (cap {fmt.human_size(max_size)})")
    for problem in report.problems:
        print(f"chkpt: {problem}", file=sys.stderr)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    config = config_module.load(os.path.abspath(args.script_dir or os.getcwd()))
    for warning in config.warnings:
        print(f"chkpt: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({k: {"value": v, "source": config.sources[k]}
                          for k, v in config.as_dict().items()}, indent=1))
        return 0
    rows = [[key, json.dumps(value), config.sources[key]] for key, value in config.as_dict().items()]
    rows.append(["(store)", config.store_dir, "effective store directory"])
    print(fmt.table(["KEY", "VALUE", "FROM"], rows))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import sysconfig

    ok = True
    purelib = sysconfig.get_paths()["purelib"]
    pth = os.path.join(purelib, "chkpt_autoload.pth")
    autoload = os.path.exists(pth)
    print(f"python     {sys.version.split()[0]} ({sys.executable})"
          + ("" if sys.version_info >= (3, 12) else "  PROBLEM: chkpt needs Python 3.12+"))
    ok &= sys.version_info >= (3, 12)
    print(f"autoload   {'active: ' + pth if autoload else 'not installed in ' + purelib}")
    disabled = os.environ.get("CHKPT", "").strip().lower() in ("0", "false", "off", "no")
    if disabled:
        print("           CHKPT is set to off in this environment: nothing is traced")
    config = config_module.load(os.getcwd())
    for warning in config.warnings:
        print(f"config     PROBLEM: {warning}")
        ok = False
    store = api.default_store()
    try:
        store.ensure()
        probe = os.path.join(store.tmp_dir, f"doctor-{os.getpid()}")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.unlink(probe)
        print(f"store      writable: {store.root}")
    except (OSError, StoreError) as exc:
        print(f"store      PROBLEM: {store.root} is not writable ({exc})")
        ok = False
    return 0 if ok else 1


# -- entry points ------------------------------------------------------------------------------

EPILOG = """examples:
  chkpt ls                         runs, newest first
  chkpt show latest                checkpoints and variables of the latest run
  chkpt show latest:train.py@crash the crash checkpoint of train.py's latest run
  chkpt export latest df --to out/ write df as Parquet/CSV (arrays as .npy)
  chkpt shell latest@crash         a Python prompt with the variables loaded
  chkpt gc --max-size 5GiB --dry-run
references: latest, latest:SCRIPT, a run id prefix; then @N, @crash, @exit, @first, @last
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chkpt", description="Inspect and load the checkpoints chkpt saved.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str, example: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text,
                              epilog=f"example:\n  {example}",
                              formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    sub.add_parser("run", help="run a script under chkpt (chkpt run --help)", add_help=False)
    ls = add("ls", "list runs, newest first", "chkpt ls --script train.py")
    ls.add_argument("--script", help="only runs of this script (file name or path)")
    ls.add_argument("-n", "--limit", type=int, default=50, help="at most this many runs")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    show = add("show", "show a run's checkpoints and one checkpoint's variables",
               "chkpt show latest@crash")
    show.add_argument("ref", nargs="?", default="latest", help="run reference (default latest)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    for name in ("export", "load"):
        export = add(name, "write variables to files (.npy, .parquet or .pkl + .csv)",
                     "chkpt export latest df arr --to out/")
        export.add_argument("ref", help="run reference, e.g. latest or latest@crash")
        export.add_argument("names", nargs="*", help="variables (default: all)")
        export.add_argument("--to", default=".", help="output directory (default: .)")
    shell = add("shell", "a Python (or IPython) prompt with a checkpoint's variables loaded",
                "chkpt shell latest@crash")
    shell.add_argument("ref", nargs="?", default="latest")
    gc = add("gc", "remove old runs and unreferenced data", "chkpt gc --older-than 30d --dry-run")
    gc.add_argument("--max-size", help="evict least recently used runs down to this size")
    gc.add_argument("--older-than", help="remove runs not used for this long (e.g. 7d, 12h)")
    gc.add_argument("--script", help="only runs of this script")
    gc.add_argument("--dry-run", action="store_true", help="say what would be removed")
    gc.add_argument("--json", action="store_true", help="machine-readable output")
    config = add("config", "the effective config and where each value came from",
                 "chkpt config --json")
    config.add_argument("--script-dir", help="resolve project config from here (default: .)")
    config.add_argument("--json", action="store_true", help="machine-readable output")
    add("doctor", "check that chkpt can work here", "chkpt doctor")
    return parser


COMMANDS = {"ls": cmd_ls, "show": cmd_show, "export": cmd_export, "load": cmd_export,
            "shell": cmd_shell, "gc": cmd_gc, "config": cmd_config, "doctor": cmd_doctor}


def main(argv: list[str] | None = None) -> int:
    """`chkpt …`; also `python -m chkpt script.py …` (a first argument that is no command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "run":
            return cmd_run(argv[1:])
        if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
            return cmd_run(argv)
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 0
        return COMMANDS[args.command](args)
    except (CliError, api.NotFound, StoreError, config_module.ConfigError) as exc:
        print(f"chkpt: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


def gc_main() -> int:
    """`chkpt-gc …` is `chkpt gc …`."""
    return main(["gc", *sys.argv[1:]])
