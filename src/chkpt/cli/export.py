"""`chkpt export` (alias `load`) and `chkpt shell`: a checkpoint's values as files, or in a prompt.

Names and messages from the run are shown through `fmt.printable`.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys

from chkpt import api, fmt, paths
from chkpt.cli.parsing import CliError
from chkpt.guard import warn
from chkpt.store import StoreError, Untrusted

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator
    from typing import IO, Any


def file_stem(name: str) -> str:
    """A variable name as a file name needing no shell quotes: `results['train']` → `results.train`."""
    stem = []
    for char in name:
        if char.isalnum() or char in "-_.":
            stem.append(char)
        elif char in "[:":
            stem.append(".")
    return "".join(stem).strip(".") or "value"


class Refused(Exception):
    """A file an export will not write; the message names it and says why."""


class Folder:
    """The directory an export writes into, held open, so that every file is made in that very
    directory (a component of its path swapped for a link meanwhile changes nothing).

    It must be the user's (or root's, as /tmp), reached through no symbolic link of another
    user. Each file is written under a new temporary name (O_EXCL|O_NOFOLLOW: nothing planted
    there is followed or truncated) and renamed into place, which replaces a file or link of the
    user's of that name and never another user's: a link planted in a shared sticky folder is
    never followed, and what it points at is never overwritten.
    """

    def __init__(self, path: str) -> None:
        link = paths.foreign_link(path)
        if link:
            raise CliError(f"{link[0]} is a symbolic link of uid {link[1]}; chkpt does not export through it")
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        owner = os.fstat(self.fd).st_uid
        if not paths.trusted_owner(owner):
            self.close()
            raise CliError(f"{path} belongs to uid {owner}; export into a folder of yours")

    @contextlib.contextmanager
    def create(self, name: str, written: list[str], text: bool = False) -> Iterator[IO[Any]]:
        """A file object to write the file `name` with; once it is written, the file takes that
        name and its path is added to `written`. Refused when another user's file, or a folder,
        has the name."""
        path = os.path.join(self.path, name)
        try:
            there = os.lstat(name, dir_fd=self.fd)
        except FileNotFoundError:
            there = None
        if there is not None and stat.S_ISDIR(there.st_mode):
            raise Refused(f"{path} is a folder; not replaced")
        if there is not None and there.st_uid != os.getuid():
            raise Refused(f"{path} exists and belongs to uid {there.st_uid}; not replaced")
        temporary = f".{name}.{os.urandom(4).hex()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                     dir_fd=self.fd)
        try:
            with open(fd, "w" if text else "wb", encoding="utf-8" if text else None,
                      newline="" if text else None) as handle:
                yield handle
            os.rename(temporary, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            try:
                os.unlink(temporary, dir_fd=self.fd)
            except OSError:
                pass
            raise
        written.append(path)

    def remove(self, path: str) -> None:
        """Delete a file `create` wrote."""
        try:
            os.unlink(os.path.basename(path), dir_fd=self.fd)
        except OSError:
            pass

    def close(self) -> None:
        os.close(self.fd)


def export_value(value: Any, stem: str, folder: Folder | str) -> list[str]:
    """Write `value` in formats other tools read, into `folder` (a Folder, or a directory's
    path); returns the files written.

    Arrays: .npy. pandas DataFrames/Series: .parquet when pyarrow is installed and can hold
    the frame, else .pkl (exact) plus .csv (for any tool). polars frames and pyarrow tables:
    .parquet. Plain JSON data: .json. Else .pkl. A value that cannot be written raises, and
    leaves none of its files behind (not even an empty one).
    """
    if isinstance(folder, str):
        opened = Folder(folder)
        try:
            return export_value(value, stem, opened)
        finally:
            opened.close()
    written: list[str] = []
    try:
        _export(value, stem, folder, written)
    except BaseException:
        for path in written:
            folder.remove(path)
        raise
    return written


def _export(value: Any, stem: str, folder: Folder, written: list[str]) -> None:
    """Write `value` as `stem` + a suffix in `folder`, each file written added to `written`."""
    module = type(value).__module__.split(".")[0]
    if module == "numpy":
        import numpy

        if type(value) is numpy.ndarray or isinstance(value, numpy.generic):
            with folder.create(stem + ".npy", written) as handle:
                numpy.save(handle, value, allow_pickle=value.dtype.hasobject)
            return
    if module == "pandas" and hasattr(value, "to_csv"):
        _export_pandas(value, stem, folder, written)
        return
    if module == "polars" and hasattr(value, "write_parquet"):
        with folder.create(stem + ".parquet", written) as handle:
            value.write_parquet(handle)
        return
    if module == "polars" and hasattr(value, "to_frame"):  # a polars Series
        with folder.create(stem + ".parquet", written) as handle:
            value.to_frame().write_parquet(handle)
        return
    if module == "pyarrow" and type(value).__name__ in ("Table", "RecordBatch"):
        import pyarrow
        import pyarrow.parquet

        table = value if isinstance(value, pyarrow.Table) else pyarrow.Table.from_batches([value])
        with folder.create(stem + ".parquet", written) as handle:
            pyarrow.parquet.write_table(table, handle)
        return
    if _is_json_data(value):
        with folder.create(stem + ".json", written, text=True) as handle:
            json.dump(value, handle, indent=1)
        return
    _pickle(value, stem, folder, written)


def parquet_available() -> bool:
    """Whether pyarrow can be imported here (frames then export as Parquet)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _export_pandas(frame: Any, stem: str, folder: Folder, written: list[str]) -> None:
    if parquet_available():
        table = frame if hasattr(frame, "columns") else frame.to_frame(
            name=stem if frame.name is None else str(frame.name))
        try:
            with folder.create(stem + ".parquet", written) as handle:
                table.to_parquet(handle)
            return
        except Refused:
            raise
        except Exception as exc:  # pyarrow's errors vary by cause; the fallback covers all
            warn(f"{stem}: Parquet cannot hold it ({fmt.shorten(str(exc), 100)}); "
                 "writing pickle and CSV instead")
    _pickle(frame, stem, folder, written)
    with folder.create(stem + ".csv", written, text=True) as handle:
        frame.to_csv(handle)


