"""`chkpt rm`, `pin`, `unpin`, `gc`, `config`, `doctor` and `sync`: deleting and keeping runs, the
store's size, the effective config, the set-up, uploads to a shared store.

Config warnings are printed once, by the commands that use settings (gc, config; doctor lists
them as problems); commands that only need the store's location stay quiet about them.
"""

from __future__ import annotations

import json
import os
import sys

from chkpt import api, fmt
from chkpt import config as config_module
from chkpt.cli import export
from chkpt.cli.parsing import CliError
from chkpt.guard import warn
from chkpt.store import Store, StoreError
from chkpt_autoload import disabled_by_env

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any


def _loaded_config(start: str) -> config_module.Config:
    """The effective config for `start`, each of its warnings printed once."""
    config = config_module.load(start)
    for warning in config.warnings:
        warn(warning)
    return config


def _run_text(meta: dict[str, Any]) -> str:
    return fmt.printable(f"{meta['id']} {os.path.basename(meta.get('script') or '?')}")


def _runs_named(refs: list[str], store: Store) -> list[api.Run]:
    """The runs the references name (each once; damaged ones too); CliError for a checkpoint."""
    chosen: dict[str, api.Run] = {}
    for ref in refs:
        run, selector = api.find(ref, store)
        if selector:
            raise CliError(f"{ref} names a checkpoint; this command takes whole runs (drop @{selector})")
        chosen.setdefault(run.id, run)
    return list(chosen.values())


def cmd_rm(args: argparse.Namespace) -> int:
    from chkpt import cleanup

    store = api.default_store()
    chosen = _runs_named(args.refs, store)
    for run in chosen:
        if run.status == "running":
            raise CliError(f"run {run.id} is still running; stop its script first")
        if run.pinned:
            raise CliError(f"run {run.id} is pinned; chkpt unpin {run.id} first")
    if store.shared:
        from chkpt import shared

        report = shared.collect(store, remove={run.id for run in chosen}, dry_run=args.dry_run)
    else:
        report = cleanup.collect(store, remove={run.id for run in chosen}, dry_run=args.dry_run)
    assert report is not None  # a blocking collect always runs
    for meta in report.runs:
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} run {_run_text(meta)} ({_frees(meta['freed'], meta.get('later', 0), report.later_from)})")
    for problem in report.problems:
        warn(problem)
    return 0


def _frees(now: int, later: int, later_from: float | None) -> str:
    """"frees 2.1 MB", or for a bucket, where data stays a day after its upload, what goes now and when the rest can."""
    if not later or later_from is None:
        return f"frees {fmt.human_size(now)}"
    return (f"frees {fmt.human_size(now)} now; {fmt.human_size(later)} more can go at a chkpt gc from "
            f"{fmt.date_time(later_from)} (a bucket keeps data a day after its upload)")


def _set_pins(args: argparse.Namespace, pinned: bool) -> int:
    store = api.default_store()
    if store.shared:
        raise CliError(f"pins are per machine and {store.location} is shared: its gc never evicts a live "
                       "run, and only the runs you name (gc --older-than, --script) otherwise")
    for run in _runs_named(args.refs, store):
        if run.status == "damaged":
            raise CliError(f"run {run.id} is damaged: {run.problems[0]}")
        was = run.pinned
        (store.pin if pinned else store.unpin)(run.id)
        what = _run_text(run.meta)
        if was == pinned:
            print(f"run {what} was already {'pinned' if pinned else 'not pinned'}")
        else:
            print(f"{'pinned' if pinned else 'unpinned'} run {what}"
                  + ("; it is never evicted now" if pinned else "; it may be evicted again"))
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    return _set_pins(args, True)


def cmd_unpin(args: argparse.Namespace) -> int:
    return _set_pins(args, False)


