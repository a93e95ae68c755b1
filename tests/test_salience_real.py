"""What real libraries' objects are: display state, code, or data saved whole (in-process)."""

from __future__ import annotations

import numpy as np
import pytest

from chkpt import capture, config, salience


def captured(namespace: dict, *, keep_small: bool = False, **settings) -> capture.Capture:
    cfg = config.Config()
    for key, value in settings.items():
        setattr(cfg, key, value)
    return capture.collect(capture.named_roots(namespace, [], {}), salience.Rules(cfg), keep_small=keep_small)


def names(result: capture.Capture) -> list[str]:
    return sorted(item.name for item in result.items)


class Report:  # a user object holding a figure next to its data
    def __init__(self, figure, axes, values):
        self.figure = figure
        self.axes = axes
        self.values = values


@pytest.mark.parametrize("keep_small", [False, True])
def test_matplotlib_figures_and_axes_are_listed_as_skipped_never_saved_nor_walked(keep_small):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    values = np.arange(5000.0)
    ax.plot(values)
    lines = ax.get_lines()
    result = captured({"fig": fig, "ax": ax, "line": lines[0], "report": Report(fig, ax, values),
                       "values": values}, keep_small=keep_small)
    saved = names(result)
    assert saved == ["report", "report.values"] and result.aliases == {"values": "report.values"}
    assert not any(n.startswith(("fig", "ax", "line")) or "_children" in n for n in saved)
    skipped = {s["name"]: s["reason"] for s in result.skipped}
    assert skipped["fig"] == "a matplotlib.Figure is display state, not data (skip_modules)"
    assert skipped["ax"] == "a matplotlib.Axes is display state, not data (skip_modules)"
    assert "line" in skipped and "report.figure" in skipped and "report.axes" in skipped
    plt.close(fig)


def test_skip_modules_is_the_users_to_change():
    values = np.arange(5000.0)
    assert names(captured({"values": values})) == ["values"]
    result = captured({"values": values}, skip_modules=["numpy"])
    assert names(result) == [] and result.skipped == [
        {"name": "values", "reason": "a numpy.ndarray is display state, not data (skip_modules)"}]


def test_compiled_functions_are_code_and_their_attributes_are_never_saved():
    from pandas._libs.lib import is_scalar  # a Cython function, as in scikit-learn and scipy

    class Holder:
        def __init__(self):
            self.check = is_scalar
            self.method = "".join
            self.values = np.arange(3000.0)

    for keep_small in (False, True):
        result = captured({"is_scalar": is_scalar, "holder": Holder(), "descriptor": str.join},
                          keep_small=keep_small)
        assert not any(n.startswith(("is_scalar", "descriptor")) or "check" in n or "method" in n
                       for n in names(result)), names(result)
        assert "holder.values" in names(result) and result.skipped == []


def test_a_library_object_is_saved_whole_not_walked_into():
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.random((2000, 300))
    scaler = StandardScaler().fit(X)
    model = LinearRegression().fit(X, rng.random(2000))
    result = captured({"scaler": scaler, "model": model, "pair": {"model": model, "X": X}})
    # fitted attributes (mean_, coef_, private ones) stay inside their estimator's own pickle
    assert names(result) == ["model", "pair", "pair['X']", "scaler"]
    assert result.aliases == {"pair['model']": "model"}
    kinds = {item.name: item.type for item in result.items}
    assert kinds["scaler"] == "sklearn.preprocessing.StandardScaler"
    assert kinds["model"] == "sklearn.linear_model.LinearRegression"  # where they are imported from


def test_dunder_attributes_of_user_objects_are_not_data():
    class Documented:
        def __init__(self):
            self.__doc__ = "x" * 5000  # an instance docstring: Python's, not the program's data
            self.__wrapped__ = np.arange(1000.0)
            self.data = np.arange(2000.0)

    result = captured({"doc": Documented()})
    assert names(result) == ["doc", "doc.data"]


def test_the_fast_path_drops_only_values_that_would_be_dropped_anyway():
    settings = {f"s{i}": {"depth": i, "opts": {"x": [1, 2, 3], "y": "z"}} for i in range(3000)}
    namespace = {
        **settings,
        **{f"n{i}": i * 0.5 for i in range(3000)},
        "long_text": "t" * 4000,                          # a large string on its own
        "nested_text": {"a": "u" * 4000},                  # a large string in a small dict
        "floats": {f"k{i}": float(i) for i in range(40)},  # many small items: over 1 KiB
        "with_array": {"cfg": {"w": np.arange(500.0)}},    # data inside a nest
    }
    result = captured(namespace)
    assert names(result) == ["floats", "long_text", "nested_text", "with_array",
                             "with_array['cfg']['w']"]
    tracked = capture.collect(capture.named_roots(settings, [], {"small": {"a": 1}}),
                              salience.Rules(config.Config()))
    assert names(tracked) == ["small"]  # tracked values are saved whatever their size
    assert len(captured(namespace, keep_small=True).items) == len(namespace) + 1  # and the array


def test_small_values_kept_by_a_crash_are_described_with_their_length():
    result = captured({"name": "abc", "count": 3, "blob": b"xy", "none": None, "row": [1, 2]},
                      keep_small=True)
    described = {item.name: (item.type, item.info) for item in result.items}
    assert described == {"name": ("str", {"shape": [3]}), "count": ("int", {}),
                         "blob": ("bytes", {"shape": [2]}), "none": ("NoneType", {}),
                         "row": ("list", {"shape": [2]})}
