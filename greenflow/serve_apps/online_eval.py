"""The online experiment: each policy deployed in turn on the same cluster and budget,
the same requests replayed at the same rate profile, and the online PFEC table (the
paper's Table 5 analogue) and Figure 5 (spend against budget through a traffic spike).

PFEC of a run: FLOPs are what the app computed — the cascade FLOPs of every answered
request plus the allocator's reward-model FLOPs; energy is an *estimate*, those FLOPs ×
the joules per FLOP measured by ``greenflow pfec calibrate`` × PUE, and carbon that ×
the carbon intensity; latency percentiles and the allocator's FLOPs overhead ride along
(``platform/energy/online.py``, which ``greenflow loadtest --url`` uses too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from greenflow.client.config import LoadtestConfig
from greenflow.client.http import run_loadtest
from greenflow.client.loadtest import load_replay_requests, write_loadtest
from greenflow.client.table import format_loadtest_table
from greenflow.errors import ConfigError
from greenflow.platform.data.store import read_horizon
from greenflow.platform.documents import LoadtestDoc
from greenflow.platform.energy.carbon import PFECConfig
from greenflow.platform.energy.online import online_pfec
from greenflow.platform.online_repeats import format_repeats, repeats_summary
from greenflow.platform.run_dir import RunDir
from greenflow.platform.traffic import TrafficProfile
from greenflow.serve_apps.app import AppArgs, deploy, teardown

Log = Callable[[str], None]


def run_online_comparison(
    run_dir: RunDir,
    policies: Sequence[str],
    profile: TrafficProfile,
    *,
    port: int = 8000,
    app_overrides: dict[str, Any] | None = None,
    max_requests: int = 5000,
    pfec: PFECConfig | None = None,
    repeats: int = 1,
    announce: bool = False,
    log: Log = print,
) -> dict[str, LoadtestDoc]:
    """Deploy, replay and tear down each policy in turn, ``repeats`` times over the same
    schedule (the policy order alternates between repeats, so drift of the machine favours
    none); writes loadtest.json/.png with the last repeat's documents and, with several
    repeats, their summary (``"repeats"``). ``announce``: each run first PUTs its traffic
    profile to ``/allocator/forecast`` (every policy gets it; only GreenFlow's λ uses it).

    Every policy gets the same budget: ``budget_fraction`` (default 0.5) of everyone-full
    at the profile's base rate, unless ``app_overrides`` sets one. Needs a Ray cluster.
    """
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    pfec = pfec or PFECConfig()
    requests = load_replay_requests(run_dir)
    runs: list[dict[str, LoadtestDoc]] = []
    for r in range(repeats):
        order = list(policies) if r % 2 == 0 else list(reversed(policies))
        docs: dict[str, LoadtestDoc] = {}
        for policy in order:
            args = AppArgs.model_validate({
                "run_dir": run_dir.portable, "policy": policy,
                "expected_rate_rps": profile.base_rate, **(app_overrides or {}),
            })  # fmt: skip
            log(f"-- {policy}{f' (repeat {r + 1}/{repeats})' if repeats > 1 else ''}: "
                f"deploying the Serve app on 127.0.0.1:{port}")  # fmt: skip
            url = deploy(args, port=port)
            try:
                config = LoadtestConfig(url=url, profile=profile, max_requests=max_requests,
                                        announce=announce)  # fmt: skip
                run = run_loadtest(config, requests, log)
            finally:
                teardown(args.app_name)
            doc = run.doc(policy=policy)
            docs[policy] = dataclasses.replace(doc, pfec=online_pfec(doc, run_dir, pfec))
        runs.append({name: docs[name] for name in policies})
    docs = runs[-1]
    summary = repeats_summary(runs) if repeats > 1 else None
    json_path, png_path = write_loadtest(run_dir, docs, read_horizon(run_dir.data),
                                         repeats=summary)  # fmt: skip
    log("\n" + format_loadtest_table(docs))
    if summary is not None:
        log(format_repeats(summary))
    log(f"-> {json_path}, {png_path}")
    return docs
