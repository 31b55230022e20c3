"""Chain encoding for the reward model (DESIGN.md §2, "Reward model").

The chains of a space are turned into tensors once and reused for every request:

  models       (J, S) int64    index of m_s in stage s's model pool
  scale_index  (J, S) int64    index of k_s in stage s's sorted item scales K_s
  thermometer  (J, S, B_max)   float32 code t(k_s)_b = 1[k_s >= K_s[b]], padded with 0
                               for b >= B_s (stages with fewer scales than B_max)

One padded tensor rather than per-stage tensors: chains are then sliced and batched in a
single indexing operation, and the padding bits are 0 so any non-negative combination of
them adds nothing; the model reads ``thermometer[:, s, :num_scales[s]]``.

Because the reward model's recurrent state depends only on the models chosen so far (not
on item scales; see ``model.py``), its stage blocks run once per distinct *model prefix*
(m_1..m_s) rather than once per chain. The prefix tree is encoded as well:

  prefix_index   (J, S) int64       which prefix of stage s chain j has
  prefix_parent  per stage (P_s,)   index of the prefix's parent at stage s-1 (0 at s = 1)
  prefix_models  per stage (P_s, s+1) the prefix's model indices m_1..m_s
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from greenflow.platform.chains import Chain, ChainSpace


@dataclass(frozen=True)
class ChainEncoding:
    """Tensors describing J chains of one ``ChainSpace``; see the module docstring."""

    chain_ids: tuple[str, ...]
    pool_sizes: tuple[int, ...]  # |M_s|
    num_scales: tuple[int, ...]  # B_s = |K_s|
    models: torch.Tensor  # (J, S) int64
    scale_index: torch.Tensor  # (J, S) int64
    thermometer: torch.Tensor  # (J, S, B_max) float32
    prefix_index: torch.Tensor  # (J, S) int64
    prefix_parent: tuple[torch.Tensor, ...]  # S x (P_s,) int64
    prefix_models: tuple[torch.Tensor, ...]  # S x (P_s, s+1) int64

    @property
    def num_chains(self) -> int:
        return len(self.chain_ids)

    @property
    def num_stages(self) -> int:
        return len(self.num_scales)

    def stage_codes(self, s: int) -> torch.Tensor:
        """Thermometer codes of stage ``s`` without padding: (J, B_s)."""
        return self.thermometer[:, s, : self.num_scales[s]]

    def to(self, device: torch.device | str) -> ChainEncoding:
        """A copy with every tensor on ``device`` (the model's device is the caller's choice)."""
        return ChainEncoding(
            chain_ids=self.chain_ids,
            pool_sizes=self.pool_sizes,
            num_scales=self.num_scales,
            models=self.models.to(device),
            scale_index=self.scale_index.to(device),
            thermometer=self.thermometer.to(device),
            prefix_index=self.prefix_index.to(device),
            prefix_parent=tuple(p.to(device) for p in self.prefix_parent),
            prefix_models=tuple(p.to(device) for p in self.prefix_models),
        )


def thermometer_code(k: int, scales: Sequence[int]) -> list[float]:
    """t(k)_b = 1[k >= K[b]] for the sorted scales K; raising k only turns bits on."""
    return [1.0 if k >= threshold else 0.0 for threshold in scales]


def encode_chains(space: ChainSpace, chains: Sequence[Chain]) -> ChainEncoding:
    """Encode ``chains`` (any subset of the space, any order); raises ValueError on a chain
    that does not belong to ``space``."""
    if not chains:
        raise ValueError("need at least one chain to encode")
    n_stages = len(space.stages)
    b_max = max(len(stage.item_scales) for stage in space.stages)
    model_pos = [{m: i for i, m in enumerate(stage.models)} for stage in space.stages]
    scale_pos = [{k: i for i, k in enumerate(stage.item_scales)} for stage in space.stages]

    models = torch.zeros(len(chains), n_stages, dtype=torch.int64)
    scale_index = torch.zeros(len(chains), n_stages, dtype=torch.int64)
    thermometer = torch.zeros(len(chains), n_stages, b_max, dtype=torch.float32)
    prefix_index = torch.zeros(len(chains), n_stages, dtype=torch.int64)
    # Distinct model prefixes per stage, in order of first appearance.
    prefixes: list[dict[tuple[int, ...], int]] = [{} for _ in range(n_stages)]

    for j, chain in enumerate(chains):
        if len(chain.actions) != n_stages:
            raise ValueError(
                f"chain {chain.id!r} has {len(chain.actions)} stages; the space has {n_stages}"
            )
        path: tuple[int, ...] = ()
        for s, (stage, action) in enumerate(zip(space.stages, chain.actions, strict=True)):
            if action.model not in model_pos[s] or action.k not in scale_pos[s]:
                raise ValueError(
                    f"chain {chain.id!r}: {action.model}@{action.k} is not in stage "
                    f"{stage.name!r} (models {stage.models}, scales {stage.item_scales})"
                )
            models[j, s] = model_pos[s][action.model]
            scale_index[j, s] = scale_pos[s][action.k]
            code = thermometer_code(action.k, stage.item_scales)
            thermometer[j, s, : len(code)] = torch.tensor(code)
            path = (*path, model_pos[s][action.model])
            prefix_index[j, s] = prefixes[s].setdefault(path, len(prefixes[s]))

    prefix_models = tuple(
        torch.tensor(list(prefixes[s]), dtype=torch.int64).view(len(prefixes[s]), s + 1)
        for s in range(n_stages)
    )
    prefix_parent = tuple(
        torch.zeros(len(prefixes[0]), dtype=torch.int64)
        if s == 0
        else torch.tensor([prefixes[s - 1][p[:-1]] for p in prefixes[s]], dtype=torch.int64)
        for s in range(n_stages)
    )
    return ChainEncoding(
        chain_ids=tuple(c.id for c in chains),
        pool_sizes=tuple(len(stage.models) for stage in space.stages),
        num_scales=tuple(len(stage.item_scales) for stage in space.stages),
        models=models,
        scale_index=scale_index,
        thermometer=thermometer,
        prefix_index=prefix_index,
        prefix_parent=prefix_parent,
        prefix_models=prefix_models,
    )
