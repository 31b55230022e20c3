"""Small feature sets and contexts for model tests."""

from __future__ import annotations

import numpy as np
import pytest

from greenflow.platform.models.features import FeatureSet, FeatureSpec, make_context, pad_histories


@pytest.fixture()
def features() -> FeatureSet:
    return FeatureSet(
        user=(FeatureSpec("age", 5), FeatureSpec("gender", 3)),
        item=(FeatureSpec("genre", 4),),
        num_items=30,
        max_history=6,
    )


@pytest.fixture()
def context(features: FeatureSet) -> dict:
    histories = [[1, 2, 3], [], [4] * 9]  # short, empty, longer than max_history
    user_feats = np.array([[1, 2], [0, 0], [4, 1]], dtype=np.int64)
    return make_context(user_feats, pad_histories(histories, features.max_history))
