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

**calibrate** loads the run's pool, measures joules per FLOP of each model on this
machine's CPU (``greenflow.platform.energy.pool_calibration``: RAPL where readable, else
the estimate; the factory says which, loudly) and writes
``<run-dir>/pfec_calibration.json``.

No Ray here: both run in the calling process (``ray job submit`` runs them on the head).
"""

from __future__ import annotations

import math
import re
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from greenflow.errors import InputError
from greenflow.platform.chains import ChainSpace
from greenflow.platform.energy import (
    DEFAULT_CARBON_INTENSITY_G_PER_KWH,
    DEFAULT_PUE,
    EnergyMeter,
    EstimateConfig,
    PFECConfig,
    PFECRecord,
    collect_pfec_records,
    format_pfec_table,
    make_cpu_meter,
)
from greenflow.platform.energy.pool_calibration import CalibrationConfig, calibrate_pool
from greenflow.platform.models.pool import load_pool
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
# calibrate (the calibration itself: platform/energy/pool_calibration.py)


def run_calibration(
    run_dir: RunDir,
    config: CalibrationConfig,
    pfec: PFECConfig,
    space: ChainSpace,
    *,
    meter: EnergyMeter | None = None,
    estimate: EstimateConfig | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Load ``run_dir``'s pool, calibrate it, write ``pfec_calibration.json``; returns the doc.

    ``space`` is the chain space the pool was trained in: it says how many items each
    stage's models score (``pool_calibration.calibration_items``).

    ``meter`` defaults to the factory's CPU meter (RAPL, else the estimate with
    ``estimate``'s constants); GPUs are left out because the models run on the CPU.
    """
    pool = load_pool(run_dir)
    own_meter = meter is None
    if meter is None:
        meter = make_cpu_meter(estimate=estimate)
    log(f"calibrating J/FLOP of {len(config.models or pool.entries)} model(s) of {run_dir}")
    try:
        doc = calibrate_pool(pool, meter, config, pfec, space, log=log)
    finally:
        if own_meter:  # a meter passed in belongs to the caller
            meter.close()
    if not all(math.isfinite(r["joules_per_flop"]) for r in doc["per_model"].values()):
        raise ValueError(f"calibration gave a non-finite J/FLOP: {doc['per_model']}")
    run_dir.write_calibration(doc)
    return doc
