"""Canonical tables that every data source produces (DESIGN.md §3).

Identifiers are dense integers starting at 1; 0 is reserved for padding (history
sequences) and "unknown" (categorical feature codes). Every source remaps its raw
identifiers to this form and keeps the raw value in a ``raw_id`` column.

Tables (all Parquet):
  interactions  user_id, item_id, ts (seconds), label (1 = click)
  users         user_id, raw_id, <categorical feature codes>
  items         item_id, raw_id, <categorical feature codes>
  requests      request_id, user_id, ts, history, positives, activity, split
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from greenflow.errors import InputError

INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "ts", "label")
REQUEST_SCHEMA = pa.schema(
    [
        ("request_id", pa.int64()),
        ("user_id", pa.int64()),
        ("ts", pa.int64()),
        ("history", pa.list_(pa.int64())),  # clicked item ids before ts, oldest first
        ("positives", pa.list_(pa.int64())),  # clicked item ids at or after ts
        ("activity", pa.int64()),  # interactions (clicked or not) before ts
        ("split", pa.string()),
    ]
)
SPLITS: tuple[str, ...] = ("cascade_train", "validation", "reward", "eval")


class DataError(InputError):
    """A data file or table is missing or malformed; the message names it and the problem."""


@dataclass(frozen=True)
class CanonicalDataset:
    """The three entity tables of one dataset, in canonical form."""

    name: str
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame

    @property
    def num_users(self) -> int:
        return int(self.users["user_id"].max())

    @property
    def num_items(self) -> int:
        return int(self.items["item_id"].max())

    def user_feature_names(self) -> list[str]:
        return [c for c in self.users.columns if c not in ("user_id", "raw_id")]

    def item_feature_names(self) -> list[str]:
        return [c for c in self.items.columns if c not in ("item_id", "raw_id")]

    def validate(self) -> CanonicalDataset:
        """Check the canonical invariants; raises DataError naming the table and problem."""
        _require_columns("interactions", self.interactions, INTERACTION_COLUMNS)
        _require_columns("users", self.users, ("user_id",))
        _require_columns("items", self.items, ("item_id",))
        for table, frame, key in (
            ("users", self.users, "user_id"),
            ("items", self.items, "item_id"),
        ):
            ids = frame[key].to_numpy()
            if len(ids) == 0:
                raise DataError(f"{table}: table is empty")
            if not np.array_equal(np.sort(ids), np.arange(1, len(ids) + 1)):
                raise DataError(f"{table}: {key} must be dense 1..{len(ids)} (0 is padding)")
            for col in frame.columns:
                if col in (key, "raw_id"):
                    continue
                codes = frame[col].to_numpy()
                if not np.issubdtype(codes.dtype, np.integer) or codes.min() < 0:
                    raise DataError(f"{table}: feature {col!r} must be non-negative integer codes")
        inter = self.interactions
        for col, hi in (("user_id", self.num_users), ("item_id", self.num_items)):
            values = inter[col].to_numpy()
            if len(values) and (values.min() < 1 or values.max() > hi):
                raise DataError(f"interactions: {col} outside 1..{hi}")
        if not set(np.unique(inter["label"].to_numpy())) <= {0, 1}:
            raise DataError("interactions: label must be 0 or 1")
        return self


def _require_columns(table: str, frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{table}: missing column(s) {missing}; has {list(frame.columns)}")


def encode_categorical(values: pd.Series) -> np.ndarray:
    """Map raw categorical values to dense codes 1..V in sorted order; missing → 0."""
    as_text = values.astype("string")  # keeps missing values as <NA>
    vocab = np.sort(as_text.dropna().unique().astype(str))
    codes = pd.Categorical(as_text, categories=vocab).codes  # -1 for missing
    return codes.astype(np.int64) + 1


def vocab_sizes(frame: pd.DataFrame, key: str) -> dict[str, int]:
    """Vocabulary size (max code + 1, code 0 included) of each feature column of a table."""
    return {col: int(frame[col].max()) + 1 for col in frame.columns if col not in (key, "raw_id")}
