"""``JsonDocument``'s rules: extra keys kept, optional keys absent or null, errors say where."""

from __future__ import annotations

import dataclasses

import pytest

from greenflow.errors import InputError
from greenflow.platform.documents import (
    ChainCost,
    LoadtestDoc,
    ModelPoolDoc,
    RewardModelDoc,
    SimulationDoc,
)
from tests.platform.documents import samples

pytestmark = pytest.mark.usefixtures("no_ray")


def test_typed_fields_read_as_attributes_and_the_rest_stays_in_extra() -> None:
    doc = SimulationDoc.from_json(samples.simulation())
    assert doc.chains[1] == ChainCost("dssm@800>youtube_dnn@100>din@10", 45177557.0)
    assert doc.requests == 2792 and doc.reference_flops == 1.75e12
    assert doc.extra["layout"].startswith("one row per request")
    assert "requests" not in doc.extra
    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.requests = 1  # type: ignore[misc]


def test_a_document_built_in_code_writes_the_producers_key_order() -> None:
    doc = SimulationDoc(
        requests=1,
        chains=(ChainCost("a@1", 2.0),),
        rows=1,
        wall_s=0.5,
        requests_per_s=2.0,
        simulation_flops=2.0,
        output="samples",
        num_chains=1,
        extra={"layout": "rows", "config": {}},
    )
    assert list(doc.to_json()) == [
        "requests",
        "chains",
        "num_chains",
        "rows",
        "wall_s",
        "requests_per_s",
        "simulation_flops",
        "output",
        "layout",
        "config",
    ]
    assert doc.to_json()["chains"] == [{"id": "a@1", "flops": 2.0}]


def test_an_optional_key_absent_stays_absent_and_null_stays_null() -> None:
    d = samples.model_pool()
    del d["horizon"], d["baselines"]  # a pool saved by save_pool alone
    doc = ModelPoolDoc.from_json(d)
    assert doc.horizon is None and doc.baselines is None and doc.to_json() == d
    d["horizon"] = None
    assert ModelPoolDoc.from_json(d).to_json() == d


def test_nested_rows_say_where_a_key_is_missing() -> None:
    d = samples.reward_model()
    del d["variants"]["plain"]["field_rce"]["activity"]
    with pytest.raises(InputError, match=r"variants\['plain'\]: field_rce: .*'activity'"):
        RewardModelDoc.from_json(d)
    d = samples.loadtest()
    del d["policies"]["equal"]["windows"][1]["spend"]
    with pytest.raises(InputError, match=r"policies\['equal'\]: windows\[1\]: .*'spend'"):
        LoadtestDoc.from_json(d, where="/runs/x/loadtest.json")


def test_not_an_object_is_an_input_error() -> None:
    with pytest.raises(InputError, match="simulation.json: expected a JSON object, got list"):
        SimulationDoc.from_json([])
    d = samples.simulation()
    d["chains"] = {"a": 1}
    with pytest.raises(InputError, match="chains: expected a JSON list"):
        SimulationDoc.from_json(d)


def test_several_missing_keys_are_all_named() -> None:
    with pytest.raises(InputError, match="missing required keys 'variants', 'overhead_flops"):
        RewardModelDoc.from_json({"horizon": "next:5"})


def test_head_quality_of_a_model_row() -> None:
    doc = ModelPoolDoc.from_json(samples.model_pool())
    assert doc.k == 10 and doc.models[0].head_quality(10) == (0.071, 0.0349)
    assert doc.models[0].head_quality(5) is None
