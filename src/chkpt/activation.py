"""Start-up: which processes chkpt watches, and starting the watch of each one.

`autoload()` is what the start-up hook `chkpt_autoload.start()` calls (the chkpt_autoload.pth
line runs that hook, and on Python 3.15+ the chkpt_autoload.start entry point names it) while
site.py processes .pth files, in every interpreter of the environment. At that point
sys.argv is set, __main__ exists but is empty, and sys.path[0] is not yet the script's dir.

The rules, in order: CHKPT=0, `-c`, stdin and the REPL are never watched (the hook checks
these before importing chkpt); a free-threaded Python running without its GIL is refused
with one warning (`unsupported`); a script matching an `exclude` glob is not
watched; one matching an `include` glob is, even inside the interpreter's prefix; any other
script inside sys.prefix, sys.base_prefix, sys.exec_prefix or a site-packages directory
(pip, pytest, console scripts, the stdlib) is not; everything else is. Glob patterns that
contain a "/" match the script's absolute path ("~" expanded); the others its file name.

`start_for_script`, `start_for_module` (`python -m`, whose file is known only when runpy
starts it) and `start_explicit` (the runner) make and begin the process's Watch. An IPython
kernel (`python -m ipykernel_launcher …`) is not watched as a script: chkpt is loaded into its
shell as an IPython extension once the kernel has made it (chkpt/notebook/startup.py).

Every traced script pays for this module and watch.py at start-up, so neither imports
anything Python has not loaded already, and the config is only loaded at start-up when a
config source exists (see `configured`).
"""

import os
import sys

from chkpt import paths
from chkpt_autoload import never_watched

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType

    from chkpt.config import Config
    from chkpt.watch import Watch

# `python -m NAME` that starts an IPython kernel (Jupyter's kernel spec runs ipykernel_launcher)
KERNEL_MODULES = ("ipykernel_launcher", "ipykernel")
_called = False  # site.py processes a venv's .pth files twice on some Pythons


def module_from_orig_argv(orig_argv: list[str]) -> str | None:
    """The module name of `python [opts] -m NAME …`, read from sys.orig_argv."""
    i = 1
    while i < len(orig_argv):
        arg = orig_argv[i]
        if not arg.startswith("-") or arg == "-" or arg.startswith("--"):
            return None
        if arg in ("-X", "-W"):
            i += 2
            continue
        letters = arg[1:]
        if letters[:1] in ("X", "W"):
            i += 1
            continue
        if "m" in letters:
            rest = letters[letters.index("m") + 1 :]
            if rest:
                return rest
            return orig_argv[i + 1] if i + 1 < len(orig_argv) else None
        i += 1
    return None


def unsupported() -> str | None:
    """Why chkpt cannot watch this interpreter, None when it can.

    A free-threaded build running without its GIL (3.13t, 3.14t) is refused: a checkpoint
    reads the program's objects while its other threads would run truly in parallel, which
    records kept between checkpoints are judged by (reference counts, marshal dumps) and
    unseen.py's finding of chkpt's own thread states (the interpreter's newest, between two C
    calls made under the GIL) assume cannot happen.
    """
    gil_enabled = getattr(sys, "_is_gil_enabled", None)
    if gil_enabled is not None and not gil_enabled():
        return "free-threaded Python without its GIL is not supported: no checkpoints are taken"
    return None


def decide(path: str, include: list[str], exclude: list[str]) -> str | None:
    """None when the script at `path` is to be watched, else the reason it is not."""
    if paths.matches(path, exclude):
        return "matches an exclude pattern"
    if paths.matches(path, include):
        return None
    if paths.is_inside(path, paths.system_dirs()):
        return "lives inside the interpreter's prefix or site-packages"
    return None


def configured(start_dir: str) -> bool:
    """Whether any config source exists for a script in `start_dir`.

    Without one every setting is at its default, so start-up needs no config at all (the
    session loads it when it is first needed). CHKPT_DIR alone does not count: it only
    matters once a checkpoint is written, and a path cannot be malformed.
    """
    if any(name.startswith("CHKPT_") and name != "CHKPT_DIR" for name in os.environ):
        return True
    return bool(paths.config_files(start_dir))


def load_config(start_dir: str) -> "Config":
    """The effective config, its warnings printed."""
    from chkpt import config

    return config.report(config.load(start_dir))


def start_for_script(path: str) -> "Watch | None":
    """Watch `python path.py` if it is a user script."""
    from chkpt.watch import Watch

    script_dir = os.path.dirname(path)
    config = None
    if configured(script_dir):
        from chkpt import config as config_module

        config = config_module.load(script_dir)
    if decide(path, config.include if config else [], config.exclude if config else []) is not None:
        return None  # its warnings are for the scripts chkpt watches (a `chkpt` command says its own)
    if config is not None:
        config_module.report(config)
    watch = Watch(sys.modules["__main__"].__dict__, sys.argv, config=config, config_dir=script_dir)
    watch.set_target(path)
    watch.begin()
    return watch


def start_for_module(module: str) -> "Watch | None":
    """Watch `python -m module`: its file is known only when runpy starts its code, which a
    one-shot PY_START event sees; the rules are applied then."""
    from chkpt import monitor
    from chkpt.watch import Watch

    config = load_config(os.getcwd())
    main_globals = sys.modules["__main__"].__dict__
    watch = Watch(main_globals, ["-m", module, *sys.argv[1:]], config=config)

    def on_main_start(code: "CodeType") -> None:
        if decide(code.co_filename, config.include, config.exclude) is not None:
            watch.close()
            return
        watch.set_target(code.co_filename)  # the run keeps its argv as `-m module …`: resume needs the name

    if not monitor.watch_for_main_start(main_globals, on_main_start):
        return None  # every sys.monitoring tool id is taken: the main code cannot be found
    watch.begin()
    return watch


def start_explicit(config: "Config", main_globals: dict, target_file: str,
                   run_meta: dict | None = None, argv: "list[str] | None" = None) -> "Watch":
    """For the runner (`python -m chkpt script.py`): watch whatever it is given.

    `run_meta` adds fields to the run's metadata (resume records `resumed_from`); `argv` is
    the command line the run records (default: sys.argv).
    """
    from chkpt import config as config_module
    from chkpt.watch import Watch

    config_module.report(config)
    watch = Watch(main_globals, sys.argv if argv is None else argv, config=config,
                  config_dir=os.path.dirname(target_file), run_meta=run_meta)
    watch.set_target(target_file)
    watch.begin()
    return watch


def autoload() -> None:
    """Start chkpt for this process if it runs a user script; never raise."""
    global _called
    if _called:
        return
    _called = True
    try:
        if never_watched():
            return
        reason = unsupported()
        if reason is not None:
            from chkpt import guard

            guard.warn(reason)
            return
        argv0 = sys.argv[0]
        if argv0 == "-m":
            module = module_from_orig_argv(getattr(sys, "orig_argv", []))
            if module is None or module == "chkpt" or module.startswith("chkpt."):
                return
            if module in KERNEL_MODULES:
                from chkpt.notebook import startup

                startup.load_into_kernel()  # once the kernel's shell exists; nothing before
                return
            start_for_module(module)
        else:
            # CPython names the main code os.path.join(cwd, argv0), unnormalised.
            start_for_script(os.path.join(os.getcwd(), argv0))
    except Exception as exc:  # chkpt must never break the program it watches
        from chkpt import guard

        guard.fail(exc, "start-up")
