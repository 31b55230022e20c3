"""The load-test table (the online Table 5)."""

from __future__ import annotations

import pytest

from greenflow.client.table import format_loadtest_table
from tests.client.fakes import sample_doc


@pytest.mark.usefixtures("no_ray")
def test_table_compares_policies_in_fixed_width() -> None:
    docs = {
        "greenflow": sample_doc(pfec={"energy_j": 12.0, "carbon_g": 0.002}),
        "equal": sample_doc("equal"),
    }
    table = format_loadtest_table(docs)
    lines = table.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1
    assert "clicks/req" in lines[0] and "over-budget" in lines[0] and "p99 ms" in lines[0]
    assert lines[2].startswith("greenflow") and "33.3%" in lines[2] and "12" in lines[2]
    assert lines[3].startswith("equal") and lines[3].rstrip().endswith("-")
