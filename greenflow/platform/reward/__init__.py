"""The reward model Q_ij (Lu et al., IJCAI 2023, section 4.2): estimated clicks of every
action chain for every request, monotone in every stage's item scale; its training,
metrics (MAE, Field-RCE) and storage."""

from greenflow.platform.reward.data import RewardData, SimulatedChains, load_reward_data
from greenflow.platform.reward.encoding import ChainEncoding, encode_chains, thermometer_code
from greenflow.platform.reward.loss import LossKind, reward_loss
from greenflow.platform.reward.metrics import (
    FieldRCE,
    activity_bucket_edges,
    bucketize,
    field_rce,
    reward_metrics,
)
from greenflow.platform.reward.model import (
    BASES,
    VARIANTS,
    BasisName,
    ContextEncoder,
    RewardModel,
    RewardModelConfig,
    StageBlock,
    VariantName,
    reward_flops_per_request,
)
from greenflow.platform.reward.store import (
    LoadedRewardModel,
    load_reward_model,
    predict_rewards,
)
from greenflow.platform.reward.training import RewardTrainConfig, train_reward_model

__all__ = [
    "BASES",
    "VARIANTS",
    "BasisName",
    "ChainEncoding",
    "ContextEncoder",
    "FieldRCE",
    "LoadedRewardModel",
    "LossKind",
    "RewardData",
    "RewardModel",
    "RewardModelConfig",
    "RewardTrainConfig",
    "SimulatedChains",
    "StageBlock",
    "VariantName",
    "activity_bucket_edges",
    "bucketize",
    "encode_chains",
    "field_rce",
    "load_reward_data",
    "load_reward_model",
    "predict_rewards",
    "reward_flops_per_request",
    "reward_loss",
    "reward_metrics",
    "thermometer_code",
    "train_reward_model",
]
