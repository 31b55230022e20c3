"""``greenflow pfec report`` and ``greenflow pfec calibrate``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from greenflow.cli import common
from greenflow.cli.common import Log
from greenflow.config import Config
from greenflow.platform.run_dir import CALIBRATION

if TYPE_CHECKING:
    from greenflow.platform.energy import EstimateConfig, PFECConfig
    from greenflow.platform.energy.pool_calibration import CalibrationConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    pfec = sub.add_parser("pfec", help="PFEC (performance, FLOPs, energy, carbon) of a run")
    pfec_sub = pfec.add_subparsers(dest="pfec_command", required=True, metavar="ACTION")
    report = pfec_sub.add_parser(
        "report", help="print the PFEC table of the run directory's results (exit 0 if none yet)"
    )
    common.add_run_options(report)
    report.add_argument(
        "--pue",
        type=float,
        default=None,
        help="re-price every row at this PUE (default: as recorded; live rows 1.67)",
    )
    report.add_argument(
        "--carbon-intensity",
        type=float,
        default=None,
        metavar="G_PER_KWH",
        help="re-price at this gCO2eq/kWh (default: as recorded; live rows 615)",
    )
    report.add_argument(
        "--prometheus",
        action="append",
        metavar="URL",
        help="add a live row from a metrics endpoint, e.g. a Ray node's "
        "http://127.0.0.1:8080/metrics (repeatable)",
    )
    report.set_defaults(func=_report_command)
    calibrate = pfec_sub.add_parser(
        "calibrate", help="measure joules per FLOP of each pool model on this CPU"
    )
    common.add_run_options(calibrate)
    calibrate.add_argument(
        "--seconds", type=float, default=5.0, help="workload time per model (default 5)"
    )
    calibrate.add_argument(
        "--idle-seconds",
        type=float,
        default=1.0,
        help="idle baseline measured before each model and subtracted (default 1; 0: none)",
    )
    calibrate.add_argument("--batch-size", type=int, default=32, help="requests per call")
    calibrate.add_argument(
        "--model", action="append", help="calibrate only this model (repeatable)"
    )
    calibrate.add_argument("--pue", type=float, default=1.67, help="PUE recorded (default 1.67)")
    calibrate.add_argument(
        "--carbon-intensity",
        type=float,
        default=615.0,
        metavar="G_PER_KWH",
        help="gCO2eq/kWh recorded (default 615)",
    )
    calibrate.add_argument(
        "--cpu-tdp-w",
        type=float,
        default=None,
        help="CPU TDP in W for the estimate when RAPL is unreadable "
        "(default 12 W per physical core)",
    )
    calibrate.set_defaults(func=_calibrate_command)


def report(
    config: Config,
    pue: float | None = None,
    carbon_intensity: float | None = None,
    prometheus: Sequence[str] = (),
    log: Log = common.log,
) -> None:
    """Print the PFEC table of the run (re-priced when ``pue``/``carbon_intensity`` are given)."""
    from greenflow.simulators.pfec_jobs import pfec_report

    # Nothing to report yet is not an error: the report says so and exits 0.
    log(pfec_report(config.run_dir, pue=pue, carbon_intensity_g_per_kwh=carbon_intensity,
                    prometheus=prometheus))  # fmt: skip


def calibrate(
    config: Config,
    calibration: CalibrationConfig,
    pfec: PFECConfig,
    estimate: EstimateConfig,
    log: Log = common.log,
) -> None:
    """Measure joules per FLOP of each pool model; print the table."""
    from greenflow.platform.energy.pool_calibration import format_calibration_table
    from greenflow.simulators.pfec_jobs import run_calibration

    doc = run_calibration(config.run_dir, calibration, pfec, config.chains, estimate=estimate,
                          log=log)  # fmt: skip
    log(
        f"\nJ/FLOP on {doc['device']} ({doc['hardware']}, source {doc['source']}) "
        f"-> {config.run_dir.show(CALIBRATION)}"
    )
    log(format_calibration_table(doc))
    log(
        f"PUE {doc['pue']:g}, carbon intensity {doc['carbon_intensity_g_per_kwh']:g} gCO2eq/kWh: "
        f"{doc['carbon_g_per_gflop']:.3g} gCO2eq per GFLOP"
    )


def _report_command(args: argparse.Namespace) -> None:
    report(common.load(args), args.pue, args.carbon_intensity, args.prometheus or ())


def _calibrate_command(args: argparse.Namespace) -> None:
    from greenflow.platform.energy import EstimateConfig, PFECConfig
    from greenflow.platform.energy.pool_calibration import CalibrationConfig

    config = common.load(args)
    calibration = common.from_options(
        CalibrationConfig,
        seconds=args.seconds,
        idle_seconds=args.idle_seconds,
        batch_size=args.batch_size,
        models=tuple(args.model or ()),
    )
    pfec = common.from_options(
        PFECConfig, pue=args.pue, carbon_intensity_g_per_kwh=args.carbon_intensity
    )
    estimate = common.from_options(EstimateConfig, cpu_tdp_w=args.cpu_tdp_w)
    calibrate(config, calibration, pfec, estimate)
