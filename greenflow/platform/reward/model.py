"""GreenFlow reward model: recursive multi-stage, multi-basis, monotone in item scales.

Lu et al., "GreenFlow: A Computation Allocation Framework for Building Environmentally
Sound Recommendation System", IJCAI 2023, section 4.2 (DESIGN.md §2, "Reward model").

Q_ij estimates the clicks (a Poisson rate, >= 0) that request i gets from chain j:

  h_0 = g(x)                                    context: user fields, pooled history, log1p(activity)
  for s = 1..S:  (w_s, A_s, h_s) = f_s(h_{s-1}, e(m_s))
                 z_s  = A_s t(k_s)              A_s >= 0 (softplus), t = thermometer code
                 Δr_s = Σ_b w_{s,b} φ_b(z_{s,b}) w_s >= 0 (softplus), φ_b increasing, concave, φ(0)=0
  Q = Σ_s Δr_s

Monotone by construction in every k_s. Raising k_s only turns thermometer bits on; the bits
reach z_s through non-negative weights only, φ_b is increasing and w_s >= 0, so Δr_s
cannot decrease. The subtle part is the recursion: h_s feeds every later stage through
unconstrained weights, so if h_s depended on k_s, a larger k_s could lower a later Δr.
We therefore make the state depend on the context and the *models* only — f_s reads
(h_{s-1}, e(m_s)) and never the scale codes — so k_s influences Q through Δr_s alone. The
cost is that, given the models, the stage uplifts are additive in the item scales (no
cross-stage interaction of k_1 and k_2); the alternative, a separate non-negative state
carried through non-negative weights into every later z, keeps monotonicity but only
adds substitute-type (concave-sum) interactions, so it was not worth its complexity.

The same choice makes scoring cheap: the blocks run once per distinct model prefix
(m_1..m_s) and only the tiny per-chain part (A_s t(k_s), φ, w) runs for all J chains, so
all chains of a request are scored in one batched pass from one h_0.

Ablations (``VARIANTS``): ``recursive=False`` is one block over h_0 and all stages' model
embeddings, with z from the concatenated thermometer codes; ``multi_basis=False`` replaces
the mixture with one linear head Δr = A t(k), A >= 0 (still monotone, no concave basis).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from greenflow.platform.chains import ChainSpace
from greenflow.platform.models.base import FieldEmbedding, masked_mean, mlp
from greenflow.platform.models.features import Context, FeatureSet
from greenflow.platform.models.flops import count_flops
from greenflow.platform.reward.encoding import ChainEncoding

BasisName = Literal["log1p", "sqrt", "exp", "frac"]
VariantName = Literal["full", "no-recursion", "no-basis", "plain"]

# φ with φ(0) = 0, increasing and concave on z >= 0. Written with ops the FLOPs counter
# counts (1 - exp(-z) rather than -expm1(-z)) so the overhead figure is honest.
BASES: dict[BasisName, Callable[[torch.Tensor], torch.Tensor]] = {
    "log1p": torch.log1p,
    "sqrt": lambda z: torch.sqrt(1 + z) - 1,
    "exp": lambda z: 1 - torch.exp(-z),
    "frac": lambda z: z / (1 + z),
}

CONTEXT_KEYS = ("user_feats", "history", "activity")


@dataclass(frozen=True)
class RewardModelConfig:
    """Sizes and switches of the reward model (defaults keep it well under 1% of a cascade)."""

    user_embed_dim: int = 4
    item_embed_dim: int = 8
    model_embed_dim: int = 4
    context_hidden: int = 32
    state_dim: int = 16
    block_hidden: int = 32
    bases: tuple[BasisName, ...] = ("log1p", "sqrt", "exp", "frac")
    units_per_basis: int = 2
    recursive: bool = True
    multi_basis: bool = True

    def __post_init__(self) -> None:
        sizes = dataclasses.asdict(self)
        small = [
            n for n, v in sizes.items() if isinstance(v, int) and not isinstance(v, bool) and v < 1
        ]
        if small:
            raise ValueError(f"sizes must be >= 1: {small}")
        unknown = [b for b in self.bases if b not in BASES]
        if not self.bases or unknown or len(set(self.bases)) != len(self.bases):
            raise ValueError(
                f"bases must be distinct names from {list(get_args(BasisName))}; got {self.bases}"
            )

    @property
    def variant(self) -> VariantName:
        """The ablation this config is (DESIGN.md §5 ``reward_model.json`` keys)."""
        for name, cfg in VARIANTS.items():
            if (cfg.recursive, cfg.multi_basis) == (self.recursive, self.multi_basis):
                return name
        raise AssertionError("VARIANTS covers every switch combination")

    @property
    def units(self) -> int:
        """Mixture components per block (1 for the linear head)."""
        return len(self.bases) * self.units_per_basis if self.multi_basis else 1


# The ablations of section 4.2, one explicit mapping. Sizes can be changed per variant with
# ``dataclasses.replace(VARIANTS[name], state_dim=...)``.
VARIANTS: dict[VariantName, RewardModelConfig] = {
    "full": RewardModelConfig(recursive=True, multi_basis=True),
    "no-recursion": RewardModelConfig(recursive=False, multi_basis=True),
    "no-basis": RewardModelConfig(recursive=True, multi_basis=False),
    "plain": RewardModelConfig(recursive=False, multi_basis=False),
}


class ContextEncoder(nn.Module):
    """g(x): user field embeddings + mean history item embedding + log1p(activity) -> h_0."""

    def __init__(self, features: FeatureSet, config: RewardModelConfig) -> None:
        super().__init__()
        self.user_fields = FieldEmbedding(
            [f.vocab_size for f in features.user], config.user_embed_dim
        )
        # Own item table: the reward model is trained apart from the cascade models.
        self.items = nn.Embedding(features.num_items + 1, config.item_embed_dim, padding_idx=0)
        in_dim = self.user_fields.out_dim + config.item_embed_dim + 1
        self.net = mlp([in_dim, config.context_hidden, config.state_dim])

    def forward(self, ctx: Context) -> torch.Tensor:
        missing = [k for k in CONTEXT_KEYS if k not in ctx]
        if missing:
            raise ValueError(f"context lacks {missing}; needs {list(CONTEXT_KEYS)}")
        user, hist, activity = ctx["user_feats"], ctx["history"], ctx["activity"]
        if (
            user.ndim != 2
            or hist.ndim != 2
            or activity.shape != (len(user),)
            or len(hist) != len(user)
        ):
            raise ValueError(
                f"context shapes mismatch: user_feats {tuple(user.shape)}, history "
                f"{tuple(hist.shape)}, activity {tuple(activity.shape)}; want (B, F_u), (B, L), (B,)"
            )
        pooled = masked_mean(self.items(hist), hist > 0)  # (B, e_i)
        # Activity is heavy-tailed (a few to thousands of interactions): log1p tames it.
        act = torch.log1p(activity.to(pooled.dtype).clamp_min(0)).unsqueeze(-1)  # (B, 1)
        return self.net(torch.cat([self.user_fields(user), pooled, act], -1))  # (B, H)


class StageBlock(nn.Module):
    """f_s: (h_{s-1}, e(m_s)) -> code weights A >= 0, mixture weights w >= 0, next state.

    Never sees the item-scale codes, which is what keeps Q monotone (module docstring).
    """

    def __init__(
        self, in_dim: int, hidden: int, units: int, codes: int, state_dim: int | None, mixture: bool
    ) -> None:
        super().__init__()
        self.units, self.codes = units, codes
        self.trunk = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.code_weights = nn.Linear(hidden, units * codes)
        self.mix_weights = nn.Linear(hidden, units) if mixture else None
        self.state = nn.Linear(hidden, state_dim) if state_dim is not None else None
        # Start near Q ~ 1 click (softplus(-2) ~ 0.13 per bit and per weight), the scale of
        # the targets, so early Poisson-loss gradients stay moderate.
        for head in (self.code_weights, self.mix_weights):
            if head is not None:
                nn.init.constant_(head.bias, -2.0)

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        a = self.trunk(x)  # (B, P, hidden)
        code_w = F.softplus(self.code_weights(a)).unflatten(-1, (self.units, self.codes))
        mix_w = F.softplus(self.mix_weights(a)) if self.mix_weights is not None else None
        state = self.state(a) if self.state is not None else None
        return code_w, mix_w, state  # (B, P, U, C), (B, P, U) | None, (B, P, H) | None


class RewardModel(nn.Module):
    """Q (B, J) >= 0: estimated clicks of every encoded chain for every request."""

    paper = "Lu et al., IJCAI 2023, section 4.2"

    def __init__(
        self, features: FeatureSet, space: ChainSpace, config: RewardModelConfig = VARIANTS["full"]
    ) -> None:
        super().__init__()
        self.config = config
        self.pool_sizes = tuple(len(stage.models) for stage in space.stages)
        self.num_scales = tuple(len(stage.item_scales) for stage in space.stages)
        c = config
        self.context = ContextEncoder(features, c)
        self.model_emb = nn.ModuleList(nn.Embedding(n, c.model_embed_dim) for n in self.pool_sizes)
        n_stages = len(self.pool_sizes)
        if c.recursive:
            self.blocks = nn.ModuleList(
                StageBlock(
                    c.state_dim + c.model_embed_dim,
                    c.block_hidden,
                    c.units,
                    self.num_scales[s],
                    # The last stage's state would feed nothing: skip its cost.
                    c.state_dim if s < n_stages - 1 else None,
                    c.multi_basis,
                )
                for s in range(n_stages)
            )
        else:
            self.blocks = nn.ModuleList(
                [
                    StageBlock(
                        c.state_dim + n_stages * c.model_embed_dim,
                        c.block_hidden,
                        c.units,
                        sum(self.num_scales),
                        None,
                        c.multi_basis,
                    )
                ]
            )

    def forward(self, ctx: Context, chains: ChainEncoding) -> torch.Tensor:
        """Q (B, J) for the B requests of ``ctx`` and the J chains of ``chains``; one pass."""
        if chains.pool_sizes != self.pool_sizes or chains.num_scales != self.num_scales:
            raise ValueError(
                f"chain encoding (pools {chains.pool_sizes}, scales {chains.num_scales}) does not "
                f"match the model (pools {self.pool_sizes}, scales {self.num_scales})"
            )
        h0 = self.context(ctx)  # (B, H), once per request for all chains
        if self.config.recursive:
            return self._recursive(h0, chains)
        return self._flat(h0, chains)

    def _recursive(self, h0: torch.Tensor, chains: ChainEncoding) -> torch.Tensor:
        batch = h0.shape[0]
        h = h0.unsqueeze(1)  # (B, P_0 = 1, H)
        q: torch.Tensor | None = None
        for s, block in enumerate(self.blocks):
            h_prev = h[:, chains.prefix_parent[s]]  # (B, P_s, H)
            e = self.model_emb[s](chains.prefix_models[s][:, -1])  # (P_s, E)
            code_w, mix_w, dh = block(torch.cat([h_prev, e.expand(batch, -1, -1)], -1))
            uplift = self._uplift(code_w, mix_w, chains.prefix_index[:, s], chains.stage_codes(s))
            q = uplift if q is None else q + uplift  # (B, J)
            if dh is not None:
                h = h_prev + dh  # residual: the context reaches late stages undiluted
        assert q is not None  # a ChainSpace has at least one stage
        return q

    def _flat(self, h0: torch.Tensor, chains: ChainEncoding) -> torch.Tensor:
        paths = chains.prefix_models[-1]  # (P, S): distinct model tuples
        e = torch.cat([emb(paths[:, s]) for s, emb in enumerate(self.model_emb)], -1)  # (P, S*E)
        batch, n_paths = h0.shape[0], len(paths)
        x = torch.cat([h0.unsqueeze(1).expand(-1, n_paths, -1), e.expand(batch, -1, -1)], -1)
        code_w, mix_w, _ = self.blocks[0](x)
        codes = torch.cat([chains.stage_codes(s) for s in range(chains.num_stages)], -1)
        return self._uplift(code_w, mix_w, chains.prefix_index[:, -1], codes)  # (B, J)

    def _uplift(
        self,
        code_w: torch.Tensor,  # (B, P, U, C) >= 0
        mix_w: torch.Tensor | None,  # (B, P, U) >= 0
        prefix: torch.Tensor,  # (J,) each chain's prefix
        codes: torch.Tensor,  # (J, C) thermometer bits
    ) -> torch.Tensor:
        """Δr (B, J): the only place the scale codes enter, through A >= 0 and w >= 0."""
        z = (code_w[:, prefix] * codes.to(code_w.dtype)[:, None, :]).sum(-1)  # (B, J, U) >= 0
        if mix_w is None:
            return z.squeeze(-1)  # linear head: U = 1, Δr = A·t(k)
        groups = z.unflatten(-1, (len(self.config.bases), self.config.units_per_basis))
        phi = torch.stack(
            [BASES[name](groups[..., b, :]) for b, name in enumerate(self.config.bases)], -2
        ).flatten(-2)  # (B, J, U)
        return (mix_w[:, prefix] * phi).sum(-1)


def reward_flops_per_request(model: RewardModel, chains: ChainEncoding, ctx: Context) -> int:
    """FLOPs of scoring all of ``chains`` for one request (B = 1), the allocator's overhead.

    Counted with ``count_flops`` (``FLOPS_CONVENTION``); pass a full-length history, which
    is what a batched model computes for every request.
    """
    if ctx["history"].shape[0] != 1:
        raise ValueError(f"measure on one request; got batch {tuple(ctx['history'].shape)}")
    was_training = model.training
    model.eval()
    try:
        count, _ = count_flops(model, ctx, chains)
    finally:
        model.train(was_training)
    return count.total
