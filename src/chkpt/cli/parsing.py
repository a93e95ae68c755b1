"""The `chkpt` command line's grammar: one argparse parser for every subcommand, with its help.

`parse` also takes the shorthand `chkpt [OPTIONS] script.py ARGS…` (a first argument that
is no command runs a script). Mistakes raise `CliError` with one sentence that names the
subcommand's `--help`; `--help` itself prints and exits through `SystemExit(0)`.
"""

from __future__ import annotations

import argparse
import os
import sys

from chkpt import config, fmt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn


class CliError(Exception):
    """A user mistake: printed as one line, exit status 2."""


COMMANDS = {
    "run": "run a script under chkpt (also: python -m chkpt script.py)",
    "ls": "list runs: script, start, duration, how it ended, checkpoints, size",
    "show": "show a run's checkpoints and one checkpoint's variables",
    "diff": "compare two checkpoints: variables added, removed and changed",
    "export": "write variables to files other tools read",
    "load": "the same as export",
    "shell": "a Python (or IPython) prompt with a checkpoint's variables loaded",
    "rm": "delete runs",
    "pin": "keep a run from ever being evicted (by the store's cap or gc)",
    "unpin": "let a pinned run be evicted again",
    "gc": "remove old runs and unreferenced data",
    "config": "the effective config and where each value came from",
    "doctor": "check that chkpt can work here",
    "sync": "upload this machine's runs to the shared bucket store (dir = \"s3://bucket/prefix\", gs://, az://)",
    "resume": "run an edited script again from a checkpoint of an earlier run",
}

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
  chkpt ls --status crashed --since 1d   yesterday's crashes and today's
  chkpt show latest                   checkpoints and variables of the latest run
  chkpt show latest:train.py@crash    the crash checkpoint of train.py's latest run
  chkpt export latest df --to out/    df as Parquet (or pickle + CSV); arrays as .npy
  chkpt shell latest@crash            a Python prompt with the variables loaded
  chkpt diff latest@crash             what changed since the checkpoint before
  chkpt pin 3fa2                      never evict run 3fa2 (chkpt unpin 3fa2 undoes it)
  chkpt gc --max-size 5GiB --dry-run  what evicting down to 5 GiB would remove
  chkpt run --interval 5m train.py    run a script with options (also: python -m chkpt …)

{REFERENCES}"""

EXAMPLES = {
    "run": """examples:
  chkpt run train.py --epochs 10          --epochs goes to train.py
  chkpt run --interval 5s --keep 3 train.py
  python -m chkpt --interval 5m -m mypkg.pipeline
  chkpt run prog.py --help                prog.py's own help""",
    "ls": """examples:
  chkpt ls                          every run, newest first
  chkpt ls --script train.py -n 5   the last 5 runs of train.py
  chkpt ls --status crashed,killed  runs that did not end well
  chkpt ls --since 2d --until 1d    runs started yesterday (also: --since 2025-06-03)
  chkpt ls --script ~/proj-b        runs of scripts in that folder (or a file name, or a path)
  chkpt ls --json                   for scripts: id, script, status, started, checkpoints, size…""",
    "diff": """examples:
  chkpt diff latest@crash              the crash checkpoint against the one before it
  chkpt diff 3fa2@2 3fa2@4             two checkpoints of one run
  chkpt diff latest:train.py 9c1e      the last checkpoints of two runs
  chkpt diff 3fa2@2 3fa2@4 --json""",
    "rm": """examples:
  chkpt rm 3fa2 9c1e                 delete these runs (their data too, where no other run shares it)
  chkpt rm latest:train.py --dry-run""",
    "pin": """examples:
  chkpt pin 3fa2                     chkpt ls marks it; gc --dry-run says what the pin kept""",
    "unpin": """examples:
  chkpt unpin 3fa2""",
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
    "sync": """examples:
  chkpt sync                        upload the runs the configured bucket store lacks (after an outage)
  chkpt sync s3://team-bucket/chkpt""",
    "resume": """examples:
  chkpt resume train.py                       from the latest usable checkpoint of train.py
  chkpt resume train.py --from latest@crash
  chkpt resume train.py --from 3f2a@4 -- --epochs 20   with these script arguments
  chkpt resume -m pkg.train                   a run started by python -m pkg.train""",
}
EXAMPLES["load"] = EXAMPLES["export"]

