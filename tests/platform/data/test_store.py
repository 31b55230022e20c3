from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from greenflow.platform.data import store
from greenflow.platform.data.requests import RequestConfig, SplitFractions, build_requests
from greenflow.platform.data.schema import REQUEST_SCHEMA, SPLITS, CanonicalDataset, DataError
from greenflow.platform.data.synthetic import SyntheticConfig, generate

CONFIG = RequestConfig(requests_per_user=3, fractions=SplitFractions(0.4, 0.3, 0.2, 0.1), seed=4)


@pytest.fixture(scope="module")
def dataset() -> CanonicalDataset:
    return generate(SyntheticConfig(users=300, items=100, dim=4, mean_events=15.0, seed=2))[0]


def test_round_trip(dataset: CanonicalDataset, tmp_path: Path) -> None:
    out = tmp_path / "data"
    meta = store.write_prepared(dataset, out, CONFIG, extra_meta={"source": "test"})
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{t}.parquet" for t in store.TABLES] + [store.META_FILE, store.SPLITS_FILE]
    )
    assert not out.with_name("data.tmp").exists()
    assert store.read_meta(out) == meta
    assert meta["source"] == "test" and meta["dataset"] == "synthetic"
    assert meta["users"] == 300 and meta["items"] == 100
    splits = store.load_user_splits(out)
    assert sorted(splits) == list(range(1, 301))  # every user, with a request or not
    assert set(splits.values()) == set(SPLITS)
    assert meta["clicks"] == int(dataset.interactions["label"].sum())
    assert meta["user_features"] == {
        "segment": int(dataset.users["segment"].max()) + 1,
        "region": int(dataset.users["region"].max()) + 1,
    }

    loaded = store.load_dataset(out)
    assert loaded.name == dataset.name
    for name in ("interactions", "users", "items"):
        pd.testing.assert_frame_equal(getattr(loaded, name), getattr(dataset, name))

    requests = store.load_requests(out)
    expected = build_requests(dataset.interactions, dataset.users["user_id"].to_numpy(), CONFIG)
    assert len(requests) == meta["requests"] == len(expected)
    assert requests["request_id"].tolist() == expected["request_id"].tolist()
    assert [list(h) for h in requests["history"]] == [list(h) for h in expected["history"]]
    assert sum(meta["requests_per_split"].values()) == meta["requests"]


def test_split_filter(dataset: CanonicalDataset, tmp_path: Path) -> None:
    meta = store.write_prepared(dataset, tmp_path / "data", CONFIG)
    seen: set[int] = set()
    for split in SPLITS:
        part = store.load_requests(tmp_path / "data", split=split)
        assert (part["split"] == split).all()
        assert len(part) == meta["requests_per_split"][split]
        assert not seen & set(part["user_id"])
        seen |= set(part["user_id"])
    with pytest.raises(ValueError, match="unknown split"):
        store.load_requests(tmp_path / "data", split="test")


def test_failed_write_leaves_the_previous_directory(
    dataset: CanonicalDataset, tmp_path: Path
) -> None:
    out = tmp_path / "data"
    before = store.write_prepared(dataset, out, CONFIG)
    good = store.load_requests(out)
    batch = pa.RecordBatch.from_pandas(good.iloc[:5], schema=REQUEST_SCHEMA, preserve_index=False)

    def broken() -> Iterator[pa.RecordBatch]:
        yield batch
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        store.write_tables(dataset, broken(), out, CONFIG)
    assert store.read_meta(out) == before
    assert len(store.load_requests(out)) == len(good)


def test_write_replaces_an_existing_directory(dataset: CanonicalDataset, tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    store.write_prepared(dataset, out, CONFIG)
    assert not (out / "stale.txt").exists()


def test_reading_an_unprepared_directory_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no prepared dataset"):
        store.load_dataset(tmp_path)
    with pytest.raises(DataError, match="no prepared dataset"):
        store.load_requests(tmp_path)


def test_invalid_dataset_is_refused_before_writing(
    dataset: CanonicalDataset, tmp_path: Path
) -> None:
    users = dataset.users.assign(user_id=dataset.users["user_id"] + 1)  # not dense from 1
    broken = CanonicalDataset(dataset.name, dataset.interactions, users, dataset.items)
    with pytest.raises(DataError, match="dense"):
        store.write_prepared(broken, tmp_path / "data", CONFIG)
    assert not (tmp_path / "data").exists()
    labels = dataset.interactions.assign(label=np.int8(2))
    with pytest.raises(DataError, match="label"):
        CanonicalDataset(dataset.name, labels, dataset.users, dataset.items).validate()
