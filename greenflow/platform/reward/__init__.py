"""The reward model Q_ij (Lu et al., IJCAI 2023, section 4.2): estimated clicks of every
action chain for every request, monotone in every stage's item scale."""

from greenflow.platform.reward.encoding import ChainEncoding, encode_chains, thermometer_code
from greenflow.platform.reward.loss import LossKind, reward_loss
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

__all__ = [
    "BASES",
    "VARIANTS",
    "BasisName",
    "ChainEncoding",
    "ContextEncoder",
    "LossKind",
    "RewardModel",
    "RewardModelConfig",
    "StageBlock",
    "VariantName",
    "encode_chains",
    "reward_flops_per_request",
    "reward_loss",
    "thermometer_code",
]
