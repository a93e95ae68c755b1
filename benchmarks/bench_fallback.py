"""The fallback for values pickle refuses: cloudpickle beside dill (and pickle), on the same cases.

Each case is dumped and loaded by each library (least of --repeat rounds); a row says whether
it saved the value, whether the loaded value behaves as the original, its size and times.
dill is measured only where it is installed (it is not a dependency of chkpt).

    python benchmarks/bench_fallback.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import pickle
import threading
import time
from typing import Any

import numpy as np


def _scorer() -> Any:
    weights = np.arange(100_000.0)

    def score(x: float) -> float:
        return float((weights * x).sum())
    return score


class Client:
    """A client object holding a callback (pickle refuses the lambda)."""

    def __init__(self) -> None:
        self.endpoint = "https://example.invalid/v1"
        self.retry = lambda attempt: 2 ** attempt
        self.weights = np.ones(1000)


class LockedClient(Client):
    """The same, holding a lock too (state of the running process)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()


CASES: dict[str, tuple[Any, Any]] = {
    "a lambda in a config dict": ({"lr": 0.1, "schedule": lambda step: 0.1 * 0.9 ** step},
                                  lambda v: v["schedule"](2)),
    "a closure over an 800 KB array": (_scorer(), lambda v: v(2.0)),
    "a client object with a callback": (Client(), lambda v: (v.retry(3), float(v.weights.sum()))),
    "a client object with a lock": (LockedClient(), lambda v: v.retry(3)),
    "a generator": ((i for i in range(3)), lambda v: None),
}


def libraries() -> list[tuple[str, Any, Any]]:
    found = [("pickle", pickle.dumps, pickle.loads)]
    for name in ("cloudpickle", "dill"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        found.append((name, module.dumps, pickle.loads if name == "cloudpickle" else module.loads))
    return found


def least(function: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    for case, (value, behaviour) in CASES.items():
        print(case)
        for name, dumps, loads in libraries():
            try:
                data = dumps(value, protocol=5)
            except Exception as exc:  # what each library refuses is the measurement
                print(f"  {name:12s} refused ({type(exc).__name__})")
                continue
            equal = behaviour(loads(data)) == behaviour(value)
            dump = least(lambda dumps=dumps, value=value: dumps(value, protocol=5), args.repeat)
            load = least(lambda loads=loads, data=data: loads(data), args.repeat)
            print(f"  {name:12s} saved, loads {'equal' if equal else 'DIFFERENT'}, {len(data):>8} B, "
                  f"dump {dump * 1000:.3f} ms, load {load * 1000:.3f} ms")


if __name__ == "__main__":
    main()
