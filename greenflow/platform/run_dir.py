"""The run directory: every artifact's path and its reader/writer (DESIGN.md §5).

A run directory is a local path or a filesystem URI (``s3://bucket/prefix``,
``gs://bucket/prefix``, ``file:///abs/path``), opened once with pyarrow's
``FileSystem.from_uri``; every read and write of the pipeline goes through it, so a run
kept in object storage works exactly like one on local disk. Layout::

    data/                      the prepared dataset (``data/store.py`` names its files)
    model_pool.json            models/<name>.pt
    samples/                   reward samples, a Parquet dataset (one row per request)
    simulation.json
    reward_model.json          reward/<variant>.pt, reward/<variant>.json
    pfec_calibration.json
    tune/reward_best.json      tune/step_size_best.json (and Ray Tune's trial folders)
    offline_eval.json          offline_clicks.png, offline_dual_price.png, chain_curve.png
    loadtest.json              loadtest.png
    bench_serving.json         bench_online_replay.json
    serve/<app>/dual_price.json  the serving driver's checkpoint

The contract files of DESIGN.md §5 are read and written as the typed documents of
``platform/documents`` (``to_json``/``from_json``); other JSON artifacts as ``dict``.
Readers raise ``FileNotFoundError`` with the command to run when a required artifact is
missing; optional ones return ``None``.
Local writes are atomic (temporary file + rename); object stores publish a whole object
on close. A ``RunDir`` pickles as its location, so Ray workers reopen the filesystem.
No Ray here.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import posixpath
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from greenflow.errors import InputError
from greenflow.platform.documents import (
    BenchServingDoc,
    LoadtestDoc,
    ModelPoolDoc,
    OfflineEvalDoc,
    RewardModelDoc,
    SimulationDoc,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DATA_DIR = "data"
MODEL_POOL = "model_pool.json"
MODELS_DIR = "models"
SAMPLES_DIR = "samples"
SIMULATION = "simulation.json"
REWARD_MODEL = "reward_model.json"
REWARD_DIR = "reward"
CALIBRATION = "pfec_calibration.json"
TUNE_DIR = "tune"
REWARD_TUNED = f"{TUNE_DIR}/reward_best.json"
STEP_SIZE_TUNED = f"{TUNE_DIR}/step_size_best.json"
OFFLINE_EVAL = "offline_eval.json"
OFFLINE_CLICKS_PNG = "offline_clicks.png"
OFFLINE_DUAL_PRICE_PNG = "offline_dual_price.png"
CHAIN_CURVE_PNG = "chain_curve.png"
LOADTEST = "loadtest.json"
LOADTEST_PNG = "loadtest.png"
BENCH_SERVING = "bench_serving.json"
BENCH_ONLINE_REPLAY = "bench_online_replay.json"
SERVE_DIR = "serve"
DUAL_PRICE_CHECKPOINT = "dual_price.json"
FIGURE_DPI = 120


def _has_scheme(location: str) -> bool:
    # "C:\\runs" has a one-letter "scheme": a drive, not a filesystem
    return len(urlsplit(location).scheme) > 1


def is_portable(location: str) -> bool:
    """Whether every process, on any node, reads ``location`` as the same place: a URI or
    an absolute path (on a mount every node shares)."""
    return _has_scheme(location) or os.path.isabs(location)


class Location:
    """A directory on a pyarrow filesystem, addressed by paths relative to it ("a/b.json").

    ``location`` is a local path (relative paths are resolved against the current
    directory once, here) or a URI that ``pyarrow.fs.FileSystem.from_uri`` accepts;
    query parameters of the URI (``?endpoint_override=127.0.0.1:9000&scheme=http``)
    configure the filesystem and are not part of any path.
    """

    def __init__(self, location: str | os.PathLike[str]) -> None:
        text = os.fspath(location)
        self.uri = text  # as given (``show()`` is what messages and saved configs print)
        self.portable: str  # an absolute path or the URI: what another process reopens
        if _has_scheme(text):
            self.portable = text
            self.fs, root = pafs.FileSystem.from_uri(text)
        else:
            self.portable = os.path.abspath(text)
            self.fs, root = pafs.LocalFileSystem(), self.portable
        self.root = root.rstrip("/") or "/"

    def __reduce__(self) -> tuple[type, tuple[str]]:
        # filesystems are rebuilt from the location on the worker that unpickles
        return type(self), (self.portable,)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Location)
            and type(other) is type(self)
            and (other.portable == self.portable)
        )

    def __hash__(self) -> int:
        return hash((type(self), self.portable))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    def __str__(self) -> str:
        return self.show()

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def local_path(self) -> Path:
        """The directory as a local ``Path``; ``ValueError`` for object storage."""
        if not self.is_local:
            raise ValueError(f"{self.uri} is not on the local filesystem")
        return Path(self.root)

    def path(self, rel: str = "") -> str:
        """``rel``'s path on ``self.fs`` (what pyarrow and Ray Data take with ``filesystem=``)."""
        return posixpath.join(self.root, rel) if rel else self.root

    def show(self, rel: str = "") -> str:
        """``rel`` as people should read it in messages: the absolute local path or the URI."""
        if self.is_local:
            return self.path(rel)
        # without credentials or the query: they configure the filesystem, they do not name
        parts = urlsplit(self.uri)
        host = parts.netloc.rpartition("@")[2]
        where = posixpath.join(host + parts.path, rel) if rel else host + parts.path
        return f"{parts.scheme}://{where}"

    def child(self, rel: str) -> Location:
        """The sub-directory ``rel`` as a Location of its own."""
        if _has_scheme(self.portable):
            parts = urlsplit(self.portable)
            sub = parts._replace(path=posixpath.join(parts.path, rel)).geturl()
        else:
            sub = os.path.join(self.portable, rel)
        loc = Location(sub)
        loc.uri = self.show(rel)
        return loc

    # -- primitives -----------------------------------------------------------------------

    def exists(self, rel: str = "") -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def is_file(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.File

    def listdir(self, rel: str = "") -> list[str]:
        """Names directly under ``rel``, sorted ([] when it does not exist)."""
        selector = pafs.FileSelector(self.path(rel), allow_not_found=True)
        return sorted(info.base_name for info in self.fs.get_file_info(selector))

    def makedirs(self, rel: str = "") -> None:
        self.fs.create_dir(self.path(rel), recursive=True)

    def remove_dir(self, rel: str) -> None:
        """Delete ``rel`` and everything under it, if it exists."""
        if self.exists(rel):
            self.fs.delete_dir(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        try:
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read()
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{self.show(rel)}: not found") from err

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel``; readers never see half a file."""
        parent = posixpath.dirname(rel)
        if self.is_local:
            self.makedirs(parent)
            # one temporary name per process: two writers never share one
            tmp = posixpath.join(parent, f".{posixpath.basename(rel)}.{os.getpid()}.tmp")
            with self.fs.open_output_stream(self.path(tmp)) as f:
                f.write(data)
            self.fs.move(self.path(tmp), self.path(rel))
        else:  # an object store publishes the object on close
            with self.fs.open_output_stream(self.path(rel)) as f:
                f.write(data)

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def read_json_if_exists(self, rel: str) -> Any:
        """The parsed document at ``rel``, or None when there is none."""
        return self.read_json(rel) if self.is_file(rel) else None

    def write_json(self, rel: str, doc: Any, indent: int | None = 2, **dumps: Any) -> None:
        self.write_bytes(rel, json.dumps(doc, indent=indent, **dumps).encode())

    def read_parquet(
        self,
        rel: str,
        columns: list[str] | None = None,
        filters: Any = None,
    ) -> pa.Table:
        """A Parquet file or dataset directory as one table (``filters`` as pyarrow's)."""
        if not self.exists(rel):
            raise FileNotFoundError(f"{self.show(rel)}: not found")
        return pq.read_table(self.path(rel), columns=columns, filters=filters, filesystem=self.fs)

    def write_parquet(self, rel: str, table: pa.Table) -> None:
        self.makedirs(posixpath.dirname(rel))
        pq.write_table(table, self.path(rel), filesystem=self.fs)

    def write_weights(self, rel: str, state: dict[str, torch.Tensor]) -> str:
        """Save a state dict to ``rel``; returns the sha256 of the bytes written."""
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        self.write_bytes(rel, data)
        return hashlib.sha256(data).hexdigest()

    def read_weights(self, rel: str, sha256: str | None = None) -> dict[str, torch.Tensor]:
        """A state dict (tensors only: ``weights_only=True``), checked against ``sha256``."""
        data = self.read_bytes(rel)
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise InputError(f"{self.show(rel)}: sha256 does not match its record")
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)

    def write_figure(self, rel: str, fig: Figure) -> str:
        """Save a matplotlib figure as PNG at ``rel``; returns where, for messages."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=FIGURE_DPI)
        self.write_bytes(rel, buf.getvalue())
        return self.show(rel)


class RunDir(Location):
    """One pipeline run's directory: the artifacts of DESIGN.md §5 by name."""

    @classmethod
    def of(cls, where: RunDir | str | os.PathLike[str]) -> RunDir:
        """``where`` as a RunDir (a RunDir is returned as is)."""
        return where if isinstance(where, RunDir) else cls(where)

    @functools.cached_property
    def data(self) -> Location:
        """The prepared dataset (``data/``), opened once."""
        return self.child(DATA_DIR)

    # -- model pool ------------------------------------------------------------------------

    def model_weights(self, name: str) -> str:
        return f"{MODELS_DIR}/{name}.pt"

    def read_model_pool(self) -> ModelPoolDoc:
        if not self.is_file(MODEL_POOL):
            raise FileNotFoundError(
                f"{self.show(MODEL_POOL)}: no model pool; run `greenflow train-cascade` first"
            )
        return ModelPoolDoc.from_json(self.read_json(MODEL_POOL), self.show(MODEL_POOL))

    def write_model_pool(self, doc: ModelPoolDoc) -> None:
        self.write_json(MODEL_POOL, doc.to_json())

    # -- simulation ------------------------------------------------------------------------

    def read_simulation(self) -> SimulationDoc:
        if not self.is_file(SIMULATION):
            raise FileNotFoundError(
                f"{self.show(SIMULATION)}: no reward samples; run `greenflow simulate` first"
            )
        return SimulationDoc.from_json(self.read_json(SIMULATION), self.show(SIMULATION))

    def write_simulation(self, doc: SimulationDoc) -> None:
        self.write_json(SIMULATION, doc.to_json())

    def samples_staging(self) -> str:
        """Where a simulation job writes its samples (a path on ``self.fs``): on local disk a
        fresh hidden directory beside ``samples/`` that ``publish_samples`` swaps in, so an
        interrupted job leaves the old samples whole; in object storage, which cannot
        rename a directory, ``samples/`` itself, emptied first, and the old
        ``simulation.json`` removed (the new one, written last, says they are complete)."""
        if not self.is_local:
            if self.is_file(SIMULATION):
                self.fs.delete_file(self.path(SIMULATION))
            self.remove_dir(SAMPLES_DIR)
            return self.path(SAMPLES_DIR)
        return self.path(f".{SAMPLES_DIR}.tmp-{uuid.uuid4().hex[:8]}")

    def publish_samples(self, staged: str) -> None:
        """Make the samples written to ``staged`` the run's ``samples/``; the old ones are
        removed only after the swap."""
        target = self.path(SAMPLES_DIR)
        if staged == target:
            return
        old = f".{SAMPLES_DIR}.old-{uuid.uuid4().hex[:8]}"
        if self.exists(SAMPLES_DIR):
            self.fs.move(target, self.path(old))
        self.fs.move(staged, target)
        self.remove_dir(old)

    def discard_staging(self, staged: str) -> None:
        """Remove what an unfinished job left in ``staged`` (nothing once published)."""
        if staged != self.path(SAMPLES_DIR):
            self.remove_dir(posixpath.relpath(staged, self.root))

    def read_samples(self, columns: list[str] | None = None, filters: Any = None) -> pa.Table:
        """The reward samples (``samples/``), every split unless ``filters`` says otherwise."""
        if not self.exists(SAMPLES_DIR):
            raise FileNotFoundError(
                f"{self.show(SAMPLES_DIR)}: no reward samples; run `greenflow simulate` first"
            )
        return self.read_parquet(SAMPLES_DIR, columns, filters)

    # -- reward model ----------------------------------------------------------------------

    def reward_weights(self, variant: str) -> str:
        return f"{REWARD_DIR}/{variant}.pt"

    def reward_side_file(self, variant: str) -> str:
        return f"{REWARD_DIR}/{variant}.json"

    def has_reward_model(self, variant: str) -> bool:
        return self.is_file(self.reward_weights(variant))

    def read_reward_summary(self) -> RewardModelDoc | None:
        """``reward_model.json``; None before the first ``train-reward``."""
        doc = self.read_json_if_exists(REWARD_MODEL)
        return None if doc is None else RewardModelDoc.from_json(doc, self.show(REWARD_MODEL))

    def write_reward_summary(self, doc: RewardModelDoc) -> None:
        self.write_json(REWARD_MODEL, doc.to_json())

    # -- calibration, tuning ---------------------------------------------------------------

    def read_calibration(self) -> dict[str, Any] | None:
        """``pfec_calibration.json`` (joules per FLOP), None before ``pfec calibrate``."""
        return self.read_json_if_exists(CALIBRATION)

    def write_calibration(self, doc: dict[str, Any]) -> None:
        self.write_json(CALIBRATION, doc)

    def read_reward_tuned(self) -> dict[str, Any] | None:
        return self.read_json_if_exists(REWARD_TUNED)

    def write_reward_tuned(self, doc: dict[str, Any]) -> None:
        self.write_json(REWARD_TUNED, doc)

    def read_step_size_tuned(self) -> dict[str, Any] | None:
        return self.read_json_if_exists(STEP_SIZE_TUNED)

    def write_step_size_tuned(self, doc: dict[str, Any]) -> None:
        self.write_json(STEP_SIZE_TUNED, doc)

    def tune_storage(self) -> tuple[str, pafs.FileSystem | None]:
        """(path, filesystem) for Ray Tune's ``storage_path``/``storage_filesystem``: the
        run's ``tune/`` folder (None: Tune's own local filesystem)."""
        self.makedirs(TUNE_DIR)
        return self.path(TUNE_DIR), None if self.is_local else self.fs

    # -- evaluation, load test, benchmarks -------------------------------------------------

    def write_offline_eval(self, doc: OfflineEvalDoc) -> None:
        self.write_json(OFFLINE_EVAL, doc.to_json())

    def read_offline_eval(self) -> OfflineEvalDoc:
        return OfflineEvalDoc.from_json(self.read_json(OFFLINE_EVAL), self.show(OFFLINE_EVAL))

    def write_loadtest(self, doc: LoadtestDoc) -> None:
        self.write_json(LOADTEST, doc.to_json())

    def read_loadtest(self) -> LoadtestDoc:
        return LoadtestDoc.from_json(self.read_json(LOADTEST), self.show(LOADTEST))

    def read_bench_serving(self) -> BenchServingDoc | None:
        doc = self.read_json_if_exists(BENCH_SERVING)
        return None if doc is None else BenchServingDoc.from_json(doc, self.show(BENCH_SERVING))

    def write_bench_serving(self, doc: BenchServingDoc) -> None:
        self.write_json(BENCH_SERVING, doc.to_json())

    def write_bench_online_replay(self, doc: dict[str, Any]) -> None:
        self.write_json(BENCH_ONLINE_REPLAY, doc)

    def json_outputs(self) -> dict[str, dict[str, Any]]:
        """Every JSON object file directly under the run directory, parsed, by file name."""
        outputs: dict[str, dict[str, Any]] = {}
        for name in self.listdir():
            if not name.endswith(".json") or not self.is_file(name):
                continue
            try:
                data = self.read_json(name)
            except json.JSONDecodeError as err:
                raise InputError(f"{self.show(name)}: not valid JSON ({err})") from err
            if isinstance(data, dict):  # a JSON list is not one of our outputs
                outputs[name] = data
        return outputs

    # -- serving checkpoints ---------------------------------------------------------------

    def dual_price_checkpoint(self, app_name: str) -> str:
        return f"{SERVE_DIR}/{app_name}/{DUAL_PRICE_CHECKPOINT}"

    def read_dual_price(self, app_name: str) -> dict[str, Any] | None:
        return self.read_json_if_exists(self.dual_price_checkpoint(app_name))

    def write_dual_price(self, app_name: str, doc: dict[str, Any]) -> None:
        # NaN stays NaN (a window without traffic): the driver reads back what it wrote
        self.write_json(self.dual_price_checkpoint(app_name), doc, indent=None, allow_nan=True)
