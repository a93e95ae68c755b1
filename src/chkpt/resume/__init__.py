"""`chkpt resume`: run an edited script again from a checkpoint of an earlier run.

The stages, each importing only those before it: `analysis` (static facts of a script),
`locate` (the resume point a checkpoint stands for), `align` (the edited script against the
run's), `plan` (what to restore and re-run, or a `Refusal`), `execute` (running it). This
module picks the run and checkpoint. docs/resume.md gives the rules.
"""

from __future__ import annotations

import os

from chkpt import api, fmt, runner
from chkpt.guard import warn
from chkpt.resume.analysis import Module
from chkpt.resume.errors import Refusal
from chkpt.resume.execute import execute
from chkpt.resume.plan import Plan

__all__ = ["Refusal", "choose", "old_module", "resume_script"]


def resume_script(script: str | None, ref: str | None = None, force: bool = False,
                  args: list[str] | None = None, module: str | None = None) -> int:
    """Resume `script`, or the module run by `python -m module`, from checkpoint `ref`
    (default: the latest usable one), with `args` (default: the resumed run's). Exit status 2
    when it will not resume, with one `chkpt:` line on stderr; else that of the script, which
    ends through SystemExit when it exits or crashes, as under `python script.py`."""
    try:
        if script is not None and script.endswith(".ipynb"):
            raise api.NotFound(f"{script} is a notebook: restore its state in a kernel with %chkpt restore "
                               "(or chkpt.restore())")
        try:
            if module is not None:
                script = runner.find_module(module)[0].origin
            if script is None:
                raise api.NotFound(f"-m {module} names no module file")
            with open(script, "rb") as handle:
                source = handle.read()
            new = Module(source, os.path.join(os.getcwd(), script))
        except runner.UsageError as exc:
            raise api.NotFound(f"cannot run -m {module}: {exc}") from None
        except OSError as exc:
            raise api.NotFound(f"can't open file {script!r}: {exc.strerror}") from None
        except SyntaxError as exc:
            raise api.NotFound(f"{script} does not compile: {exc.msg} (line {exc.lineno})") from None
        plan = choose(script, ref, new, force, module, args)
    except (Refusal, api.NotFound, api.StoreError) as exc:
        warn(fmt.printable(str(exc)))
        return 2
    return execute(plan, script, plan.run.args if args is None else args, module)


def old_module(run: api.Run, module: str | None = None) -> Module:
    """The run's script as it was when the run started; a Refusal when it was started in
    another way (`python -m` or not) than the one resuming it."""
    source = run.meta.get("source")
    if run.notebook:
        raise Refusal(f"run {run.id} is a notebook kernel's: restore it in a kernel with %chkpt restore", False)
    if run.module != module:
        how = f"chkpt resume -m {run.module}" if run.module else "chkpt resume SCRIPT"
        started = f"python -m {run.module}" if run.module else "python SCRIPT"
        raise Refusal(f"run {run.id} was started with {started}; resume it with {how}", False)
    if not source:
        raise Refusal(f"run {run.id} did not keep its script's source (made by an older chkpt)", False)
    data = bytes(run.store.read_ref(source))
    return Module(data, run.script)


def choose(script: str, ref: str | None, new: Module, force: bool, module: str | None = None,
           args: list[str] | None = None) -> Plan:
    """The plan for `ref`, or for the newest checkpoint, newest run first, that can be
    resumed from with `args` (None: the run's own); else the first forceable refusal met (or the first refusal)."""
    store = api.default_store()
    if ref is not None:
        run, selector = api.resolve(ref, store, script)
        candidates = [(run, [run.checkpoint(selector)] if selector else run.checkpoints[::-1])]
    else:
        candidates = [(run, run.checkpoints[::-1]) for run in api.runs(script, store)]
        if not candidates:
            raise api.NotFound(f"no run of {script} in {store.location}")
    refusals: list[tuple[str, Refusal]] = []
    for run, checkpoints in candidates:
        try:
            old = old_module(run, module)
        except (Refusal, SyntaxError, ValueError, api.StoreError) as exc:
            refusal = exc if isinstance(exc, Refusal) else Refusal(f"the run's script cannot be read ({exc})", False)
            refusals.append((run.id, refusal))
            continue
        for checkpoint in checkpoints:
            try:
                plan = Plan(checkpoint, old, new, force, args)
            except Refusal as refusal:
                refusals.append((checkpoint.ref, refusal))
                continue
            if refusals and refusals[-1][1].forceable:  # why a later checkpoint of this run was not used
                plan.passed_over = f"not from {refusals[-1][0]}: {refusals[-1][1]}"
            return plan
    if not refusals:
        raise api.NotFound(f"no checkpoint of {script} to resume from")
    where, refusal = next(((w, r) for w, r in refusals if r.forceable), refusals[0])
    hint = " (--force resumes anyway)" if refusal.forceable else ""
    raise Refusal(f"cannot resume from {where}: {refusal}{hint}", refusal.forceable)