def cmd_gc(args: argparse.Namespace) -> int:
    from chkpt import cleanup

    given_size = None if args.max_size is None else config_module.parse_size(args.max_size)
    older = None if args.older_than is None else config_module.parse_duration(args.older_than)
    script = None if args.script is None else api.nonblank(args.script, "--script", "train.py")
    config = _loaded_config(os.getcwd())
    max_size = config.max_store_size if given_size is None else given_size
    if config.remote:  # the bucket (the staging store keeps under its cap by itself)
        from chkpt import shared

        store = shared.reading_store(config.remote, config.cache_size, warn=warn)
        report = shared.collect(store, max_size=given_size, older_than=older, script=script, dry_run=args.dry_run)
    else:
        report = cleanup.collect(Store(config.store_dir), max_size=max_size, older_than=older,
                                 script=script, dry_run=args.dry_run)
    assert report is not None  # a blocking collect always runs
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "runs": [r["id"] for r in report.runs],
                          "kept_by_pins": [r["id"] for r in report.kept],
                          "freed": report.freed, "size_before": report.store_size_before,
                          "size_after": report.store_size_after, "freed_later": report.later,
                          "freed_later_from": report.later_from,
                          "problems": report.problems}, indent=1))
        return 0
    for run in report.runs:
        print(f"{'would remove' if args.dry_run else 'removed'} run {_run_text(run)} ({fmt.human_size(run['freed'])})")
    if not report.runs:
        print("no run to remove")
    for run in report.kept:
        print(f"{'would keep' if args.dry_run else 'kept'} pinned run {_run_text(run)}, "
              "which would have gone otherwise")
    verb = "would free" if args.dry_run else "freed"
    print(f"{verb} {fmt.human_size(report.freed)}; store {fmt.human_size(report.store_size_before)}"
          f" → {fmt.human_size(report.store_size_after)}"
          + (f" (cap {fmt.human_size(max_size)})" if not config.remote or given_size is not None else ""))
    if report.later and report.later_from is not None:
        print(f"{fmt.human_size(report.later)} that no run refers to any more can go at a chkpt gc from "
              f"{fmt.date_time(report.later_from)} (a bucket keeps data a day after its upload)")
    for problem in report.problems:
        warn(problem)
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from chkpt import paths, sync

    timeout = config_module.parse_duration(args.timeout)
    url = _loaded_config(os.getcwd()).dir if args.url is None else api.nonblank(args.url, "URL", "s3://bucket/prefix")
    if not paths.is_remote(url):
        raise CliError(f"{'dir is ' + repr(url) if url else 'no dir is configured'}: sync needs a bucket store "
                       "(chkpt sync s3://bucket/prefix, gs://… or az://…, or dir = \"s3://…\" in the config)")
    url = paths.remote_url(url)
    if args.report_fd is not None:  # the background uploader of a traced run: its problem goes to the run
        try:
            sync.upload(url, wait=3600)  # after the uploader at work (it may be failing), a pass of its own
        except Exception as exc:
            text = str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
            os.write(args.report_fd, sync.kept_locally(f"could not upload: {text}", url).encode())
        return 0
    from chkpt import shared

    uploaded = sync.upload(url, timeout=timeout, wait=timeout)
    local = sync.Local(url)
    left = len(local.pending())
    if uploaded:
        print(f"uploaded {fmt.plural(len(uploaded), 'run')} to {fmt.printable(url)}")
    if left or not uploaded:
        print(fmt.printable(shared.waiting_text(url, left, local.uploading())))
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

    start = os.getcwd()
    if args.script_dir is not None:
        start = os.path.abspath(os.path.expanduser(api.nonblank(args.script_dir, "--script-dir", "~/proj")))
        if not os.path.isdir(start):
            raise CliError(f"--script-dir {args.script_dir}: no such folder")
    config = _loaded_config(start)
    if args.json:
        print(json.dumps({k: {"value": v, "source": config.sources[k]}
                          for k, v in config.as_dict().items()}, indent=1))
        return 0
    paint = fmt.Painter.for_stream(sys.stdout)
    rows = [[key, fmt.printable(_config_value(key, value)),
             paint(fmt.printable(config.sources[key]), "dim" if config.sources[key] == "default" else "")]
            for key, value in config.as_dict().items()]
    print(fmt.table(["KEY", "VALUE", "FROM"], rows, paint=paint))
    user_file = paths.user_config_file()
    project = paths.find_project_file(start)
    where = f"{config.remote} (staged in {config.store_dir})" if config.remote else config.store_dir
    text = fmt.printable
    print(paint(f"\nstore        {text(where)}\n"
                f"user file    {text(user_file)}{'' if os.path.isfile(user_file) else ' (not present)'}\n"
                f"project file {text(project) if project else '(none at or above ' + text(start) + ')'}\n"
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
    if config.remote:
        from chkpt import shared

        checks.extend(shared.check(config.remote))
    store = Store(config.store_dir)  # where checkpoints are written (a bucket's: this machine's staging)
    try:
        store.probe_writable()
        checks.append(("store", True, f"writable: {store.location} "
                                      f"({fmt.plural(len(store.run_ids()), 'run')})"))
    except (OSError, StoreError) as exc:
        checks.append(("store", False, f"{store.location} is not writable ({exc})"))
    checks.append(("export", True, "frames export as Parquet" if export.parquet_available()
                   else "pyarrow not installed: frames export as pickle + CSV"))
    has_ipython = importlib.util.find_spec("IPython") is not None
    checks.append(("shell", True, "IPython" if has_ipython
                   else "IPython not installed: chkpt shell opens the plain Python prompt"))
    ok = all(passed for _, passed, _ in checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [{"topic": t, "ok": p, "text": x}
                                               for t, p, x in checks]}, indent=1))
    else:
        paint = fmt.Painter.for_stream(sys.stdout)
        for topic, passed, text in checks:
            mark = paint("ok", "green") if passed else paint("PROBLEM", "red", "bold")
            print(f"{topic.ljust(9)} {mark.ljust(2)}  {fmt.printable(text)}")
    return 0 if ok else 1
