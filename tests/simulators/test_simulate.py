"""The Ray Data simulation job on a real local Ray cluster."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from greenflow.platform.cascade import reward, run_chain, scoring_model
from greenflow.platform.chains import generate_chains
from greenflow.platform.data.schema import REQUEST_SCHEMA
from greenflow.platform.data.store import load_dataset, load_requests
from greenflow.platform.models.features import make_context, pad_histories, user_feature_table
from greenflow.platform.models.pool import load_pool
from greenflow.platform.simulation import ChainSampling
from greenflow.simulators.simulate import SimulateConfig, run_simulation

pytestmark = pytest.mark.usefixtures("ray_cluster")
SIM = SimulateConfig(actors=2, batch_size=8, num_cpus=0.5)


def read_samples(config) -> pd.DataFrame:
    return pq.read_table(config.run_dir.local_path / "samples").to_pandas().set_index("request_id")


def test_job_writes_samples_equal_to_the_reference_cascade(tiny_run) -> None:
    doc = run_simulation(tiny_run, SIM, log=lambda _: None)
    requests = load_requests(tiny_run.data_dir)
    expected_rows = requests["split"].isin(["reward", "eval"]).sum()
    assert doc.requests == doc.rows == expected_rows and doc.malformed == ()
    assert doc.num_chains == len(doc.chains) == 8
    assert doc.simulation_flops < (doc.reference_flops or 0.0)
    assert (
        json.loads((tiny_run.run_dir.local_path / "simulation.json").read_text())["rows"]
        == expected_rows
    )
    assert not [p for p in tiny_run.run_dir.local_path.iterdir() if p.name.startswith(".samples")]

    samples = read_samples(tiny_run)
    pool = load_pool(tiny_run.run_dir)
    models = {n: scoring_model(m) for n, m in pool.models.items()}
    users = user_feature_table(load_dataset(tiny_run.data_dir).users, pool.features)
    chains = generate_chains(tiny_run.chains)
    checked = requests[requests["split"].isin(["reward", "eval"])].head(12)
    for row in checked.itertuples():
        ctx = make_context(users[[row.user_id]], pad_histories([row.history], 10))
        ref = [reward(run_chain(models, ctx, row.history, c, pool.features.num_items, 5), row.positives)
               for c in chains]  # fmt: skip
        got = samples.loc[row.request_id]
        assert list(got["chain_idx"]) == list(range(len(chains)))
        assert list(got["reward"]) == ref


def test_malformed_request_is_reported_and_rerun_replaces_atomically(tiny_run) -> None:
    config = dataclasses.replace(tiny_run, run_dir=tiny_run.run_dir.local_path.parent / "run_bad")
    shutil.copytree(tiny_run.run_dir.local_path, config.run_dir.local_path)
    path = config.data_dir.local_path / "requests.parquet"
    table = pq.read_table(path).to_pandas()
    bad = table.index[table["split"] == "reward"][0]
    bad_id = int(table.at[bad, "request_id"])
    table.at[bad, "history"] = [1, 9999]  # an item id outside the corpus
    pq.write_table(pa.Table.from_pandas(table, schema=REQUEST_SCHEMA, preserve_index=False), path)

    sparse = dataclasses.replace(SIM, sampling=ChainSampling(fraction=0.5, seed=1))
    doc = run_simulation(config, sparse, log=lambda _: None)
    assert [m["request_id"] for m in doc.malformed or ()] == [bad_id]
    assert "9999" in (doc.malformed or ())[0]["error"]
    samples = read_samples(config)
    assert samples.loc[bad_id, "error"] is not None and len(samples.loc[bad_id, "reward"]) == 0
    good = samples[samples["error"].isna()]
    lengths = good["reward"].map(len)
    assert (lengths[good["split"] == "reward"] == 4).all()  # half of 8 chains
    assert (lengths[good["split"] == "eval"] == 8).all()  # evaluation keeps every chain
    # same seed, same kept chains on a re-run; the output is replaced, not appended
    again = run_simulation(config, sparse, log=lambda _: None)
    assert again.rows == doc.rows == len(read_samples(config))
    np.testing.assert_array_equal(
        np.concatenate(read_samples(config).loc[good.index, "chain_idx"].to_numpy()),
        np.concatenate(good["chain_idx"].to_numpy()),
    )


def test_actor_pool_leaves_room_for_ray_data_tasks() -> None:
    from greenflow.simulators.simulate import RESERVED_CPUS, fit_to_cluster

    # 2 actors x 1 CPU on a 2-CPU machine would starve ListFiles/read/write and hang
    fitted = fit_to_cluster(SimulateConfig(actors=2, num_cpus=1.0), 2.0, log=lambda _: None)
    assert fitted.actors == 2 and fitted.actors * fitted.num_cpus <= 2.0 - RESERVED_CPUS
    roomy = SimulateConfig(actors=2, num_cpus=1.0)
    assert fit_to_cluster(roomy, 8.0, log=lambda _: None) is roomy
    with pytest.raises(ValueError, match="too small"):
        fit_to_cluster(roomy, 1.0, log=lambda _: None)
