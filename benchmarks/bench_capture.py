"""Capture and serialization throughput, side by side with pickle and numpy.save.

Builds about 1 GiB of mixed numpy arrays and pandas DataFrames as a namespace, then times:

- capture: `capture.collect` of that namespace (finding and measuring the values);
- chkpt: capture + `serialize.dumps` of every value, in memory, and then written to files;
- pickle: `pickle.dumps(value, protocol=5)` of every value (buffers in band), and `pickle.dump`
  to files;
- numpy.save: every array and every DataFrame column's array, to memory and to files;

and prints each as GB/s and as the ratio chkpt / other. A second part times a capture of a
large namespace (10k globals, mostly numbers, strings and nested dicts of small values) that
does not change between captures (a capture must cost next to nothing then), and a third of
namespaces of small dicts where many hold data or a long string.

    .venv/3.12/bin/python benchmarks/bench_capture.py [--gib 1.0] [--repeat 3]

`--against TREE` instead compares this checkout's capture and pickling with those of another
source tree (say a `git worktree` of main) on the same shapes, both loaded in this one process
and taken in turns, so that both see the same machine; each figure is the least CPU time
(`time.process_time`, the garbage collector off) of `--repeat` rounds, which a busy machine
disturbs least:

    CHKPT=0 .venv/3.12/bin/python benchmarks/bench_capture.py --against /tmp/main-tree --repeat 25

Files go to a temporary directory on the disk of $TMPDIR and are not fsynced (the page cache
absorbs them: this measures the serialization path, not the disk).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import io
import os
import pickle
import statistics
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from chkpt import capture, config, salience, serialize


def make_data(gib: float) -> dict[str, object]:
    """About `gib` GiB: half big numeric arrays, half DataFrames of mixed dtypes."""
    rng = np.random.default_rng(0)
    total = int(gib * 2**30)
    namespace: dict[str, object] = {}
    per_array = total // 2 // 8
    for i in range(8):
        n = per_array // 8
        namespace[f"array{i}"] = rng.random(n) if i % 2 else np.arange(n, dtype=np.int64)
    namespace["fortran"] = np.asfortranarray(rng.random((1000, 500)))
    rows = total // 2 // 8 // 40  # 8 frames of ~40 bytes a row
    for i in range(8):
        namespace[f"frame{i}"] = pd.DataFrame({
            "x": rng.random(rows), "y": rng.random(rows), "n": np.arange(rows, dtype=np.int64),
            "k": pd.Categorical(rng.integers(0, 50, rows)), "when": pd.date_range("2024", periods=rows, freq="s"),
        })
    return namespace


def timed(function, repeat: int) -> float:
    """Median seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def arrays_of(namespace: dict[str, object]) -> list[np.ndarray]:
    out = []
    for value in namespace.values():
        if isinstance(value, pd.DataFrame):
            out.extend(value[column].to_numpy() for column in value.columns)
        else:
            out.append(value)
    return out


def throughput(gib: float, repeat: int) -> None:
    """chkpt vs pickle vs numpy.save on about `gib` GiB."""
    namespace = make_data(gib)
    rules = salience.Rules(config.Config())
    roots = capture.named_roots(namespace, [], {})
    arrays = arrays_of(namespace)
    nbytes = sum(salience.data_size(v) for v in namespace.values())
    print(f"data: {nbytes / 2**30:.2f} GiB in {len(namespace)} values "
          f"(numpy.save writes {sum(a.nbytes for a in arrays) / 2**30:.2f} GiB of column arrays)")

    def chkpt_memory() -> list[serialize.Serialized]:
        return [serialize.dumps(item.obj) for item in capture.collect(roots, rules).items]

    def pickle_memory() -> list[bytes]:
        return [pickle.dumps(value, protocol=5) for value in namespace.values()]

    def numpy_memory() -> None:
        for array in arrays:
            np.save(io.BytesIO(), array, allow_pickle=False)

    with tempfile.TemporaryDirectory() as directory:
        def target(name: str):
            return open(os.path.join(directory, name), "wb")

        def chkpt_files() -> None:
            for item in capture.collect(roots, rules).items:
                data = serialize.dumps(item.obj)
                with target(item.name) as handle:
                    handle.write(data.stream)
                    for buffer in data.buffers:
                        handle.write(buffer)

        def pickle_files() -> None:
            for name, value in namespace.items():
                with target(name) as handle:
                    pickle.dump(value, handle, protocol=5)

        def numpy_files() -> None:
            for index, array in enumerate(arrays):
                with target(f"a{index}") as handle:
                    np.save(handle, array, allow_pickle=False)

        results = {
            "capture only": timed(lambda: capture.collect(roots, rules), repeat),
            "chkpt capture+dumps (memory)": timed(chkpt_memory, repeat),
            "pickle.dumps p5 (memory)": timed(pickle_memory, repeat),
            "numpy.save (memory)": timed(numpy_memory, repeat),
            "chkpt capture+dumps (files)": timed(chkpt_files, repeat),
            "pickle.dump p5 (files)": timed(pickle_files, repeat),
            "numpy.save (files)": timed(numpy_files, repeat),
        }
    print(f"\n{'operation':34} {'seconds':>9} {'GB/s':>8}")
    for name, seconds in results.items():
        print(f"{name:34} {seconds:9.3f} {nbytes / seconds / 1e9:8.2f}")
    for where in ("memory", "files"):
        ours = results[f"chkpt capture+dumps ({where})"]
        pickled = results["pickle.dumps p5 (memory)" if where == "memory" else "pickle.dump p5 (files)"]
        saved = results[f"numpy.save ({where})"]
        print(f"throughput ratio, {where}: chkpt/pickle = {pickled / ours:.2f}x, "
              f"chkpt/numpy.save = {saved / ours:.2f}x")


