from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from greenflow.platform.data import aliccp
from greenflow.platform.data.schema import DataError

HEADER = "click,purchase,101,121,122,124,125,126,127,128,129,205,206,207,216,508,509,702,853,301"


def row(click: object, user: object, item: object, profile: int = 1, category: object = 10) -> str:
    """One CSV line: user profile fields all ``profile``, item shop 20 and brand 30."""
    fields = [click, 0, user, *[profile] * 8, item, category, 20, 30, 0, 0, 0, 0, 1]
    return ",".join(str(f) for f in fields)


def write(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture()
def files(tmp_path: Path) -> list[Path]:
    train = write(
        tmp_path / "train.csv",
        row(1, 500, 9000, profile=3, category=11),
        row(0, 100, 9000, profile=1, category=99),  # item 9000 seen again: first value kept
        row(0, 500, 7000, profile=4, category=10),  # user 500 seen again: first value kept
    )
    test = write(
        tmp_path / "test.csv",
        row(1, 300, 8000, profile=2, category=12),
        row(1, 100, 7000, profile=1, category=10),
    )
    return [train, test]


def test_load_remaps_ids_densely_in_raw_id_order(files: list[Path]) -> None:
    ds = aliccp.load(files)
    assert ds.name == "ali-ccp"
    assert ds.users["user_id"].tolist() == [1, 2, 3]
    assert ds.users["raw_id"].tolist() == [100, 300, 500]
    assert ds.items["item_id"].tolist() == [1, 2, 3]
    assert ds.items["raw_id"].tolist() == [7000, 8000, 9000]
    inter = ds.interactions
    assert inter["user_id"].tolist() == [3, 1, 3, 2, 1]
    assert inter["item_id"].tolist() == [3, 3, 1, 2, 1]
    assert inter["label"].tolist() == [1, 0, 0, 1, 1]
    assert inter["ts"].tolist() == [0, 1, 2, 3, 4]  # global row order across files


def test_load_keeps_first_seen_features(files: list[Path]) -> None:
    ds = aliccp.load(files)
    assert ds.user_feature_names() == list(aliccp.USER_FEATURES.values())
    assert ds.item_feature_names() == ["category", "shop", "brand"]
    # profile values 1, 2, 3 (user 500's later 4 is ignored) → codes 1, 2, 3 by raw id
    assert ds.users["gender"].tolist() == [1, 2, 3]
    # item 9000 keeps category 11 (not the later 99); codes of 10, 11, 12 are 1, 2, 3
    assert ds.items["category"].tolist() == [1, 3, 2]
    assert set(ds.items["brand"]) == {1}


def test_small_chunks_give_the_same_tables(files: list[Path]) -> None:
    whole = aliccp.load(files)
    chunked = aliccp.load(files, chunk_rows=1)
    for name in ("interactions", "users", "items"):
        pd.testing.assert_frame_equal(getattr(whole, name), getattr(chunked, name))


def test_missing_feature_value_becomes_unknown_code(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", row(1, 1, 1, category=""), row(0, 2, 2, category=5))
    ds = aliccp.load([path])
    assert ds.items["category"].tolist() == [0, 1]


def assert_one_line_error(paths: list[Path], *parts: str) -> None:
    with pytest.raises(DataError) as info:
        aliccp.load(paths)
    message = str(info.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message


def test_missing_file_is_named(files: list[Path], tmp_path: Path) -> None:
    assert_one_line_error([files[0], tmp_path / "nope.csv"], "nope.csv", "not found")


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert_one_line_error([empty], "empty.csv", "empty")


def test_header_only_file(tmp_path: Path) -> None:
    assert_one_line_error([write(tmp_path / "h.csv")], "h.csv", "empty")


def test_missing_columns_are_listed(tmp_path: Path) -> None:
    header = HEADER.replace(",205,", ",999,").replace(",216,", ",998,")
    path = write(tmp_path / "cols.csv", row(1, 1, 1), header=header)
    assert_one_line_error([path], "cols.csv", "missing required column", "'205'", "'216'")


def test_label_must_be_binary(tmp_path: Path) -> None:
    path = write(tmp_path / "lab.csv", row(1, 1, 1), row(2, 1, 2))
    assert_one_line_error([path], "lab.csv", "'click'", "0 or 1", "line 3")


@pytest.mark.parametrize(
    ("bad_row", "column", "line"),
    [
        (row(1, 1, "abc"), "'205'", "line 3"),
        (row(1, 1.5, 2), "'101'", "line 3"),
        (row(1, "", 2), "'101'", "line 3"),
        (row("yes", 1, 2), "'click'", "line 3"),
    ],
)
def test_non_integer_id_or_label(tmp_path: Path, bad_row: str, column: str, line: str) -> None:
    path = write(tmp_path / "ids.csv", row(1, 1, 1), bad_row)
    assert_one_line_error([path], "ids.csv", column, line)


def test_bad_row_in_a_later_chunk_reports_its_line(tmp_path: Path) -> None:
    rows = [row(i % 2, i, i) for i in range(1, 6)] + [row(1, 1, "x")]
    path = write(tmp_path / "late.csv", *rows)
    with pytest.raises(DataError, match="line 7"):
        aliccp.load([path], chunk_rows=2)


def test_no_files() -> None:
    with pytest.raises(DataError, match="no input files"):
        aliccp.load([])


def test_whole_float_ids_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv", row(1, "4.0", 7), row(0, 4, "7.0"))
    ds = aliccp.load([path])
    assert np.array_equal(ds.users["raw_id"], [4])
    assert np.array_equal(ds.items["raw_id"], [7])


def test_unparsable_csv_is_a_data_error(tmp_path: Path) -> None:
    path = write(tmp_path / "quote.csv", row(1, 1, 1), row(1, 1, '"2'))  # unterminated quote
    assert_one_line_error([path], "quote.csv", "not a readable CSV")
