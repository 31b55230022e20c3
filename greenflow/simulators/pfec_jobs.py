"""``greenflow pfec report`` and ``greenflow pfec calibrate``: PFEC of a run directory.

**report** reads every ``<run-dir>/*.json`` (``offline_eval.json``, ``loadtest.json``… carry a
``"pfec"`` block; ``model_pool.json`` has none) and prints the PFEC table of
``greenflow.platform.energy.report``. With ``pue``/``carbon_intensity_g_per_kwh`` the
records are re-priced (facility energy and carbon recomputed from their device energy);
without, each row keeps the PUE and intensity it was recorded with. ``--prometheus URL``
adds one live row per URL from the text exposition format of a Ray node's metrics export
port (``http://<node>:<metrics-export-port>/metrics``) or of a Prometheus server's
``/federate``: the node meters' energy counters since they started, and the FLOPs
counted by jobs and Serve apps.

**calibrate** measures joules per FLOP of each model of a run's pool on this machine's
CPU: every model runs ``encode_user`` + ``score`` on a realistic batch back to back for a
fixed time under an energy meter (RAPL where readable, else the estimate; the factory says
which, loudly), the idle power measured just before is subtracted, and the rest is
divided by the FLOPs counted from ``model_pool.json``. Written to
``<run-dir>/pfec_calibration.json``.

No Ray here: both run in the calling process (``ray job submit`` runs them on the head).
"""

from __future__ import annotations

import math
import os
import platform
import re
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from greenflow.errors import ConfigError, InputError
from greenflow.platform.energy import (
    DEFAULT_CARBON_INTENSITY_G_PER_KWH,
    DEFAULT_PUE,
    Clock,
    EnergyMeter,
    EstimateConfig,
    PFECConfig,
    PFECRecord,
    calibrate_joules_per_flop,
    collect_pfec_records,
    format_pfec_table,
    make_cpu_meter,
)
from greenflow.platform.energy.measurement import DeviceKind, device_kind
from greenflow.platform.models.features import Context, FeatureSet, make_context
from greenflow.platform.models.pool import ModelPool, load_pool
from greenflow.platform.run_dir import CALIBRATION, RunDir
from greenflow.ray_support.metrics import ENERGY_JOULES, FLOPS, REQUESTS

Log = Callable[[str], None]

# ---------------------------------------------------------------------------------------
# report


def read_run_outputs(run_dir: RunDir) -> dict[str, dict[str, Any]]:
    """Every JSON object file directly under ``run_dir``, parsed, by file name."""
    if not run_dir.exists():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    return run_dir.json_outputs()


def reprice(record: PFECRecord, config: PFECConfig) -> PFECRecord:
    """``record`` with facility energy and carbon recomputed at ``config``'s PUE and intensity.

    Device energy (``it_energy_j``) is what was measured and stays; a carbon schedule the
    run was priced with is replaced by the constant intensity.
    """
    return replace(
        record,
        energy_j=config.facility_energy_j(record.it_energy_j),
        carbon_g=config.carbon_g(record.it_energy_j),
        pue=config.pue,
        carbon_intensity_g_per_kwh=config.carbon_intensity_g_per_kwh,
    )


Sample = tuple[str, dict[str, str], float]  # (series name, labels, value)
_SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> list[Sample]:
    """Samples of a Prometheus text exposition (``/metrics``, ``/federate``); comments skipped."""
    samples: list[Sample] = []
    for line in text.splitlines():
        if line.startswith("#") or not (match := _SERIES.match(line)):
            continue
        name, labels, value = match.groups()
        samples.append((name, dict(_LABEL.findall(labels or "")), float(value)))
    return samples