def unchanged_namespace(repeat: int) -> None:
    """A capture of 10k globals that did not change since the last one."""
    rules = salience.Rules(config.Config())
    print("\nunchanged large namespace (10k globals):")
    big = {}
    for i in range(10_000):
        kind = i % 10
        if kind < 5:
            big[f"number{i}"] = i * 1.5
        elif kind < 7:
            big[f"text{i}"] = f"value number {i}"
        elif kind < 9:
            big[f"settings{i}"] = {"depth": i, "opts": {"x": [1, 2, 3], "y": "z"}, "tags": ["a", "b"]}
        else:
            big[f"row{i}"] = [i, i * 2.0, "x"]
    for i in range(20):
        big[f"data{i}"] = np.random.default_rng(i).random(1000)
    # one more global each: a dict holding data, a settings dict holding a long string
    with_data = {**big, "results": {"train": np.ones(500), "meta": {"n": 500}}}
    with_text = {**big, "query": {"sql": "SELECT * FROM events WHERE " + "x = 1 AND " * 300}}
    cases = ((big, False, "periodic/exit"), (with_data, False, "periodic/exit, one more dict of data"),
             (with_text, False, "periodic/exit, one more dict with a long string"),
             (big, True, "crash/resume point: small values kept"))
    for namespace, keep_small, what in cases:
        def capture_all(namespace: dict[str, object] = namespace, keep_small: bool = keep_small) -> capture.Capture:
            return capture.collect(capture.named_roots(namespace, [], {}), rules, keep_small=keep_small)

        seconds = timed(capture_all, max(repeat, 20))
        print(f"capture of {len(namespace)} globals, {what}: {seconds * 1000:.2f} ms (median), "
              f"{len(capture_all().items)} values saved")


def nest_shapes(repeat: int) -> None:
    """Periodic captures of 3,000 small dicts where many hold data or a long string."""
    rules = salience.Rules(config.Config())
    print("\nnamespaces of small dicts that a bound over all of them cannot rule out:")
    settings = {f"s{i}": {"depth": i, "tags": ["a"]} for i in range(3000)}
    one_in_ten = {}
    for i in range(3000):
        one_in_ten[f"s{i}"] = settings[f"s{i}"]
        if i % 10 == 0:
            one_in_ten[f"r{i}"] = {"w": np.ones(3)}
    cases = (("3,000 dicts each holding a small array", {f"rec{i}": {"w": np.ones(3), "n": i} for i in range(3000)}),
             ("3,000 settings dicts, then 300 holding an array",
              {**settings, **{f"rec{i}": {"w": np.ones(3), "n": i} for i in range(300)}}),
             ("3,000 settings dicts, one in ten followed by one holding an array", one_in_ten),
             ("3,000 dicts each holding a 900-character string", {f"t{i}": {"text": "x" * 900} for i in range(3000)}))
    for what, namespace in cases:
        def capture_all(namespace: dict[str, object] = namespace) -> capture.Capture:
            return capture.collect(capture.named_roots(namespace, [], {}), rules)

        seconds = timed(capture_all, max(repeat, 15))
        print(f"{what}: {seconds * 1000:.2f} ms (median), {len(capture_all().items)} values saved")


