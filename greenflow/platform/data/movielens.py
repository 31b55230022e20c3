"""MovieLens-100k, the embedded default (Harper & Konstan, 2015).

The files ship inside the PyPI wheel ``recbole==1.2.1`` (``recbole/dataset_example/ml-100k``).
We fetch that single wheel with ``pip download --no-deps`` (recbole is never installed:
it pins an old Ray), check its sha256, and extract the three atomic files. A click is a
rating of 4 or more.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from greenflow.platform.data.schema import CanonicalDataset, DataError, encode_categorical

WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
WHEEL_REQUIREMENT = "recbole==1.2.1"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
MEMBER_PREFIX = "recbole/dataset_example/ml-100k/"
FILES = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")
CLICK_RATING = 4.0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(cache_dir: Path) -> Path:
    """Download (once) and extract ML-100k into ``cache_dir/ml-100k``; returns that folder."""
    cache_dir = Path(cache_dir)
    target = cache_dir / "ml-100k"
    if all((target / f).is_file() for f in FILES):
        return target
    wheel = cache_dir / WHEEL_NAME
    if not wheel.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--dest", str(cache_dir), WHEEL_REQUIREMENT]  # fmt: skip
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired as exc:
            raise DataError(f"pip download {WHEEL_REQUIREMENT} timed out after 600 s") from exc
        if result.returncode != 0 or not wheel.is_file():
            raise DataError(
                f"pip download {WHEEL_REQUIREMENT} failed: {result.stderr.strip()[-500:]}"
            )
    actual = sha256_of(wheel)
    if actual != WHEEL_SHA256:
        wheel.unlink()  # so the next fetch downloads afresh instead of failing forever
        raise DataError(
            f"{wheel}: sha256 {actual} does not match the recorded {WHEEL_SHA256}; "
            "the file was removed, run the command again to download it afresh"
        )
    tmp = cache_dir / "ml-100k.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as zf:
        for name in FILES:
            (tmp / name).write_bytes(zf.read(MEMBER_PREFIX + name))
    shutil.rmtree(target, ignore_errors=True)  # a partial earlier extraction
    tmp.rename(target)
    return target


def _read_atomic(path: Path) -> pd.DataFrame:
    """Read a RecBole atomic file: tab-separated, header ``name:type``."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def _age_bucket(age: pd.Series) -> pd.Series:
    edges = [0, 18, 25, 35, 45, 50, 56, 200]  # the ML-1M age groups
    return pd.cut(age.astype(int), bins=edges, right=False, labels=False).astype("int64")


def load(folder: Path) -> CanonicalDataset:
    """Convert the extracted atomic files into canonical tables; DataError on bad content."""
    try:
        return _load(Path(folder))
    except (KeyError, ValueError, TypeError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{folder}: malformed ml-100k files ({type(exc).__name__}: {exc})") from exc


def _load(folder: Path) -> CanonicalDataset:
    inter = _read_atomic(Path(folder) / "ml-100k.inter")
    users = _read_atomic(Path(folder) / "ml-100k.user")
    items = _read_atomic(Path(folder) / "ml-100k.item")

    user_raw = np.sort(users["user_id"].astype(np.int64).unique())
    item_raw = np.sort(items["item_id"].astype(np.int64).unique())
    user_map = pd.Series(np.arange(1, len(user_raw) + 1), index=user_raw)
    item_map = pd.Series(np.arange(1, len(item_raw) + 1), index=item_raw)

    users = users.assign(raw=users["user_id"].astype(np.int64)).sort_values("raw")
    users_out = pd.DataFrame(
        {
            "user_id": user_map.loc[users["raw"]].to_numpy(),
            "raw_id": users["raw"].to_numpy(),
            "age": _age_bucket(users["age"]).to_numpy() + 1,
            "gender": encode_categorical(users["gender"]),
            "occupation": encode_categorical(users["occupation"]),
            "zip_region": encode_categorical(users["zip_code"].str[:1]),
        }
    )
    items = items.assign(raw=items["item_id"].astype(np.int64)).sort_values("raw")
    year = pd.to_numeric(items["release_year"], errors="coerce")
    decade = (year // 10 * 10).astype("Int64").astype(str).where(year.notna(), None)
    genre = items["class"].str.split(" ").str[0].replace("", None)
    items_out = pd.DataFrame(
        {
            "item_id": item_map.loc[items["raw"]].to_numpy(),
            "raw_id": items["raw"].to_numpy(),
            "genre": encode_categorical(genre),
            "decade": encode_categorical(decade),
        }
    )
    rating = inter["rating"].astype(float)
    interactions = pd.DataFrame(
        {
            "user_id": user_map.loc[inter["user_id"].astype(np.int64)].to_numpy(),
            "item_id": item_map.loc[inter["item_id"].astype(np.int64)].to_numpy(),
            "ts": inter["timestamp"].astype(float).astype(np.int64).to_numpy(),
            "label": (rating >= CLICK_RATING).astype(np.int8).to_numpy(),
        }
    )
    return CanonicalDataset("movielens-100k", interactions, users_out, items_out).validate()