def live_record(name: str, samples: Iterable[Sample], config: PFECConfig) -> PFECRecord:
    """A PFEC record from node-meter and FLOPs counters (their totals since they started).

    Carbon is recomputed from device energy at ``config`` so that the row's PUE and
    intensity describe it; the meters' own carbon counter used the meters' config.
    """
    energy_j: dict[str, float] = defaultdict(float)
    sources: dict[str, str] = {}
    nodes: set[str] = set()
    flops = requests = 0.0
    energy_samples: list[tuple[dict[str, str], float]] = []
    for series, labels, value in samples:
        if series == ENERGY_JOULES.prometheus_name:
            energy_samples.append((labels, value))
            nodes.add(labels.get("node", ""))
        elif series == FLOPS.prometheus_name:
            flops += value
        elif series == REQUESTS.prometheus_name:
            requests += value
    if not energy_samples:
        raise InputError(
            f"{name}: no {ENERGY_JOULES.prometheus_name} series; are the node meters running "
            "(greenflow.simulators.node_meter.start_node_meters)?"
        )
    for labels, value in energy_samples:
        device = labels.get("device", "?")
        if len(nodes) > 1:  # "cpu:0" of two nodes are two devices
            device = f"{labels.get('node', '?')[:8]}/{device}"
        # A restarted meter leaves a second series (new WorkerId) for the same device: add.
        energy_j[device] += value
        sources[device] = labels.get("source", "estimate")
    it_energy_j = sum(energy_j.values())
    return PFECRecord(
        name=name,
        performance={"requests": requests} if requests else {},
        flops=flops,
        it_energy_j=it_energy_j,
        energy_j=config.facility_energy_j(it_energy_j),
        carbon_g=config.carbon_g(it_energy_j),
        pue=config.pue,
        carbon_intensity_g_per_kwh=config.carbon_intensity_g_per_kwh,
        sources=sources,
        energy_by_device_j=dict(energy_j),
    )


def scrape(url: str, timeout_s: float = 5.0) -> str:
    """The text at ``url`` (``/metrics`` appended when the URL has no path)."""
    if not url.startswith(("http://", "https://")):
        url = f"http://{url}"
    if url.count("/") == 2:  # scheme://host:port only
        url = f"{url}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return str(response.read().decode())
    except OSError as err:  # URLError, refused, timeout
        raise InputError(f"{url}: cannot read metrics ({err})") from err


def _calibration_summary(doc: Mapping[str, Any]) -> str:
    per_model = ", ".join(
        f"{name} {row['joules_per_flop'] * 1e9:.3g}" for name, row in doc["per_model"].items()
    )
    return (
        f"calibration ({CALIBRATION}, {doc.get('created', '?')}): "
        f"{doc['joules_per_flop'] * 1e9:.3g} J/GFLOP on {doc['device']} ({doc['source']}); "
        f"per model J/GFLOP: {per_model}"
    )


def pfec_report(
    run_dir: RunDir,
    *,
    pue: float | None = None,
    carbon_intensity_g_per_kwh: float | None = None,
    prometheus: Sequence[str] = (),
    timeout_s: float = 5.0,
) -> str:
    """The PFEC report of ``run_dir`` (and of live endpoints) as text.

    ``pue``/``carbon_intensity_g_per_kwh`` re-price every row when given; live rows use
    them or the paper's defaults (1.67, 615).
    """
    outputs = read_run_outputs(run_dir)
    records = collect_pfec_records(outputs)
    repriced = pue is not None or carbon_intensity_g_per_kwh is not None
    config = PFECConfig(
        pue=DEFAULT_PUE if pue is None else pue,
        carbon_intensity_g_per_kwh=(
            DEFAULT_CARBON_INTENSITY_G_PER_KWH
            if carbon_intensity_g_per_kwh is None
            else carbon_intensity_g_per_kwh
        ),
    )
    constants = f"PUE {config.pue:g}, {config.carbon_intensity_g_per_kwh:g} gCO2eq/kWh"
    if repriced:
        records = [reprice(r, config) for r in records]
        how = f"re-priced at {constants}"
    else:
        how = "PUE and carbon intensity as recorded with each result"
        if prometheus:
            how += f"; live rows at {constants}"
    for url in prometheus:
        records.append(live_record(f"live {url}", parse_exposition(scrape(url, timeout_s)), config))

    lines = []
    if records:
        lines += [f"PFEC of {run_dir} ({how}):", format_pfec_table(records)]
    else:
        files = ", ".join(outputs) or "none"
        lines.append(
            f"no PFEC results in {run_dir} yet (JSON files: {files}); `greenflow evaluate` "
            "and `greenflow loadtest` write them"
        )
    if CALIBRATION in outputs:
        lines.append(_calibration_summary(outputs[CALIBRATION]))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# calibrate

# Items one request makes each stage score in calibration: recall the whole corpus (None);
# prerank and rank a typical k_1 and k_2 of the default chain space.
DEFAULT_SCORED_ITEMS: dict[str, int | None] = {"recall": None, "prerank": 400, "rank": 50}