class _Record:  # an object of the "script's" class, holding an array
    def __init__(self, i: int) -> None:
        self.weights = np.full(300, float(i))
        self.tag = f"record {i}"


def compared_shapes() -> list[tuple[str, dict[str, object], bool]]:
    """(what, namespace, whether small values are kept) for `compare`."""
    big: dict[str, object] = {}
    for i in range(10_000):
        kind = i % 10
        big[f"g{i}"] = (i * 1.5 if kind < 5 else f"value number {i}" if kind < 7 else [i, i * 2.0, "x"]
                        if kind == 9 else {"depth": i, "opts": {"x": [1, 2, 3], "y": "z"}, "tags": ["a", "b"]})
    big.update({f"data{i}": np.random.default_rng(i).random(1000) for i in range(20)})
    base = np.arange(1_000_000.0)
    return [("10k globals, periodic", big, False), ("10k globals, crash (small values kept)", big, True),
            ("3,000 dicts each holding a small array", {f"r{i}": {"w": np.ones(3), "n": i} for i in range(3000)},
             False),
            ("3,000 dicts each holding a 900-character string", {f"t{i}": {"text": "x" * 900} for i in range(3000)},
             False),
            ("1,000 objects of the script's class with an array", {f"p{i}": _Record(i) for i in range(1000)}, False),
            ("an array and 500 views of it", {"base": base, **{f"v{i}": base[i * 100:i * 100 + 2100]
                                                               for i in range(500)}}, False),
            ("8 frames of 100k rows", {f"f{i}": pd.DataFrame({"x": np.arange(100_000.0), "k": ["a", "b"] * 50_000})
                                       for i in range(8)}, False)]


def _tree_modules(tree: str) -> dict[str, object]:
    """chkpt's capture, config, salience and serialize as found in source tree `tree`."""
    for name in [name for name in sys.modules if name == "chkpt" or name.startswith("chkpt.")]:
        del sys.modules[name]
    sys.path.insert(0, os.path.join(tree, "src"))
    try:
        modules = {name: importlib.import_module(f"chkpt.{name}") for name in ("capture", "config", "salience",
                                                                               "serialize")}
    finally:
        sys.path.pop(0)
    return modules


def compare(tree: str, repeat: int) -> None:
    """Capture, and capture + pickling, of `compared_shapes` by the code of `tree` and of this
    checkout, in turns; least CPU time of `repeat` rounds each."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"other": _tree_modules(tree), "this": _tree_modules(here)}
    print(f"least CPU time of {repeat} rounds, ms: {tree} (other) and {here} (this)")
    print(f"{'shape':52} {'capture other':>13} {'this':>7} {'ratio':>6}   {'+pickling other':>15} {'this':>7} "
          f"{'ratio':>6}")
    for what, namespace, keep_small in compared_shapes():
        best: dict[tuple[str, bool], float] = {}
        for round_ in range(repeat):
            for label in ("other", "this") if round_ % 2 else ("this", "other"):
                modules = trees[label]
                capture_, serialize_ = modules["capture"], modules["serialize"]
                rules = modules["salience"].Rules(modules["config"].Config())  # type: ignore[attr-defined]
                how = [rules.pickling] if hasattr(rules, "pickling") else []
                for pickling in (False, True):
                    gc.collect()
                    gc.disable()
                    started = time.process_time()
                    captured = capture_.collect(capture_.named_roots(namespace, [], {}), rules,  # type: ignore[attr-defined]
                                                keep_small=keep_small)
                    if pickling:
                        kept = serialize_.Kept(512 << 20)  # type: ignore[attr-defined]
                        for item in captured.items:
                            serialize_.dumps(item.obj, kept, *how)  # type: ignore[attr-defined]
                    spent = time.process_time() - started
                    gc.enable()
                    best[label, pickling] = min(best.get((label, pickling), spent), spent)
        figures = [best[label, pickling] * 1000 for pickling in (False, True) for label in ("other", "this")]
        print(f"{what:52} {figures[0]:13.2f} {figures[1]:7.2f} {figures[1] / figures[0]:6.2f}   "
              f"{figures[2]:15.2f} {figures[3]:7.2f} {figures[3] / figures[2]:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--against", metavar="TREE", help="compare with the chkpt source tree TREE instead")
    args = parser.parse_args()
    if args.against:
        compare(args.against, args.repeat)
        return
    throughput(args.gib, args.repeat)
    unchanged_namespace(args.repeat)
    nest_shapes(args.repeat)


if __name__ == "__main__":
    main()
