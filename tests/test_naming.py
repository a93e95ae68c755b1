"""The grammar of saved variable names: one spelling per path, and paths below a saved value."""

from __future__ import annotations

import pytest

from chkpt import naming


@pytest.mark.parametrize(("spelled", "canonical"), [
    ('results["train"]', "results['train']"),
    ("frames[ 3 ]", "frames[3]"),
    ("model.weights", "model.weights"),
    ("step:batch", "step:batch"),
    ("mylib.trainer.fit:w", "mylib.trainer.fit:w"),
    ('mylib.trainer.fit:res["a"] .x', "mylib.trainer.fit:res['a'].x"),
    ("mylib.main.<locals>.step#2:batch", "mylib.main.<locals>.step#2:batch"),
    ("results['a:b']", "results['a:b']"),
    ('d["a"]["b"].x', "d['a']['b'].x"),
    ("grid[(1, 2)]", "grid[(1, 2)]"),
    ("grid[(1,2)]", "grid[(1, 2)]"),
    ("flags[True]", "flags[True]"),
    ("  df  ", "df"),
    ("not a path!", "not a path!"),
])
def test_every_spelling_of_a_path_has_one_canonical_form(spelled, canonical):
    assert naming.canonical(spelled) == canonical


@pytest.mark.parametrize("key", ["train", 3, 2.5, True, None, b"k", (1, "a"), ((1, 2), 3)])
def test_dict_keys_with_a_literal_round_trip_through_a_path(key):
    name = naming.item("results", naming.key_text(key))
    assert naming.parse(name) == ("results", [("item", key)])


@pytest.mark.parametrize("key", [object(), frozenset({1}), (1, object())])
def test_keys_without_a_literal_have_no_path(key):
    assert naming.key_text(key) is None


def test_paths_parse_into_steps_and_format_back():
    assert naming.parse("model.layers[2]['w']") == ("model", [("attr", "layers"), ("item", 2), ("item", "w")])
    assert naming.format_path("model", [("attr", "layers"), ("item", 2)]) == "model.layers[2]"
    assert naming.parse("x[f(1)]") is None and naming.parse("[3]") is None


def test_the_root_of_a_nested_path_and_the_prefixes_above_it():
    assert naming.root_of("model.weights") == "model" and naming.root_of("results['a']") == "results"
    assert naming.root_of("df") is None and naming.root_of("step:batch") is None
    assert naming.prefixes("a['b'].c") == [("a['b']", [("attr", "c")]), ("a", [("item", "b"), ("attr", "c")])]


def test_follow_walks_attributes_and_items():
    class Model:
        def __init__(self) -> None:
            self.layers = [{"w": 42}]

    assert naming.follow(Model(), [("attr", "layers"), ("item", 0), ("item", "w")]) == 42


def test_clashing_locals_are_qualified_by_their_function():
    assert naming.qualified_local("step", 1, "batch") == "step:batch"
    assert naming.qualified_local("step", 2, "batch") == "step#2:batch"


def test_locals_of_the_users_modules_are_qualified_by_module_and_function():
    name = naming.qualified_local("mylib.trainer.Trainer.fit", 1, "model")
    assert name == "mylib.trainer.Trainer.fit:model"
    # the qualifier's dots are part of the root, not attributes
    assert naming.parse(naming.attribute(name, "weights")) == (name, [("attr", "weights")])
    assert naming.root_of(name) is None and naming.root_of(name + "['a']") == name
    assert naming.prefixes(name + ".w[0]") == [(name + ".w", [("item", 0)]), (name, [("attr", "w"), ("item", 0)])]
