"""Values pickle refuses, saved by cloudpickle when it is installed, and loaded equal elsewhere."""

from __future__ import annotations

import sys

import pytest

from chkpt import config, salience, serialize
from conftest import chkpt, last_checkpoint, python

pytest.importorskip("cloudpickle", reason="cloudpickle is a test dependency; not installed for this Python")

REFUSED = """
import numpy as np


def make_scorer():
    weights = np.arange(3000.0)

    def score(x):
        return float(x @ weights[:len(x)])
    return score


class Client:  # a client object holding callbacks: pickle refuses it, cloudpickle saves it
    def __init__(self):
        self.endpoint = "https://example.invalid/v1"
        self.retry = lambda attempt: 2 ** attempt
        self.weights = np.ones(2000)


config = {"lr": 0.1, "schedule": lambda step: 0.1 * 0.9 ** step, "data": np.arange(500.0)}
score = make_scorer()
client = Client()
print("done")
"""

CHECK = """
import numpy as np
import chkpt

config = chkpt.load("config")
assert config["schedule"](2) == 0.1 * 0.9 ** 2 and config["lr"] == 0.1
assert (config["data"] == np.arange(500.0)).all()
score = chkpt.load("score")
assert score(np.ones(3)) == 3.0, score(np.ones(3))
client = chkpt.load("client")
assert client.retry(3) == 8 and client.endpoint == "https://example.invalid/v1"
assert (client.weights == np.ones(2000)).all()
print("equal")
"""


def test_a_lambda_in_a_dict_a_closure_over_an_array_and_a_client_object_are_saved_and_load_equal(env, work):
    checkpoint = last_checkpoint(env, work, "refused.py", REFUSED, "done\n")
    assert checkpoint["skipped"] == []
    assert {"config", "score", "client"} <= {v["name"] for v in checkpoint["variables"]}
    loaded = python(["-c", CHECK], env, work)  # a fresh process, where none of them is defined
    assert (loaded.stdout, loaded.stderr) == ("equal\n", "")


# -- without cloudpickle (pure logic, in-process) ----------------------------------------------

@pytest.fixture
def no_cloudpickle(monkeypatch: pytest.MonkeyPatch) -> None:
    """As where cloudpickle is not installed: importing it fails, and it is looked up again."""
    monkeypatch.setitem(sys.modules, "cloudpickle", None)
    monkeypatch.setattr(salience, "_fallback", [])


def _closure():
    held = [1.5] * 10

    def total():
        return sum(held)
    return total


def test_without_cloudpickle_a_lambda_and_a_closure_are_skipped_saying_how_to_save_them(no_cloudpickle):
    rules = salience.Rules(config.Config())
    assert rules.kind(lambda x: x) == (salience.UNSAVEABLE, f"a lambda cannot be saved: {salience.NO_FALLBACK}")
    kind, reason = rules.kind(_closure())
    assert kind == salience.UNSAVEABLE
    assert reason == f"a closure cannot be saved, nor the data it holds (held: list): {salience.NO_FALLBACK}"
    assert "pip install 'chkpt[cloudpickle]'" in salience.NO_FALLBACK
    with pytest.raises(serialize.REFUSED):  # pickle's own error: the value is skipped with it
        serialize.dumps({"f": lambda x: x})


def test_with_cloudpickle_only_what_pickle_refuses_goes_through_it():
    assert salience.fallback_available()
    rules = salience.Rules(config.Config())
    assert rules.kind(lambda x: x) == (salience.OTHER, None)
    plain = serialize.dumps({"a": [1, 2, 3]})
    assert b"cloudpickle" not in plain.stream  # pickle could: cloudpickle is not used
    refused = serialize.dumps({"f": lambda x: x + 1, "g": _closure()})
    assert b"cloudpickle" in refused.stream
    loaded = serialize.loads(refused.stream, refused.buffers)
    assert loaded["f"](1) == 2 and loaded["g"]() == 15.0


# -- one object, one copy: builtin values reachable by several names ---------------------------

SHARED = """
big = [bytes([i]) * 100_000 for i in range(20)]         # 2 MB of byte strings
holder = [big]
d = {"x": big}
blob = b"z" * 300_000
b1 = [blob, b"a" * 5_000]
b2 = [b1[0]]
l = [b"l" * 200_000, 2, 3]
l2 = [l]
l.append(l2)                                             # a cycle across two names
records = [{"id": i, "name": "r" * 1_500 + str(i)} for i in range(50)]
index = {r["id"]: r for r in records}                   # a record referenced from an index dict
cyc = {"name": "c" * 2_000}
cyc["self"] = cyc
print("done")
"""

SHARED_CHECK = """
import chkpt
from chkpt import api

values, failed = api.checkpoint_at("latest").load_all()
assert not failed, failed
g = values
assert g["holder"][0] is g["big"] and g["d"]["x"] is g["big"], "holder, d, big"
assert g["big"] == [bytes([i]) * 100_000 for i in range(20)]
assert g["b1"][0] is g["b2"][0] and g["b1"][0] == b"z" * 300_000, "b1, b2"
assert g["l"][-1] is g["l2"] and g["l2"][0] is g["l"], "l, l2"
assert g["l"][:3] == [b"l" * 200_000, 2, 3]
assert all(g["index"][i] is g["records"][i] for i in range(50)), "index, records"
assert g["records"][7] == {"id": 7, "name": "r" * 1_500 + "7"}
assert g["cyc"]["self"] is g["cyc"], "cyc"
print("shared")
"""


def test_a_builtin_value_reachable_by_several_names_is_stored_once_and_loads_as_one_object(env, work):
    checkpoint = last_checkpoint(env, work, "shared.py", SHARED, "done\n")
    sizes = {v["name"]: v["size"] for v in checkpoint["variables"]}
    aliases = checkpoint["aliases"]
    assert aliases["holder[0]"] == "big" and aliases["d['x']"] == "big"
    assert sizes["holder"] < 1_000 and sizes["d"] < 1_000  # references to big, not copies of it
    assert aliases["b1[0]"] == aliases["b2[0]"] == "blob" and sizes["b1"] < 6_000 and sizes["b2"] < 1_000
    assert aliases["l2"] == "l[3]"  # inside l's own pickle, which holds the cycle
    assert aliases["index[3]"] == "records[3]"
    # every byte string and record once: 2 MB + 0.3 + 0.2 MB + 50 records, not twice that
    assert sum(sizes.values()) < 2_700_000, sizes
    loaded = python(["-c", SHARED_CHECK], env, work)  # a fresh process
    assert (loaded.stdout, loaded.stderr) == ("shared\n", "")
    single = python(["-c", "import chkpt; l2 = chkpt.load('l2'); print(l2[0][-1] is l2)"], env, work)
    assert (single.stdout, single.stderr) == ("True\n", "")  # by name too, through the value it is in
    session = "print(l2[0] is l, holder[0] is d['x'] is big, index[3] is records[3], b2[0] is blob)\n"
    shell = chkpt(["shell", "latest"], env, work, stdin=session)
    assert shell.returncode == 0 and "True True True True" in shell.stdout, (shell.stdout, shell.stderr)
