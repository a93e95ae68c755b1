"""The `chkpt` and `chkpt-gc` commands: parse the command line, run the subcommand, map errors to exit statuses.

User mistakes (an unknown run, variable, command or option) end with one `chkpt:` line on
stderr and exit status 2; unreadable store files and other OS errors with one line and 1;
an interrupt with 130; never a traceback. A reader that goes away (`chkpt ls | head`) is
no error.
"""

from __future__ import annotations

import os
import sys

from chkpt import api
from chkpt import config as config_module
from chkpt.cli import admin, export, listing
from chkpt.cli.parsing import CliError, build_parser, parse
from chkpt.guard import warn
from chkpt.store import StoreError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable


def cmd_run(args: argparse.Namespace) -> int:
    """Run the script (or `-m` module) as `python` would; a `sys.exit` in it passes through."""
    from chkpt import activation, runner

    target = args.target[1:] if args.target[:1] == ["--"] else args.target
    if not target:
        raise CliError("-m needs a module name" if args.module
                       else "run needs a script or -m module (see chkpt run --help)")
    name, script_args = target[0], target[1:]
    reason = activation.unsupported()
    if reason is not None:
        raise CliError(reason)
    try:
        if args.module:
            runner.run_module(name, script_args, config_module.load(os.getcwd(), args.overrides))
        else:
            config = config_module.load(os.path.dirname(os.path.abspath(name)), args.overrides)
            runner.run_script(name, script_args, config)
    except runner.UsageError as exc:
        raise CliError(str(exc)) from None
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from chkpt import activation, resume

    reason = activation.unsupported()
    if reason is not None:
        raise CliError(reason)
    if (args.script is None) == (args.module is None):
        raise CliError("resume needs either a script or -m MODULE (see chkpt resume --help)")
    return resume.resume_script(args.script, args.ref, args.force, args.args, args.module)


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "ls": listing.cmd_ls, "show": listing.cmd_show, "diff": listing.cmd_diff,
    "export": export.cmd_export, "load": export.cmd_export, "shell": export.cmd_shell, "rm": admin.cmd_rm,
    "pin": admin.cmd_pin, "unpin": admin.cmd_unpin, "gc": admin.cmd_gc, "config": admin.cmd_config,
    "doctor": admin.cmd_doctor, "sync": admin.cmd_sync, "resume": cmd_resume,
}


def main(argv: list[str] | None = None) -> int:
    """`chkpt …`; also `python -m chkpt script.py …` (a first argument that is no command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            args = parse(argv)
        except SystemExit as done:  # --help was printed
            return int(done.code or 0)
        if args.command is None:
            build_parser().print_help()
            return 0
        return HANDLERS[args.command](args)
    except (CliError, api.NotFound, config_module.ConfigError) as exc:
        warn(str(exc))
        return 2
    except (StoreError, api.LoadError) as exc:
        warn(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away: silence the flush at exit, no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # the store's disk or permissions
        warn(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        return 1


def module_main() -> int:
    """`python -m chkpt …`: the runner first, so a bare `--help` (or no argument) shows its help."""
    argv = sys.argv[1:]
    return main(["run", "--help"] if argv in ([], ["-h"], ["--help"]) else argv)


def gc_main() -> int:
    """`chkpt-gc …` is `chkpt gc …`."""
    return main(["gc", *sys.argv[1:]])
