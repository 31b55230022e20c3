"""Typed output documents: the JSON files of DESIGN.md §5 as frozen dataclasses.

Each has ``from_json(d)`` (checks the contract's required keys, raising ``InputError``
with the file and key; keeps every other key in ``extra``) and ``to_json()`` (the same
keys, values and order back). ``RunDir`` reads and writes them; producers build them.
"""

from greenflow.platform.documents.base import JsonDocument
from greenflow.platform.documents.offline import (
    METHODS,
    ChainCurvePoint,
    MethodCurve,
    OfflineEvalDoc,
)
from greenflow.platform.documents.online import (
    BenchServingDoc,
    LatencyMs,
    LoadtestDoc,
    PolicyRepeats,
    RepeatsSummary,
    ServingSweep,
    Window,
)
from greenflow.platform.documents.training import (
    ChainCost,
    FieldRce,
    ModelEntry,
    ModelPoolDoc,
    RewardModelDoc,
    RewardVariant,
    SimulationDoc,
    head_quality_of,
)

__all__ = [
    "METHODS",
    "BenchServingDoc",
    "ChainCost",
    "ChainCurvePoint",
    "FieldRce",
    "JsonDocument",
    "LatencyMs",
    "LoadtestDoc",
    "MethodCurve",
    "ModelEntry",
    "ModelPoolDoc",
    "OfflineEvalDoc",
    "PolicyRepeats",
    "RepeatsSummary",
    "RewardModelDoc",
    "RewardVariant",
    "ServingSweep",
    "SimulationDoc",
    "Window",
    "head_quality_of",
]
