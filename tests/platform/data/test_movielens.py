from __future__ import annotations

from pathlib import Path

import pytest

from greenflow.platform.data import movielens
from greenflow.platform.data.schema import DataError

INTER = [
    "user_id:token\titem_id:token\trating:float\ttimestamp:float",
    "196\t242\t3\t881250949",
    "186\t302\t4\t891717742",
    "196\t302\t5\t881250950",
    "22\t377\t1\t878887116",
    "22\t242\t4.5\t878887117",
]
USERS = [
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token",
    "196\t49\tM\twriter\t55105",
    "186\t17\tF\texecutive\t00000",
    "22\t25\tM\twriter\tT8H1N",
]
ITEMS = [
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
    "242\tKolya\t1997\tComedy",
    "302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller",
    "377\tHeavyweights\t1989\tChildren's Comedy",
    "999\tUnknown\t\t",
]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    for name, lines in zip(movielens.FILES, (INTER, USERS, ITEMS), strict=True):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    return tmp_path


def test_load_converts_atomic_files(folder: Path) -> None:
    ds = movielens.load(folder)
    assert ds.name == "movielens-100k"
    assert ds.users["raw_id"].tolist() == [22, 186, 196]
    assert ds.users["user_id"].tolist() == [1, 2, 3]
    assert ds.items["raw_id"].tolist() == [242, 302, 377, 999]
    inter = ds.interactions
    assert inter["user_id"].tolist() == [3, 2, 3, 1, 1]
    assert inter["item_id"].tolist() == [1, 2, 2, 3, 1]
    assert inter["ts"].tolist() == [881250949, 891717742, 881250950, 878887116, 878887117]
    assert inter["label"].tolist() == [0, 1, 1, 0, 1]  # click = rating >= 4


def test_features(folder: Path) -> None:
    ds = movielens.load(folder)
    users = ds.users.set_index("raw_id")
    assert users["age"].tolist() == [3, 1, 5]  # ML-1M groups: 25-34, <18, 45-49 (0 = unknown)
    assert users["gender"].tolist() == [2, 1, 2]
    assert users.loc[22, "occupation"] == users.loc[196, "occupation"]
    assert users["zip_region"].nunique() == 3
    items = ds.items.set_index("raw_id")
    # first listed genre; codes by sorted name: Children's 1, Comedy 2, Crime 3
    assert items["genre"].tolist() == [2, 3, 1, 0]
    assert items["decade"].tolist() == [2, 2, 1, 0]  # 1990s, 1990s, 1980s, unknown


def test_missing_file_is_named(folder: Path) -> None:
    (folder / "ml-100k.user").unlink()
    with pytest.raises(DataError, match="ml-100k.user"):
        movielens.load(folder)


def test_fetch_refuses_a_wheel_with_the_wrong_sha256(tmp_path: Path) -> None:
    (tmp_path / movielens.WHEEL_NAME).write_bytes(b"not the recbole wheel")
    with pytest.raises(DataError, match="sha256"):
        movielens.fetch(tmp_path)
    assert not (tmp_path / "ml-100k").exists()


def test_fetch_reuses_extracted_files(folder: Path) -> None:
    cache = folder.parent
    target = cache / "ml-100k"
    folder.rename(target)
    assert movielens.fetch(cache) == target  # no wheel and no download needed