RUN_USAGE = """chkpt run [OPTIONS] script.py [ARGS…]
       chkpt run [OPTIONS] -m package.module [ARGS…]
       python -m chkpt [OPTIONS] script.py [ARGS…]"""
RUN_DESCRIPTION = """Run a script under chkpt, with or without the autoload .pth installed. Each option
overrides its config key (see chkpt config); everything after the script, or after
-m MODULE, goes to it untouched."""
RESUME_DESCRIPTION = """Run SCRIPT (possibly edited since) again from a checkpoint of an earlier run: imports
and definitions are re-run, saved values put back, and the script continues from that
point. The arguments after -- go to the script (default: those of the run resumed)."""

METAVARS = {config.parse_size: "SIZE", config.parse_duration: "DURATION", config.parse_count: "N",
            config.parse_path: "PATH", config.parse_str_list: "A,B,…"}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose mistakes raise CliError, each naming this parser's --help.

    `after_dashes` names the destination that gets the arguments after the first `--`,
    untouched (None when there is no `--`).
    """

    def __init__(self, *args: Any, after_dashes: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after_dashes = after_dashes

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        args = list(sys.argv[1:] if args is None else args)
        rest = None
        if self.after_dashes and "--" in args:
            split = args.index("--")
            args, rest = args[:split], args[split + 1:]
        parsed, unknown = super().parse_known_args(args, namespace)
        if unknown:  # a subcommand's own parser says so, not the top-level one
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        if self.after_dashes:
            setattr(parsed, self.after_dashes, rest)
        return parsed, unknown

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see {self.prog} --help)")


class Override(argparse.Action):
    """`--key-with-dashes VALUE`: the config key's value for this run (the command-line layer)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        namespace.overrides = {**namespace.overrides, self.dest: values}


def _default_text(setting: config.Setting) -> str:
    default = setting.default
    text = ",".join(default) if isinstance(default, list) else str(default)
    return f" (default: {text})" if text else ""


