"""The registered data sources: names, request defaults, loading, unknown names."""

from __future__ import annotations

from pathlib import Path

import pytest

from greenflow.errors import ConfigError
from greenflow.platform.data.schema import DataError
from greenflow.platform.data.sources import DATA_SOURCES, load_source
from greenflow.platform.data.synthetic import SyntheticConfig

pytestmark = pytest.mark.usefixtures("no_ray")


def test_the_three_sources_in_order_with_their_request_defaults() -> None:
    assert DATA_SOURCES.names() == ("movielens-100k", "ali-ccp", "synthetic")
    movielens = DATA_SOURCES.get("movielens-100k").requests
    assert movielens.requests_per_user == 6 and movielens.horizon == "next:5"
    assert movielens.fractions.eval == pytest.approx(0.2)
    assert DATA_SOURCES.get("ali-ccp").requests.requests_per_user == 4


def test_load_synthetic_returns_tables_provenance_and_truth(tmp_path: Path) -> None:
    config = SyntheticConfig(users=50, items=40, mean_events=8.0, seed=3)
    loaded = load_source("synthetic", tmp_path, synthetic_config=config)
    assert loaded.truth is not None and len(loaded.data.interactions) > 0
    assert loaded.provenance["source"] == "synthetic"
    assert loaded.provenance["synthetic_config"]["users"] == 50


def test_unknown_source_and_missing_paths_are_the_users_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'nope'; expected one of \("):
        load_source("nope", tmp_path)
    with pytest.raises(DataError, match="--path"):
        load_source("ali-ccp", tmp_path)
