"""Registry lookups: names, misspellings, and the old names of renamed entries."""

import pytest

from dlfund.registry import Registry


def _registry() -> Registry[int]:
    registry: Registry[int] = Registry("experiment")
    registry.register("activations", 1)
    registry.register("overfitting", 2)
    registry.alias("relu_vs_sigmoid", "activations")
    return registry


def test_an_alias_finds_the_renamed_entry_but_is_not_listed():
    registry = _registry()
    assert registry.get("relu_vs_sigmoid") == 1
    assert registry.get("ReLU-vs-Sigmoid") == 1  # the same spelling rules as a name
    assert registry.canonical("relu_vs_sigmoid") == "activations"
    assert registry.canonical("Overfitting") == "overfitting"
    assert "relu_vs_sigmoid" in registry
    assert registry.names() == ["activations", "overfitting"]  # one entry, run once by whoever iterates
    assert registry.aliases() == {"relu_vs_sigmoid": "activations"}


def test_a_misspelt_alias_is_suggested_and_unknown_names_list_the_registered_ones():
    with pytest.raises(
        ValueError, match=r"Did you mean 'relu_vs_sigmoid'\?.*Known experiments: activations, overfitting"
    ):
        _registry().get("relu_vs_sigmoi")


def test_an_alias_must_name_a_registered_entry_and_be_new():
    registry = _registry()
    with pytest.raises(ValueError, match="'dropout' is not registered"):
        registry.alias("old", "dropout")
    with pytest.raises(ValueError, match="'overfitting' is already registered"):
        registry.alias("overfitting", "activations")
    with pytest.raises(ValueError, match="'relu_vs_sigmoid' is already registered"):
        registry.alias("relu_vs_sigmoid", "overfitting")
    # Registering under an old name would shadow nothing and be unreachable: get() resolves the alias first.
    with pytest.raises(ValueError, match="'relu_vs_sigmoid' is an old name kept for 'activations'"):
        registry.register("relu_vs_sigmoid", object())
