"""``Registry``: ordered names, typed entries, a clear error for an unknown name."""

from __future__ import annotations

import pytest

from greenflow.errors import ConfigError, UnknownModelError
from greenflow.platform.registry import Registry


def test_register_get_and_names_in_order() -> None:
    registry: Registry[int] = Registry("number")
    assert registry.register("two", 2) == 2
    registry.register("one", 1)
    assert registry.get("one") == 1 and registry["two"] == 2
    assert registry.names() == ("two", "one") and list(registry) == ["two", "one"]
    assert registry.items() == [("two", 2), ("one", 1)]
    assert "one" in registry and "three" not in registry and len(registry) == 2


def test_unknown_name_lists_the_known_ones() -> None:
    registry: Registry[int] = Registry("dataset")
    registry.register("a", 1)
    registry.register("b", 2)
    with pytest.raises(ConfigError) as err:
        registry.get("c")
    assert str(err.value) == "unknown dataset 'c'; expected one of ('a', 'b')"


def test_error_type_and_duplicates() -> None:
    models: Registry[str] = Registry("model", error=UnknownModelError)
    models.register("dssm", "x")
    with pytest.raises(KeyError):  # UnknownModelError is a KeyError too
        models["gpt"]
    with pytest.raises(ValueError, match="already registered"):
        models.register("dssm", "y")
