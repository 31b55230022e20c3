"""Reading and writing a prepared dataset directory (canonical Parquet tables + meta.json).

Layout of ``<run_dir>/data/``::

    interactions.parquet  users.parquet  items.parquet  requests.parquet  meta.json

Writes go to a temporary directory that is renamed into place, so an interrupted
``prepare`` never leaves a directory that looks complete.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from greenflow.errors import ConfigError
from greenflow.platform.data.click_model import TRUTH_FILE, ClickModel, draw_positives
from greenflow.platform.data.requests import RequestConfig, assign_splits, iter_request_batches
from greenflow.platform.data.schema import (
    REQUEST_SCHEMA,
    SPLITS,
    CanonicalDataset,
    DataError,
    vocab_sizes,
)

META_FILE = "meta.json"
SPLITS_FILE = "user_splits.parquet"
TABLES = ("interactions", "users", "items", "requests")


def write_prepared(
    dataset: CanonicalDataset,
    out_dir: Path,
    request_config: RequestConfig,
    extra_meta: dict[str, Any] | None = None,
    truth: ClickModel | None = None,
) -> dict[str, Any]:
    """Validate, build the request log and write all tables atomically; returns meta.

    With a known click model (``truth``: the synthetic source), every request's positives
    are one draw of the model's response at the request time instead of logged future
    clicks (horizon ``response``), and the model is saved beside the tables
    (``click_model.TRUTH_FILE``) so the simulation can compute expected rewards.
    """
    dataset.validate()
    splits = assign_splits(
        dataset.users["user_id"].to_numpy(), request_config.fractions, request_config.seed
    )
    batches = iter_request_batches(dataset.interactions, splits, request_config)
    if truth is not None:
        if request_config.horizon != "all":
            raise ConfigError(f"horizon {request_config.horizon!r}: a synthetic run's ground "
                              "truth is its click model's response; the horizon does not apply")  # fmt: skip
        batches = _drawn_positives(batches, truth, request_config.seed)
        extra_meta = {**(extra_meta or {}), "horizon": RESPONSE_HORIZON,
                      "ground_truth": TRUTH_FILE}  # fmt: skip
    return write_tables(dataset, batches, out_dir, request_config, extra_meta, splits, truth)


RESPONSE_HORIZON = "response"  # a synthetic run's ground truth (write_prepared)
POSITIVE_DRAW_ROWS = 2048  # requests per (rows, N) response matrix: bounds the memory


def _drawn_positives(
    batches: Iterable[pa.RecordBatch], truth: ClickModel, seed: int
) -> Iterator[pa.RecordBatch]:
    """The batches with ``positives`` replaced by draws of the click model's response,
    seeded per batch and row block, so the same config always gives the same data."""
    column = REQUEST_SCHEMA.get_field_index("positives")
    for b, batch in enumerate(batches):
        users = batch.column("user_id").to_numpy()
        histories = batch.column("history").to_pylist()
        drawn: list[list[int]] = []
        for start in range(0, len(users), POSITIVE_DRAW_ROWS):
            stop = start + POSITIVE_DRAW_ROWS
            drawn += draw_positives(truth, users[start:stop], histories[start:stop],
                                    seed=(seed, 3, b, start))  # fmt: skip
        yield batch.set_column(column, REQUEST_SCHEMA.field(column),
                               pa.array(drawn, type=pa.list_(pa.int64())))  # fmt: skip


def write_tables(
    dataset: CanonicalDataset,
    request_batches: Iterable[pa.RecordBatch],
    out_dir: Path,
    request_config: RequestConfig,
    extra_meta: dict[str, Any] | None = None,
    splits: dict[int, str] | None = None,
    truth: ClickModel | None = None,
) -> dict[str, Any]:
    """Write the entity tables, user splits, streamed request batches and the click model
    (when known), then rename."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("interactions", "users", "items"):
        getattr(dataset, name).to_parquet(tmp / f"{name}.parquet", index=False)
    if truth is not None:
        truth.save(tmp / TRUTH_FILE)
    if splits is not None:
        pd.DataFrame({"user_id": list(splits), "split": list(splits.values())}).to_parquet(
            tmp / SPLITS_FILE, index=False
        )
    split_counts = dict.fromkeys(SPLITS, 0)
    n_requests = 0
    with pq.ParquetWriter(tmp / "requests.parquet", REQUEST_SCHEMA) as writer:
        for batch in request_batches:
            writer.write_batch(batch)
            n_requests += batch.num_rows
            for split, count in pd.Series(batch.column("split").to_pylist()).value_counts().items():
                split_counts[str(split)] += int(count)
    meta = {
        "dataset": dataset.name,
        "users": dataset.num_users,
        "items": dataset.num_items,
        "interactions": len(dataset.interactions),
        "clicks": int(dataset.interactions["label"].sum()),
        "requests": n_requests,
        "requests_per_split": split_counts,
        "user_features": vocab_sizes(dataset.users, "user_id"),
        "item_features": vocab_sizes(dataset.items, "item_id"),
        "request_config": {
            "requests_per_user": request_config.requests_per_user,
            "min_history": request_config.min_history,
            "min_positives": request_config.min_positives,
            "max_history": request_config.max_history,
            "fractions": dict(zip(SPLITS, request_config.fractions.as_tuple(), strict=True)),
            "seed": request_config.seed,
            "horizon": request_config.horizon,
        },
        "horizon": request_config.horizon,
        **(extra_meta or {}),
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return meta


def read_meta(data_dir: Path) -> dict[str, Any]:
    path = Path(data_dir) / META_FILE
    if not path.is_file():
        raise DataError(f"{path}: no prepared dataset here; run `greenflow data prepare` first")
    return json.loads(path.read_text())


def read_horizon(data_dir: Path) -> str:
    """The ground-truth horizon of a prepared dataset ("all" for data prepared before it existed)."""
    return str(read_meta(data_dir).get("horizon", "all"))


def has_click_model(data_dir: Path) -> bool:
    """Whether a prepared dataset comes with its known click model (synthetic runs)."""
    return (Path(data_dir) / TRUTH_FILE).is_file()


def load_click_model(data_dir: Path) -> ClickModel | None:
    """The known click model of a prepared synthetic dataset; None for logged data."""
    return ClickModel.load(Path(data_dir) / TRUTH_FILE) if has_click_model(data_dir) else None


def load_dataset(data_dir: Path) -> CanonicalDataset:
    """Load the entity tables of a prepared dataset."""
    meta = read_meta(data_dir)
    frames = {name: pd.read_parquet(Path(data_dir) / f"{name}.parquet") for name in TABLES[:3]}
    return CanonicalDataset(name=meta["dataset"], **frames)


def load_requests(data_dir: Path, split: str | None = None) -> pd.DataFrame:
    """The request log, optionally restricted to one split."""
    read_meta(data_dir)
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    filters = [("split", "=", split)] if split else None
    return pd.read_parquet(Path(data_dir) / "requests.parquet", filters=filters)


def load_user_splits(data_dir: Path) -> dict[int, str]:
    """user_id -> split name, for every user (also those without a request)."""
    read_meta(data_dir)
    frame = pd.read_parquet(Path(data_dir) / SPLITS_FILE)
    return dict(zip(frame["user_id"].tolist(), frame["split"].tolist(), strict=True))
