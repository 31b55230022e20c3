"""A four-stage cascade (recall → prerank → rank → rerank) end to end in the domain core:
the pool learns each model's stage from the chain space, and calibration scores what the
space's stages pass on. Simulation and evaluation: tests/simulators/test_four_stages.py;
serving: tests/serve_apps/test_four_stages.py."""

from __future__ import annotations

from greenflow.config import Config
from greenflow.platform.energy.pool_calibration import calibration_items
from greenflow.platform.models.pool import load_pool


def test_each_model_trains_in_the_stage_the_space_gives_it(four_stage_run: Config) -> None:
    doc = four_stage_run.run_dir.read_model_pool()
    rows = {m.name: m for m in doc.models}
    assert {n: (m.stage, m.train["stage_index"]) for n, m in rows.items()} == {
        "dssm": ("recall", 0), "youtube_dnn": ("prerank", 1), "din": ("rank", 2),
        "dien": ("rerank", 3),
    }  # fmt: skip
    assert rows["dssm"].train["negatives"] == "corpus"
    # the rerank model learns on what the three stages before it pass on
    assert rows["dien"].train["negatives"].startswith("earlier stages' candidates")
    pool = load_pool(four_stage_run.run_dir)
    assert {n: e.stage for n, e in pool.entries.items()} == {n: m.stage for n, m in rows.items()}
    # calibration: the corpus for recall, then each feeding stage's second-largest scale
    n = pool.features.num_items
    assert calibration_items(four_stage_run.chains, n) == {"recall": n, "prerank": 20,
                                                           "rank": 10, "rerank": 5}  # fmt: skip
