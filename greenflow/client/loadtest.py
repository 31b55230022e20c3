"""``greenflow loadtest``: replay evaluation requests against the Serve HTTP endpoint with
a rate profile (issue #7 item 5), and report what each policy spent and earned.

An HTTP client, not a Ray job: no Ray import, nothing runs at import time. The requests
are the evaluation split of the request log (``load_replay_requests``); ``schedule.py``
says when each is sent, ``http.py`` sends them open loop and reads the allocator's
windows, ``document.py`` turns what came back into the ``loadtest.json`` document
(DESIGN.md §5), ``write_loadtest`` writes it with ``loadtest.png`` (``plot.py``, the
paper's Figure 5 analogue) and ``table.py`` prints the online analogue of Table 5.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

from greenflow.client.config import LoadtestConfig, Log
from greenflow.client.http import run_loadtest
from greenflow.client.plot import plot_loadtest
from greenflow.platform.documents import LoadtestDoc, RepeatsSummary
from greenflow.platform.run_dir import LOADTEST, RunDir

if TYPE_CHECKING:
    import pandas as pd

    from greenflow.platform.energy.carbon import PFECConfig


def load_replay_requests(run_dir: RunDir) -> pd.DataFrame:
    """The evaluation split of ``<run_dir>/data``'s request log, the rows a load test sends."""
    from greenflow.platform.data.store import load_requests

    return load_requests(run_dir.data, "eval")


def write_loadtest(
    run_dir: RunDir,
    docs: Mapping[str, LoadtestDoc],
    horizon: str,
    repeats: RepeatsSummary | None = None,
) -> tuple[str, str]:
    """Write ``loadtest.json`` (the greenflow doc — else the first — at top level, plus
    ``"policies"``: every doc, with several policies ``"pfec"``: policy → record, the
    ground-truth ``horizon`` the clicks counted, and ``"repeats"``: the summary of repeated
    runs when given) atomically, and ``loadtest.png``; returns where both went."""
    if not docs:
        raise ValueError("no load-test documents to write")
    main = docs.get("greenflow") or next(iter(docs.values()))
    # one PFEC record per policy with several, so `greenflow pfec report` lists each
    pfec = {name: d.pfec for name, d in docs.items() if d.pfec} if len(docs) > 1 else main.pfec
    out = dataclasses.replace(main, policies=dict(docs), horizon=horizon, repeats=repeats,
                              pfec=pfec)  # fmt: skip
    run_dir.write_loadtest(out)
    return run_dir.show(LOADTEST), plot_loadtest(docs, run_dir)


def replay_running_app(
    config: LoadtestConfig, run_dir: RunDir, log: Log = print, pfec: PFECConfig | None = None
) -> tuple[LoadtestDoc, tuple[str, str]]:
    """``greenflow loadtest --url``: replay ``run_dir``'s evaluation requests against the
    app already serving at ``config.url``, write loadtest.json/.png with its document
    (the dataset's ground-truth horizon beside it); returns the document and both paths.

    The document's ``"pfec"`` is computed as in the in-process comparison
    (``platform/energy/online.py``): the answered requests' FLOPs (plus GreenFlow's
    reward-model FLOPs) × ``run_dir``'s calibrated J/FLOP × PUE (``pfec``, default the
    paper's). A run directory without a calibration fails before any request is sent."""
    from greenflow.platform.data.store import read_horizon
    from greenflow.platform.energy.carbon import PFECConfig
    from greenflow.platform.energy.online import online_pfec, read_calibration

    read_calibration(run_dir)  # fail now rather than after the whole replay
    doc = run_loadtest(config, load_replay_requests(run_dir), log).doc()
    doc = dataclasses.replace(doc, pfec=online_pfec(doc, run_dir, pfec or PFECConfig()))
    horizon = read_horizon(run_dir.data)
    return doc, write_loadtest(run_dir, {doc.policy: doc}, horizon)


__all__ = [
    "load_replay_requests",
    "replay_running_app",
    "write_loadtest",
]
