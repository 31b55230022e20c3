"""Joules per FLOP of each model of a cascade pool, on this machine's CPU.

Every model runs ``encode_user`` + ``score`` on a realistic batch back to back for a fixed
time under an energy meter (``calibration.calibrate_joules_per_flop``), the idle power
measured just before is subtracted, and the rest is divided by the FLOPs counted from the
pool's measured FLOPs (``model_pool.json``). How many items a request makes a model score
comes from the chain space, by the model's stage (``calibration_items``).
``calibrate_pool`` returns the
``pfec_calibration.json`` document; ``format_calibration_table`` prints it. No Ray, no
files: ``simulators/pfec_jobs.py`` loads the pool and writes the document.
"""

from __future__ import annotations

import itertools
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from greenflow.errors import ConfigError
from greenflow.platform.chains import ChainSpace
from greenflow.platform.energy.base import Clock, EnergyMeter
from greenflow.platform.energy.calibration import calibrate_joules_per_flop
from greenflow.platform.energy.carbon import PFECConfig
from greenflow.platform.energy.measurement import DeviceKind, device_kind
from greenflow.platform.models.features import Context, FeatureSet, make_context
from greenflow.platform.models.pool import ModelPool

Log = Callable[[str], None]


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


def calibration_items(space: ChainSpace, corpus_size: int) -> dict[str, int]:
    """Items per request a model of each stage (by name) scores in calibration.

    The first stage scores the whole corpus; a later stage a typical number of what the
    stage before it passes on: that stage's second-largest item scale (its only one if it
    has one), generous without being the space's extreme. On the default space: recall
    the corpus, prerank 400, rank 50.
    """
    items = {space.stages[0].name: corpus_size}
    for feeder, stage in itertools.pairwise(space.stages):
        scales = feeder.item_scales
        items[stage.name] = scales[-2] if len(scales) > 1 else scales[-1]
    return items


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
    space: ChainSpace,
    *,
    clock: Clock = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Log = print,
) -> dict[str, Any]:
    """J/FLOP of each pool model on the CPU under ``meter``; the ``pfec_calibration.json`` doc.

    Each model scores ``calibration_items(space, N)`` of its stage (the one the pool
    recorded for it, from the chain space it was trained with). The figure charged to a model is the energy of the CPU packages (``cpu:*``); other
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
    stage_items = calibration_items(space, corpus)
    strangers = {n: pool.entries[n].stage for n in names
                 if pool.entries[n].stage not in stage_items}  # fmt: skip
    if strangers:
        raise ConfigError(f"model stage(s) {strangers} are not stages of the chain space "
                          f"{list(stage_items)}: calibrate with the space the pool was trained in")  # fmt: skip

    per_model: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        entry = pool.entries[name]
        model = entry.model
        n_items = stage_items[entry.stage]
        ctx, items = make_batch(pool.features, batch, n_items, n_items == corpus, config.seed + i)
        flops_per_call = batch * entry.flops.cost(n_items)  # B × (per request + per item × n)
        log(
            f"  {name} ({entry.stage}): {batch} requests × {n_items} items, "
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
            "stage": entry.stage,
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
    first, *later = stage_items.items()
    scored = ", ".join([f"{first[0]} scores the whole corpus of {corpus} items",
                        *(f"{stage} {n}" for stage, n in later)])  # fmt: skip
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
            f"(full-length histories; {scored}) "
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
