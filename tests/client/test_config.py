"""``LoadtestConfig``: local targets only, positive bounds, the default profile."""

from __future__ import annotations

import pytest

from greenflow.client.config import LoadtestConfig


def test_config_refuses_non_local_targets_and_bad_numbers() -> None:
    for url in ("http://example.com:8000", "http://10.0.0.5:8000", "ftp://127.0.0.1"):
        with pytest.raises(ValueError, match="loadtest only targets 127.0.0.1"):
            LoadtestConfig(url=url)
    assert LoadtestConfig(url="http://localhost:9000/").base_url == "http://localhost:9000"
    for bad in ({"max_requests": 0}, {"max_in_flight": 0}, {"request_timeout_s": 0.0},
                {"max_duration_s": -1.0}, {"k": 0}):  # fmt: skip
        with pytest.raises(ValueError):
            LoadtestConfig(**bad)
    config = LoadtestConfig()
    assert config.url == "http://127.0.0.1:8000" and config.max_requests == 2000
    assert config.profile.base_rate == 10.0 and config.profile.duration_s == 30.0
    assert config.profile.phase(15.0) == "spike" and config.profile.spike_factor == 3.0
    assert config.wall_limit_s == pytest.approx(30.0 + 10.0 + 5.0)
