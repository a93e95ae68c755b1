"""The pure parts of notebook support, in-process: a run's cells and which checkpoint holds each
one's state, which cell defined a name, the names IPython owns, the notebook's path, the pause
rule, and the manifest fields a kernel writes."""

from __future__ import annotations

import ast

import pytest

from chkpt import records
from chkpt.notebook import cells, kernel
from chkpt.session import within_pause_share


def manifest(index: int, *entries: tuple[int | None, str, str | None]) -> dict:
    return {"index": index, "cells": [{"count": c, "source": s, "state": st} for c, s, st in entries]}


RUN = [
    manifest(1, (1, "import numpy as np", None), (2, "w = np.zeros(3)", "this")),
    manifest(2, (3, "print(w)", "previous"), (4, "w += 1", None), (5, "def f(x):\n    return x", "this")),
    manifest(4, (6, "w = w * 2  # after 3 was thinned", "this")),
]


def test_each_cell_maps_to_the_checkpoint_that_holds_the_state_after_it():
    found = cells.cells_of(RUN)
    assert [(c.count, c.state_index) for c in found] == [(1, None), (2, 1), (3, 1), (4, None), (5, 2), (6, 4)]
    assert cells.state_after(found, 2) == 1
    assert cells.state_after(found, 3) == 1  # it changed nothing: the checkpoint before
    assert cells.state_after(found, 6) == 4


def test_a_cell_whose_state_was_not_captured_is_refused_with_what_is_saved():
    found = cells.cells_of(RUN)
    with pytest.raises(cells.NotSaved, match=r"state after cell \[4\] was not saved.*cells \[2\]-\[3\], \[5\]-\[6\]"):
        cells.state_after(found, 4)
    with pytest.raises(cells.NotSaved, match=r"cell \[9\] did not run"):
        cells.state_after(found, 9)


def test_a_cell_run_twice_counts_by_its_latest_run():
    found = cells.cells_of([manifest(1, (1, "a = 1", "this")), manifest(2, (1, "a = 2", "this"))])
    assert cells.state_after(found, 1) == 2


def test_the_cell_that_defined_a_name_is_the_last_that_bound_it():
    found = cells.cells_of(RUN)
    assert cells.defining_cell(found, "w", str).count == 6
    assert cells.defining_cell(cells.upto(found, 2), "w", str).count == 4
    assert cells.defining_cell(found, "np", str).count == 1
    assert cells.defining_cell(found, "f", str).count == 5
    assert cells.defining_cell(found, "nothing", str) is None


@pytest.mark.parametrize(("source", "names"), [
    ("a = b = 1", {"a", "b"}),
    ("x, (y, *z) = v", {"x", "y", "z"}),
    ("for i in range(3):\n    total += i", {"i", "total"}),
    ("with open(p) as fh:\n    data = fh.read()", {"fh", "data"}),
    ("import os.path as osp, json\nfrom a.b import c as d, e", {"osp", "json", "d", "e"}),
    ("import os.path", {"os"}),
    ("squares = [k * k for k in range(3)]", {"squares"}),  # k is the comprehension's
    ("fn = lambda q: q", {"fn"}),
    ("try:\n    pass\nexcept ValueError as err:\n    pass", {"err"}),
    ("if (n := 3) > 2:\n    big = True", {"n", "big"}),
    ("@decorate\ndef g():\n    inner = 1", {"g"}),
    ("class K:\n    attr = 1", {"K"}),
    ("obj.attr = 1\nd['k'] = 2", set()),
])
def test_the_names_a_statement_binds(source, names):
    assert set().union(*(cells.bound_names(s) for s in ast.parse(source).body)) == names


def test_a_definition_is_its_own_statement_not_the_rest_of_its_cell():
    cell = cells.Cell(3, "x = load()\ndef f():\n    return 1\ny = f()\nclass K:\n    pass\n"
                         "Point = namedtuple('Point', 'x y')\nfor i in range(3):\n    g = f", 1)
    statement = cells.definition(cell, "f", str)
    assert isinstance(statement, ast.FunctionDef) and statement.lineno == 2
    assert isinstance(cells.definition(cell, "K", str), ast.ClassDef)
    assert isinstance(cells.definition(cell, "Point", str), ast.Assign)
    assert cells.definition(cell, "g", str) is None  # a loop is not run again to make it


def test_cells_with_magics_are_read_through_the_transform():
    cell = cells.Cell(1, "%matplotlib inline\ndef f():\n    pass", 1)
    assert cells.definition(cell, "f", str) is None  # as typed, it is not Python
    assert cells.definition(cell, "f", lambda s: s.replace("%matplotlib inline", "pass")) is not None


def test_ipythons_own_names_are_not_the_users():
    hidden = {"In": [], "Out": {}, "exit": object(), "get_ipython": print}
    user = {**hidden, "_": 1, "__": 2, "_i": "", "_ii": "", "_i7": "", "_7": 3, "_oh": {}, "_dh": [],
            "x": 1, "_private": 2, "i7": 3, "Out": {"mine": 1}}
    assert sorted(kernel.user_namespace(user, hidden)) == ["Out", "__", "_private", "i7", "x"]
    # (dunders stay: the capture leaves them out itself)


def test_the_notebooks_path_is_what_the_frontend_tells():
    env = {"JPY_SESSION_NAME": "/home/u/proj/analysis.ipynb"}
    assert kernel.notebook_path({}, env, "/tmp") == "/home/u/proj/analysis.ipynb"
    assert kernel.notebook_path({"__vsc_ipynb_file__": "/w/v.ipynb"}, env, "/tmp") == "/w/v.ipynb"
    assert kernel.notebook_path({}, {"JPY_SESSION_NAME": "sub/a.ipynb"}, "/proj") == "/proj/sub/a.ipynb"
    assert kernel.notebook_path({"__session__": ""}, {}, "/proj") is None
    assert kernel.run_name({}, "/proj") == "/proj/<kernel>"


def test_captures_stay_within_five_percent_of_the_time():
    assert within_pause_share(2.0, 0.1)
    assert not within_pause_share(1.9, 0.1)
    assert within_pause_share(float("inf"), 3.0)  # the first capture of a kernel


def test_a_kernels_manifest_fields_are_checked_on_read():
    good = {"index": 1, "run": "r", "trigger": "cell", "time": 1.0, "variables": [],
            "cells": [{"count": 3, "source": "x = 1", "state": "this"}, {"count": None, "source": "", "state": None}],
            "definitions": {"np": {"module": "numpy", "qualname": None}}}
    assert records.decode_manifest(records.encode(good))["cells"][0]["count"] == 3
    for bad, field in [
        ({"cells": [{"count": "3", "source": "x", "state": "this"}]}, "cells"),
        ({"cells": [{"count": 3, "source": "x", "state": "later"}]}, "cells"),
        ({"cells": [{"count": 3, "state": "this"}]}, "cells"),
        ({"definitions": {"np": {"module": 3}}}, "definitions"),
        ({"definitions": ["np"]}, "definitions"),
        ({"trigger": "cells"}, "trigger"),
    ]:
        with pytest.raises(ValueError, match=f"field '{field}'"):
            records.decode_manifest(records.encode({**good, **bad}))
    run = {"id": "r", "script": "/p/a.ipynb", "argv": [], "started": 1.0, "status": "running", "kind": "notebook"}
    assert records.decode_run(records.encode(run))["kind"] == "notebook"
    with pytest.raises(ValueError, match="field 'kind'"):
        records.decode_run(records.encode({**run, "kind": "lab"}))