def _pickle(value: Any, stem: str, folder: Folder, written: list[str]) -> None:
    import pickle

    with folder.create(stem + ".pkl", written) as handle:
        pickle.dump(value, handle, protocol=5)


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
    folder = Folder(api.nonblank(args.to, "--to", "out/ or ."))
    try:
        return _export_all(args, checkpoint, variables, folder)
    finally:
        folder.close()


def _export_all(args: argparse.Namespace, checkpoint: api.Checkpoint, variables: list[api.Variable],
                folder: Folder) -> int:
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
                files = export_value(variable.load(), stem, folder)
            except (api.LoadError, StoreError, Refused) as exc:
                warn(str(exc))
                failed += 1
                continue
            except Exception as exc:  # whatever the value's own pickling or writer raises
                hint = " (its class is defined in the script)" if variable.type.startswith("__main__.") else ""
                warn(f"cannot export {variable.name} ({variable.type}){hint}: "
                     f"{type(exc).__name__}: {fmt.shorten(str(exc), 160)}")
                failed += 1
                continue
            written.append({"name": variable.name, "files": files})
            for path in [] if args.json else files:
                size = fmt.human_size(os.path.getsize(path))
                progress.echo(fmt.printable(f"{variable.name} → {path}") + f" ({size})")
    if args.json:
        print(json.dumps({"checkpoint": checkpoint.ref, "exported": written, "failed": failed}, indent=1))
    elif failed and len(variables) > 1:
        warn(f"{failed} of {len(variables)} values could not be exported; the others were")
    return 1 if failed else 0


def shell_namespace(checkpoint: api.Checkpoint) -> tuple[dict[str, Any], str]:
    """Every variable of `checkpoint` loaded, and the banner that says how to reach each.

    Names that are identifiers are bound directly; every name (also `results['train']` or
    `step:batch`) is a key of the dict `ckpt` (`chkpt_vars` if the script had a `ckpt`).
    """
    values: dict[str, Any] = {}
    parts: dict[str, Any] = {}  # every value loaded once: one object of the program is one here
    failed: list[str] = []
    variables = checkpoint.variables
    with fmt.Progress("loading", len(variables), sum(v.size for v in variables)) as progress:
        for variable in variables:
            progress.step(variable.name, variable.size)
            try:
                values[variable.name] = checkpoint.part(variable.name, parts)
            except Untrusted:
                raise  # another user could have written it: no shell on this checkpoint at all
            except (api.LoadError, StoreError) as exc:
                failed.append(f"{variable.name} ({exc})")
    for alias, target in checkpoint.aliases.items():
        try:
            values[alias] = checkpoint.part(target, parts)  # a saved value, or a path inside one
        except Untrusted:
            raise
        except (api.LoadError, LookupError, StoreError):
            continue
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
    return namespace, "\n".join(fmt.printable(line) for line in lines)


def cmd_shell(args: argparse.Namespace) -> int:
    run, selector = api.resolve(args.ref)
    namespace, banner = shell_namespace(run.checkpoint(selector))
    try:
        import IPython
    except ImportError:
        # chosen here, started outside the handler: exceptions typed at the plain prompt
        # must not be chained to this ImportError
        IPython = None
    if IPython is not None:
        print(banner, file=sys.stderr)  # where the plain prompt writes it: stdout is the session's
        IPython.start_ipython(argv=[], user_ns=namespace, display_banner=False)
        return 0
    import code

    if sys.stdin.isatty():
        try:
            import readline
            import rlcompleter
        except ImportError:
            readline = None
        if readline is not None:
            readline.set_completer(rlcompleter.Completer(namespace).complete)
            readline.parse_and_bind("tab: complete")
    code.interact(banner=banner, local=namespace, exitmsg="")
    return 0
