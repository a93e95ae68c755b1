"""`chkpt.restore()`, `chkpt.checkout(N)` and the `%chkpt` magic that runs them in a shell.

They work in any IPython shell or kernel (checkpointed or not: CHKPT=0 only stops the
checkpoints) and in a plain Python prompt, on the namespace they are given (by default the
shell's user namespace, or the caller's globals). Which run: for `restore`, the last checkpoint
of the newest other kernel run of this notebook (its path, as the frontend tells it, or
`<kernel>` in this folder); for `checkout N`, the state after cell [N] in this kernel's run, else
in the run it restored from (and so on back), else in the notebook's latest run.
"""

from __future__ import annotations

import ast
import linecache
import os
import shlex
import sys

from chkpt import api, guard
from chkpt.notebook import kernel
from chkpt.notebook import restore as restoring

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from chkpt.notebook.cells import Cell

USAGE = ("usage: %chkpt restore [RUN[@N]]  ·  %chkpt checkout CELL [--run RUN]  ·  %chkpt status\n"
         "  restore   the last checkpoint of this notebook's previous kernel (or the one named)\n"
         "  checkout  the state after cell [CELL] (its execution count)\n"
         "  status    whether this kernel is checkpointed, and its run")


def _shell() -> Any:
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def _transform(shell: Any) -> Callable[[str], str]:
    """A cell's source as typed → Python, as IPython runs it (magics become calls)."""
    if shell is not None:
        return shell.transform_cell
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:
        return lambda source: source
    return TransformerManager().transform_cell


def _statement_runner(namespace: dict[str, Any], transform: Callable[[str], str]) -> Callable[[ast.stmt, Cell], None]:
    """Runs one statement of a cell in `namespace`, under a file name whose lines are the cell's
    (so `inspect.getsource` and tracebacks show them)."""

    def run(statement: ast.stmt, cell: Cell) -> None:
        source = transform(cell.source)
        filename = f"<chkpt: cell [{cell.count}]>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(ast.Module([statement], type_ignores=[]), filename, "exec"), namespace)

    return run


def _namespace(namespace: dict[str, Any] | None, depth: int) -> tuple[dict[str, Any], Any]:
    shell = _shell()
    if namespace is not None:
        return namespace, shell
    if shell is not None:
        return shell.user_ns, shell
    return sys._getframe(depth + 1).f_globals, None


def restore(ref: str | None = None, namespace: dict[str, Any] | None = None, depth: int = 1) -> restoring.Restored:
    """Put back the last checkpoint of this notebook's previous kernel (or checkpoint `ref`)."""
    namespace, shell = _namespace(namespace, depth)
    session = kernel.current()
    store = api.default_store()
    if ref is not None:
        checkpoint = api.checkpoint_at(ref, store)
    else:
        name = kernel.run_name(namespace, os.getcwd())
        checkpoint = restoring.latest_checkpoint(store, name, session.run_id if session is not None else None)
    transform = _transform(shell)
    done = restoring.put_back(checkpoint, namespace, "restored", restoring.history(checkpoint, store), transform,
                              _statement_runner(namespace, transform))
    if session is not None:
        session.note_restored(checkpoint.ref)
    return done


def checkout(cell: int, run: str | None = None, namespace: dict[str, Any] | None = None,
             depth: int = 1) -> restoring.Restored:
    """Replace the namespace's state with the one after cell [`cell`]."""
    namespace, shell = _namespace(namespace, depth)
    session = kernel.current()
    store = api.default_store()
    if session is not None:
        session.save_now()  # the state being replaced can be checked out again
    if run is not None:
        start = api.resolve(run, store)[0]
    elif session is not None and session.run_id is not None:
        start = api.resolve(session.run_id, store)[0]
    elif session is not None and session.restored_from is not None:
        start = api.resolve(session.restored_from, store)[0]
    else:
        name = kernel.run_name(namespace, os.getcwd())
        start = restoring.latest_checkpoint(store, name, None).run
    checkpoint = restoring.find_cell_state(restoring.lineage(start, store), cell)
    transform = _transform(shell)
    return restoring.put_back(checkpoint, namespace, "checked out", restoring.history(checkpoint, store), transform,
                              _statement_runner(namespace, transform), removable=_data_names(namespace, shell))


def _data_names(namespace: dict[str, Any], shell: Any) -> list[str]:
    """The names of `namespace` a checkout may remove: the user's (not IPython's, not dunders),
    bound to data (not to modules, functions or classes, which stay)."""
    from types import BuiltinFunctionType, FunctionType, ModuleType

    own = kernel.user_namespace(namespace, shell.user_ns_hidden) if shell is not None else namespace
    return [name for name, value in own.items()
            if name[:2] != "__" and not isinstance(value, ModuleType | type | FunctionType | BuiltinFunctionType)]


def magic(line: str) -> None:
    """%chkpt restore [RUN[@N]] · %chkpt checkout CELL [--run RUN] · %chkpt status"""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        guard.warn(f"{exc}\n{USAGE}")
        return
    command, args = (words[0], words[1:]) if words else ("", [])
    try:
        if command == "restore" and len(args) <= 1:
            print(restore(args[0] if args else None))
        elif command == "checkout" and args and args[0].lstrip("[").rstrip("]").isdigit():
            run = None
            if args[1:2] == ["--run"] and len(args) == 3:
                run = args[2]
            elif len(args) != 1:
                raise _Usage
            print(checkout(int(args[0].lstrip("[").rstrip("]")), run))
        elif command == "status" and not args:
            print(_status())
        else:
            raise _Usage
    except _Usage:
        guard.warn(USAGE if command in ("", "help", "-h", "--help") else f"cannot understand {line!r}\n{USAGE}")
    except (api.NotFound, api.StoreError, api.LoadError) as exc:
        guard.warn(str(exc))


class _Usage(Exception):
    pass


def _status() -> str:
    session = kernel.current()
    if session is None:
        return "chkpt: this kernel is not checkpointed (CHKPT=0, notebooks = false, or an exclude pattern)"
    name = kernel.run_name(session.shell.user_ns, os.getcwd())
    run = session.run_id
    where = f"run {run}" if run else "no checkpoint yet"
    restored = f"; restored from {session.restored_from}" if session.restored_from else ""
    captured = f"; last captured after cell [{session.captured}]" if session.captured is not None else ""
    return f"chkpt: checkpointing this kernel after its cells ({os.path.basename(name)}, {where}{restored}{captured})"
