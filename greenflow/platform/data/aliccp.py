"""Ali-CCP (Ma et al., SIGIR 2018, "Entire Space Multi-Task Model"), the paper's dataset.

Reads the widely used preprocessed CSV layout, supplied by the user (one or more files,
e.g. train and test)::

    click,purchase,101,121,122,124,125,126,127,128,129,205,206,207,216,508,509,702,853,301

``101`` is the user id and ``205`` the item id; ``121``-``129`` are user profile fields and
``206``/``207``/``216`` the item's category, shop and brand. The cross and context fields
(``508``, ``509``, ``702``, ``853``, ``301``) and ``purchase`` are not used. A click is
``click == 1``. Ali-CCP has no timestamp, so ``ts`` is the global row index across the files
in the order given, which keeps the log order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from greenflow.platform.data.schema import CanonicalDataset, DataError, encode_categorical

NAME = "ali-ccp"
LABEL_FIELD = "click"
USER_FIELD = "101"
ITEM_FIELD = "205"
USER_FEATURES: dict[str, str] = {
    "121": "user_category",
    "122": "user_group",
    "124": "gender",
    "125": "age",
    "126": "consumption_1",
    "127": "consumption_2",
    "128": "occupation",
    "129": "geography",
}
ITEM_FEATURES: dict[str, str] = {"206": "category", "207": "shop", "216": "brand"}
INTEGER_FIELDS = (LABEL_FIELD, USER_FIELD, ITEM_FIELD)
REQUIRED_FIELDS: tuple[str, ...] = (
    *INTEGER_FIELDS,
    *USER_FEATURES,
    *ITEM_FEATURES,
)
CHUNK_ROWS = 1_000_000


@dataclass
class _FirstSeen:
    """Raw ids seen so far and the feature values of the row where each first appeared."""

    fields: list[str]
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    new_ids: list[np.ndarray] = field(default_factory=list)
    new_rows: list[pd.DataFrame] = field(default_factory=list)

    def update(self, raw_ids: np.ndarray, chunk: pd.DataFrame) -> None:
        uniq, first = np.unique(raw_ids, return_index=True)  # first row of each id in chunk
        fresh = ~np.isin(uniq, self.ids, assume_unique=True)
        if not fresh.any():
            return
        self.new_ids.append(uniq[fresh])
        self.new_rows.append(
            chunk.iloc[first[fresh]][self.fields].apply(_feature_values).reset_index(drop=True)
        )
        self.ids = np.union1d(self.ids, uniq[fresh])

    def table(self, key: str, names: dict[str, str]) -> tuple[np.ndarray, pd.DataFrame]:
        """(dense id of each raw id, entity table sorted by raw id)."""
        raw = np.concatenate(self.new_ids)
        rows = pd.concat(self.new_rows, ignore_index=True)
        order = np.argsort(raw, kind="stable")
        raw, rows = raw[order], rows.iloc[order].reset_index(drop=True)
        out = pd.DataFrame({key: np.arange(1, len(raw) + 1, dtype=np.int64), "raw_id": raw})
        for raw_field, name in names.items():
            out[name] = encode_categorical(rows[raw_field])
        return raw, out


def _feature_values(column: pd.Series) -> pd.Series:
    """Make a feature column's values compare equal across chunks (5, 5.0 and "5" alike)."""
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.astype("Int64")
    if pd.api.types.is_float_dtype(column.dtype):
        whole = column.isna() | (column == np.floor(column))
        return column.astype("Int64") if whole.all() else column.astype(str)
    return column.astype(str).where(column.notna(), None)


def _integer_column(column: pd.Series, path: Path, first_line: int) -> np.ndarray:
    """The column as int64, or DataError naming the file, column and first bad line."""
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(dtype=np.int64)
    numeric = pd.to_numeric(column, errors="coerce")
    bad = numeric.isna() | (numeric != np.floor(numeric))
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        value = column.iloc[pos]
        shown = "an empty value" if pd.isna(value) else f"non-integer value {str(value)!r}"
        raise DataError(f"{path}: column {column.name!r} has {shown} at line {first_line + pos}")
    return numeric.to_numpy(dtype=np.int64)


def _check_header(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        head = pd.read_csv(path, nrows=1)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV file: {_one_line(err)}") from None
    missing = [c for c in REQUIRED_FIELDS if c not in head.columns]
    if missing:
        raise DataError(f"{path}: missing required column(s) {missing}")
    if head.empty:
        raise DataError(f"{path}: file is empty (header only, no rows)")


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())  # pandas messages may span lines


def _chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The required columns of one file, chunk by chunk; parse errors become DataError."""
    try:
        yield from pd.read_csv(path, usecols=list(REQUIRED_FIELDS), chunksize=chunk_rows)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV file: {_one_line(err)}") from None


def load(paths: list[Path], chunk_rows: int = CHUNK_ROWS) -> CanonicalDataset:
    """Read Ali-CCP CSV files into canonical tables; ``ts`` is the global row index.

    Errors are DataError naming the file and, for bad values, the column and file line.
    """
    if not paths:
        raise DataError("ali-ccp: no input files given")
    paths = [Path(p) for p in paths]
    for path in paths:  # fail before reading gigabytes when a later file is unusable
        _check_header(path)

    users = _FirstSeen(list(USER_FEATURES))
    items = _FirstSeen(list(ITEM_FEATURES))
    user_parts: list[np.ndarray] = []
    item_parts: list[np.ndarray] = []
    label_parts: list[np.ndarray] = []
    for path in paths:
        rows_in_file = 0
        for chunk in _chunks(path, chunk_rows):
            first_line = rows_in_file + 2  # line 1 is the header
            user = _integer_column(chunk[USER_FIELD], path, first_line)
            item = _integer_column(chunk[ITEM_FIELD], path, first_line)
            label = _integer_column(chunk[LABEL_FIELD], path, first_line)
            not_binary = (label != 0) & (label != 1)
            if not_binary.any():
                pos = int(np.flatnonzero(not_binary)[0])
                raise DataError(
                    f"{path}: column {LABEL_FIELD!r} must be 0 or 1, "
                    f"got {label[pos]} at line {first_line + pos}"
                )
            users.update(user, chunk)
            items.update(item, chunk)
            user_parts.append(user)
            item_parts.append(item)
            label_parts.append(label.astype(np.int8))
            rows_in_file += len(chunk)

    user_raw, users_out = users.table("user_id", USER_FEATURES)
    item_raw, items_out = items.table("item_id", ITEM_FEATURES)
    user_raw_ids = np.concatenate(user_parts)
    del user_parts
    item_raw_ids = np.concatenate(item_parts)
    del item_parts
    interactions = pd.DataFrame(
        {
            # every raw id is in the sorted vocabulary, so searchsorted is an exact lookup
            "user_id": np.searchsorted(user_raw, user_raw_ids) + 1,
            "item_id": np.searchsorted(item_raw, item_raw_ids) + 1,
            "ts": np.arange(len(user_raw_ids), dtype=np.int64),
            "label": np.concatenate(label_parts),
        }
    )
    return CanonicalDataset(NAME, interactions, users_out, items_out).validate()