@dataclass(frozen=True)
class CalibrationConfig:
    """How long and on what batch each model is measured."""

    seconds: float = 5.0  # workload window per model
    idle_seconds: float = 1.0  # idle window just before it, subtracted; 0 = no subtraction
    batch_size: int = 32  # requests per call
    models: tuple[str, ...] = ()  # empty: every model of the pool
    warmup_calls: int = 2  # allocator and cache warm-up, not measured
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.seconds > 0 and self.idle_seconds >= 0 and self.batch_size >= 1):
            raise ValueError(
                f"need seconds > 0, idle_seconds >= 0, batch_size >= 1; got {self.seconds}, "
                f"{self.idle_seconds}, {self.batch_size}"
            )


def scored_items(stage: str, corpus_size: int) -> int:
    """Items per request a model of ``stage`` scores in calibration."""
    if stage not in DEFAULT_SCORED_ITEMS:
        raise ConfigError(f"no calibration item count for stage {stage!r}")
    n = DEFAULT_SCORED_ITEMS[stage]
    return corpus_size if n is None else n


def make_batch(
    features: FeatureSet, batch_size: int, n_items: int, whole_corpus: bool, seed: int
) -> tuple[Context, torch.Tensor]:
    """A random batch: contexts (B requests, full-length histories) and items (B, n)."""
    rng = np.random.default_rng(seed)
    user_feats = np.zeros((batch_size, len(features.user)), dtype=np.int64)
    for j, spec in enumerate(features.user):
        user_feats[:, j] = rng.integers(0, spec.vocab_size, batch_size)
    # Full-length histories: the FLOPs of model_pool.json were measured at L = max_history.
    history = rng.integers(1, features.num_items + 1, (batch_size, features.max_history))
    ctx = make_context(user_feats, history.astype(np.int64))
    if whole_corpus:
        items = torch.arange(1, n_items + 1).expand(batch_size, n_items)
    else:
        items = torch.as_tensor(rng.integers(1, features.num_items + 1, (batch_size, n_items)))
    return ctx, items  # (B, F_u), (B, L); (B, n)