def _add(sub: Any, name: str, refs: bool = False, **kwargs: Any) -> Parser:
    kwargs.setdefault("description", COMMANDS[name])
    return sub.add_parser(name, help=COMMANDS[name], epilog=EXAMPLES[name] + ("\n\n" + REFERENCES if refs else ""),
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def _add_run(sub: Any) -> None:
    run = _add(sub, "run", usage=RUN_USAGE, allow_abbrev=False, description=RUN_DESCRIPTION)
    for key, setting in config.SETTINGS.items():
        run.add_argument(f"--{key.replace('_', '-')}", dest=key, action=Override,
                         metavar=METAVARS.get(setting.parse, "VALUE"),
                         help=(setting.doc + _default_text(setting)).replace("%", "%%"))
    run.set_defaults(overrides={})
    run.add_argument("-m", dest="module", action="store_true",
                     help="run the module named next as python -m would (then its ARGS…)")
    run.add_argument("target", nargs=argparse.REMAINDER, metavar="script.py ARGS…",
                     help="the script (or, after -m, the module) and its arguments")


def build_parser() -> Parser:
    from chkpt import __version__

    parser = Parser(prog="chkpt", description="Inspect and load the checkpoints chkpt saved.",
                    epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"chkpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    _add_run(sub)
    ls = _add(sub, "ls")
    ls.add_argument("--script", help="only runs of this script (file name or path) or of scripts in this folder")
    ls.add_argument("--status", metavar="STATUS[,…]",
                    help="only runs that ended so: running, finished, crashed, interrupted, killed, damaged")
    ls.add_argument("--since", metavar="WHEN", help="only runs started since: a time ago (1h, 2d) or a date")
    ls.add_argument("--until", metavar="WHEN", help="only runs started until: a time ago (1h, 2d) or a date")
    ls.add_argument("-n", "--limit", type=int, metavar="N",
                    help="at most N runs (0: all; default: 30, all with --json)")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    show = _add(sub, "show", refs=True)
    show.add_argument("ref", nargs="?", default="latest", metavar="RUN", help="run reference (default: latest)")
    show.add_argument("names", nargs="*", metavar="NAME", help="preview these variables' contents")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    for name in ("export", "load"):
        export = _add(sub, name, refs=True)
        export.add_argument("ref", metavar="RUN", help="run reference, e.g. latest or latest@crash")
        export.add_argument("names", nargs="*", metavar="NAME", help="variables (default: all)")
        export.add_argument("--to", default=".", metavar="DIR",
                            help="output directory, created if needed (default: .)")
        export.add_argument("--json", action="store_true", help="list the files written as JSON")
    diff = _add(sub, "diff", refs=True)
    diff.add_argument("ref", metavar="RUN", help="a checkpoint, e.g. latest@crash")
    diff.add_argument("other", nargs="?", metavar="RUN",
                      help="the checkpoint to compare it with (default: the one before it in its run)")
    diff.add_argument("--json", action="store_true", help="machine-readable output")
    rm = _add(sub, "rm", refs=True)
    rm.add_argument("refs", nargs="+", metavar="RUN", help="runs to delete")
    rm.add_argument("--dry-run", action="store_true", help="say what would be deleted")
    for name in ("pin", "unpin"):
        pin = _add(sub, name, refs=True)
        pin.add_argument("refs", nargs="+", metavar="RUN", help=f"runs to {name}")
    shell = _add(sub, "shell", refs=True)
    shell.add_argument("ref", nargs="?", default="latest", metavar="RUN", help="run reference (default: latest)")
    gc = _add(sub, "gc")
    gc.add_argument("--max-size", help="evict least recently used runs down to this size")
    gc.add_argument("--older-than", help="remove runs not used for this long (e.g. 7d, 12h)")
    gc.add_argument("--script", help="only runs of this script")
    gc.add_argument("--dry-run", action="store_true", help="say what would be removed")
    gc.add_argument("--json", action="store_true", help="machine-readable output")
    config_ = _add(sub, "config")
    config_.add_argument("--script-dir", help="resolve project config from here (default: .)")
    config_.add_argument("--json", action="store_true", help="machine-readable output")
    doctor = _add(sub, "doctor")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    sync = _add(sub, "sync")
    sync.add_argument("url", nargs="?", metavar="URL",
                      help="s3://, gs:// or az://bucket/prefix (default: the configured dir)")
    sync.add_argument("--timeout", default="1h", metavar="DURATION", help="give up after this long (default: 1h)")
    sync.add_argument("--report-fd", type=int, help=argparse.SUPPRESS)  # a traced run's uploader
    resume = _add(sub, "resume", refs=True, after_dashes="args",
                  usage="chkpt resume (SCRIPT | -m MODULE) [--from REF] [--force] [-- ARGS…]",
                  description=RESUME_DESCRIPTION)
    resume.add_argument("script", nargs="?", metavar="SCRIPT", help="the script, as you would pass it to python")
    resume.add_argument("-m", dest="module", metavar="MODULE", help="the module of a run started by python -m")
    resume.add_argument("--from", dest="ref", metavar="REF",
                        help="the run or checkpoint to resume from (default: the latest usable checkpoint "
                        "of SCRIPT's latest run that has one), e.g. latest@crash, 3f2a@4")
    resume.add_argument("--force", action="store_true", help="resume even where chkpt cannot vouch for the result")
    return parser


def _unknown_command(word: str) -> CliError:
    close = fmt.closest_matches(word, COMMANDS)
    hint = f"; did you mean {close[0]}?" if close else ""
    return CliError(f"unknown command {word!r}{hint} (commands: {', '.join(COMMANDS)}; "
                    "to run a script: chkpt run SCRIPT)")


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line; `command` is None when none was given (the caller prints the help)."""
    first = argv[0] if argv else ""
    if first and first not in COMMANDS and first not in ("-h", "--help", "--version"):
        if not (first.startswith("-") or first.endswith(".py") or os.path.isfile(first)):
            raise _unknown_command(first)
        argv = ["run", *argv]
    return build_parser().parse_args(argv)
