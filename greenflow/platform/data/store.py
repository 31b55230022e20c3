"""Reading and writing a prepared dataset directory (canonical Parquet tables + meta.json).

Layout of ``<run_dir>/data/``::

    interactions.parquet  users.parquet  items.parquet  requests.parquet  meta.json

The directory is a ``run_dir.Location``: local, or in object storage (a run's ``data/``).
Local writes go to a temporary directory that is renamed into place, so an interrupted
``prepare`` never leaves a directory that looks complete; in object storage ``meta.json``,
which every reader checks first, is written last.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
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
from greenflow.platform.run_dir import Location

META_FILE = "meta.json"
SPLITS_FILE = "user_splits.parquet"
REQUESTS_FILE = "requests.parquet"
TABLES = ("interactions", "users", "items", "requests")


DataDir = Location | Path  # where a prepared dataset lives: a run's ``data/`` or a local path


def _location(data_dir: DataDir) -> Location:
    return data_dir if isinstance(data_dir, Location) else Location(data_dir)


def write_prepared(
    dataset: CanonicalDataset,
    out_dir: DataDir,
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
    out_dir: DataDir,
    request_config: RequestConfig,
    extra_meta: dict[str, Any] | None = None,
    splits: dict[int, str] | None = None,
    truth: ClickModel | None = None,
) -> dict[str, Any]:
    """Write the entity tables, user splits, streamed request batches and the click model
    (when known); on local disk into a temporary directory that is then renamed, in
    object storage in place with ``meta.json`` (what readers check) written last."""
    out = _location(out_dir)
    if out.is_local:
        tmp = Location(out.local_path.with_name(out.local_path.name + ".tmp"))
        shutil.rmtree(tmp.local_path, ignore_errors=True)
    else:
        tmp = out
        out.remove_dir("")
    tmp.makedirs()
    for name in ("interactions", "users", "items"):
        getattr(dataset, name).to_parquet(tmp.path(f"{name}.parquet"), index=False,
                                          filesystem=tmp.fs)  # fmt: skip
    if truth is not None:
        buf = io.BytesIO()
        truth.save(buf)
        tmp.write_bytes(TRUTH_FILE, buf.getvalue())
    if splits is not None:
        pd.DataFrame({"user_id": list(splits), "split": list(splits.values())}).to_parquet(
            tmp.path(SPLITS_FILE), index=False, filesystem=tmp.fs
        )
    split_counts = dict.fromkeys(SPLITS, 0)
    n_requests = 0
    with pq.ParquetWriter(tmp.path(REQUESTS_FILE), REQUEST_SCHEMA, filesystem=tmp.fs) as writer:
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
    tmp.write_json(META_FILE, meta)
    if out.is_local:
        shutil.rmtree(out.local_path, ignore_errors=True)
        tmp.local_path.rename(out.local_path)
    return meta


def read_meta(data_dir: DataDir) -> dict[str, Any]:
    data = _location(data_dir)
    if not data.is_file(META_FILE):
        raise DataError(
            f"{data.show(META_FILE)}: no prepared dataset here; run `greenflow data prepare` first"
        )
    return data.read_json(META_FILE)


def read_horizon(data_dir: DataDir) -> str:
    """The ground-truth horizon of a prepared dataset ("all" for data prepared before it existed)."""
    return str(read_meta(data_dir).get("horizon", "all"))


def has_click_model(data_dir: DataDir) -> bool:
    """Whether a prepared dataset comes with its known click model (synthetic runs)."""
    return _location(data_dir).is_file(TRUTH_FILE)


def load_click_model(data_dir: DataDir) -> ClickModel | None:
    """The known click model of a prepared synthetic dataset; None for logged data."""
    if not has_click_model(data_dir):
        return None
    return ClickModel.load(io.BytesIO(_location(data_dir).read_bytes(TRUTH_FILE)))


def read_table(
    data_dir: DataDir, name: str, columns: list[str] | None = None, filters: Any = None
) -> pd.DataFrame:
    """One table of a prepared dataset (``"users"``, ``"requests"``…) as a DataFrame."""
    data = _location(data_dir)
    read_meta(data)  # a clear error when the dataset was never prepared
    return pd.read_parquet(data.path(f"{name}.parquet"), columns=columns, filters=filters,
                           filesystem=data.fs)  # fmt: skip


def requests_location(data_dir: DataDir) -> tuple[str, pafs.FileSystem]:
    """(path, filesystem) of the request log, for readers such as Ray Data."""
    data = _location(data_dir)
    read_meta(data)
    return data.path(REQUESTS_FILE), data.fs


def load_dataset(data_dir: DataDir) -> CanonicalDataset:
    """Load the entity tables of a prepared dataset."""
    meta = read_meta(data_dir)
    frames = {name: read_table(data_dir, name) for name in TABLES[:3]}
    return CanonicalDataset(name=meta["dataset"], **frames)


def load_requests(data_dir: DataDir, split: str | None = None) -> pd.DataFrame:
    """The request log, optionally restricted to one split."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    filters = [("split", "=", split)] if split else None
    return read_table(data_dir, "requests", filters=filters)


def load_user_splits(data_dir: DataDir) -> dict[int, str]:
    """user_id -> split name, for every user (also those without a request)."""
    frame = read_table(data_dir, SPLITS_FILE.removesuffix(".parquet"))
    return dict(zip(frame["user_id"].tolist(), frame["split"].tolist(), strict=True))