def cpu_model_name() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def calibrate_pool(
    pool: ModelPool,
    meter: EnergyMeter,
    config: CalibrationConfig,
    pfec: PFECConfig,
    *,
    clock: Clock = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Log = print,
) -> dict[str, Any]:
    """J/FLOP of each pool model on the CPU under ``meter``; the ``pfec_calibration.json`` doc.

    The figure charged to a model is the energy of the CPU packages (``cpu:*``); other
    devices of the meter (DRAM) are reported per model under ``per_device``.
    """
    names = config.models or tuple(pool.entries)
    unknown = [n for n in names if n not in pool.entries]
    if unknown:
        raise ConfigError(f"model(s) {unknown} not in the pool; it has {sorted(pool.entries)}")
    compute = [d for d in meter.devices if device_kind(d) is DeviceKind.CPU]
    if not compute:
        raise ValueError(f"the meter has no CPU device to charge; it has {meter.devices}")
    sources = meter.sources
    source = "+".join(sorted({sources[d].value for d in compute}))
    corpus = pool.features.num_items
    batch = config.batch_size

    per_model: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        entry = pool.entries[name]
        model = entry.model
        n_items = scored_items(model.stage, corpus)
        ctx, items = make_batch(pool.features, batch, n_items, n_items == corpus, config.seed + i)
        flops_per_call = batch * entry.flops.cost(n_items)  # B × (per request + per item × n)
        log(
            f"  {name} ({model.stage}): {batch} requests × {n_items} items, "
            f"{flops_per_call / 1e9:.3g} GFLOP per call, {config.seconds:g} s"
        )
        model.eval()
        with torch.no_grad():
            model.prepare_for_serving()

            def workload(
                model: Any = model, ctx: Context = ctx, items: torch.Tensor = items
            ) -> None:
                model.score(model.encode_user(ctx), items)

            for _ in range(config.warmup_calls):
                workload()
            result = calibrate_joules_per_flop(
                workload,
                flops_per_call,
                meter,
                duration_s=config.seconds,
                idle_s=config.idle_seconds,
                clock=clock,
                sleep=sleep,
            )
        cal = result[compute[0]]  # calls, FLOPs and window are the same for every device
        energy_j = sum(result[d].energy_j for d in compute)
        idle_w = sum(result[d].idle_power_w for d in compute)
        per_model[name] = {
            "joules_per_flop": energy_j / cal.flops,
            "flops_per_s": cal.flops / cal.duration_s if cal.duration_s > 0 else 0.0,
            "energy_j": energy_j,
            "duration_s": cal.duration_s,
            "source": source,
            "stage": model.stage,
            "batch_size": batch,
            "items_per_request": n_items,
            "calls": cal.calls,
            "flops": cal.flops,
            "power_w": energy_j / cal.duration_s if cal.duration_s > 0 else 0.0,
            "idle_power_w": idle_w,
            "per_device": {d: r.to_dict() for d, r in result.items()},
        }

    total_energy_j = sum(r["energy_j"] for r in per_model.values())
    total_flops = sum(r["flops"] for r in per_model.values())
    joules_per_flop = total_energy_j / total_flops
    idle_text = (
        f"minus the idle power measured over {config.idle_seconds:g} s just before"
        if config.idle_seconds > 0
        else "idle power not subtracted"
    )
    return {
        "device": "+".join(compute),
        "hardware": cpu_model_name(),
        "source": source,
        "joules_per_flop": joules_per_flop,
        "per_model": per_model,
        "pue": pfec.pue,
        "carbon_intensity_g_per_kwh": pfec.carbon_intensity_g_per_kwh,
        # what one counted FLOP costs at the facility meter and in the atmosphere
        "facility_joules_per_flop": pfec.facility_energy_j(joules_per_flop),
        "carbon_g_per_gflop": pfec.carbon_g(joules_per_flop * 1e9),
        "method": (
            f"Each model ran encode_user + score on batches of {batch} random requests "
            f"(full-length histories; recall scores the whole corpus of {corpus} items, "
            f"prerank {DEFAULT_SCORED_ITEMS['prerank']}, rank {DEFAULT_SCORED_ITEMS['rank']}) "
            f"back to back for {config.seconds:g} s on the CPU ({torch.get_num_threads()} torch "
            f"threads); the {source} energy of {'+'.join(compute)} over that window, "
            f"{idle_text}, divided by the FLOPs counted from model_pool.json "
            "(B × (flops_per_request + flops_per_item × n) per call); the overall figure is "
            "total energy / total FLOPs over all models."
        ),
        "seconds": config.seconds,
        "idle_seconds": config.idle_seconds,
        "batch_size": batch,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "sources": {d: s.value for d, s in sources.items()},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def format_calibration_table(doc: Mapping[str, Any]) -> str:
    """One row per model: work rate, marginal power, J/GFLOP, source."""
    header = (
        "model",
        "stage",
        "items",
        "calls",
        "GFLOP/s",
        "power W",
        "idle W",
        "J/GFLOP",
        "source",
    )
    rows = [
        (
            name,
            r["stage"],
            str(r["items_per_request"]),
            str(r["calls"]),
            f"{r['flops_per_s'] / 1e9:.3g}",
            f"{r['power_w']:.3g}",
            f"{r['idle_power_w']:.3g}",
            f"{r['joules_per_flop'] * 1e9:.3g}",
            r["source"],
        )
        for name, r in doc["per_model"].items()
    ]
    rows.append(
        ("all", "", "", "", "", "", "", f"{doc['joules_per_flop'] * 1e9:.3g}", doc["source"])
    )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    numeric = range(2, 8)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def run_calibration(
    run_dir: RunDir,
    config: CalibrationConfig,
    pfec: PFECConfig,
    *,
    meter: EnergyMeter | None = None,
    estimate: EstimateConfig | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Load ``run_dir``'s pool, calibrate it, write ``pfec_calibration.json``; returns the doc.

    ``meter`` defaults to the factory's CPU meter (RAPL, else the estimate with
    ``estimate``'s constants); GPUs are left out because the models run on the CPU.
    """
    pool = load_pool(run_dir)
    own_meter = meter is None
    if meter is None:
        meter = make_cpu_meter(estimate=estimate)
    log(f"calibrating J/FLOP of {len(config.models or pool.entries)} model(s) of {run_dir}")
    try:
        doc = calibrate_pool(pool, meter, config, pfec, log=log)
    finally:
        if own_meter:  # a meter passed in belongs to the caller
            meter.close()
    if not all(math.isfinite(r["joules_per_flop"]) for r in doc["per_model"].values()):
        raise ValueError(f"calibration gave a non-finite J/FLOP: {doc['per_model']}")
    run_dir.write_calibration(doc)
    return doc
