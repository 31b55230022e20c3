"""DIEN: Deep Interest Evolution Network, the second ranking model.

Zhou et al., "Deep Interest Evolution Network for Click-Through Rate Prediction", AAAI 2019.

Interest extractor: a GRU over the history embeddings (once per request).
Interest evolving: for each candidate, attention a_l = softmax_l(s_l · W c) over the
newest ``evolve_steps`` extractor states, and an AUGRU (GRU whose update gate is scaled
by a_l) runs over them; its last hidden state is the candidate-specific evolved interest.
The paper's evolving layer tracks the interests *drifting* towards the candidate, which
the recent steps carry; running it over the newest 20 of 50 steps keeps the per-item
recurrence (the cost that scales with the items scored) at 2/5, while the extractor still
reads the whole history once per request. As in DIN, the
candidate's item-to-item features (``item_graph.py``) feed the tower and a wide logit. The AUGRU's
input projections do not depend on the candidate, so they are computed once per
request; only the recurrent part runs per candidate. Padded history steps get a_l = 0,
which leaves the hidden state unchanged. (The paper's auxiliary next-click loss is not
used: it needs sampled negative sequences and mainly speeds up convergence.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from greenflow.platform.models.base import (
    ATTENTION_ITEM_CHUNK,
    CascadeModel,
    FieldEmbedding,
    GraphHead,
    ItemEmbedding,
    State,
    masked_mean,
    mlp,
    tower_logits,
)
from greenflow.platform.models.features import Context, FeatureSet
from greenflow.platform.models.scripted import ExactScript


@dataclass(frozen=True)
class DIENConfig:
    embed_dim: int = 16
    gru_hidden: int = 24
    evolve_steps: int = 20  # newest extractor states the per-candidate AUGRU runs over
    hidden: tuple[int, ...] = (80, 40)
    graph_top_m: int = 200  # neighbours per item of the item-to-item graph; 0: no graph


class DIEN(CascadeModel):
    paper = "Zhou et al., AAAI 2019"
    item_chunk = ATTENTION_ITEM_CHUNK

    def __init__(self, features: FeatureSet, config: DIENConfig = DIENConfig()) -> None:
        super().__init__(features)
        self.config = config
        e, g = config.embed_dim, config.gru_hidden
        self.item_emb = ItemEmbedding(features, e, e)
        d = self.item_emb.out_dim
        self.user_fields = FieldEmbedding([f.vocab_size for f in features.user], e)
        self.extractor = nn.GRUCell(d, g)
        self.att = nn.Linear(d, g, bias=False)  # candidate -> query in state space
        self.aug_x = nn.Linear(g, 3 * g)  # AUGRU input projections (reset, update, new)
        self.aug_h = nn.Linear(g, 3 * g, bias=False)  # AUGRU recurrent projections
        h1 = config.hidden[0]
        self.user_proj = nn.Linear(self.user_fields.out_dim + d, h1)
        self.item_proj = nn.Linear(g + d, h1, bias=False)
        self.tower = mlp([*config.hidden, 1])
        self.graph_head = (
            GraphHead(features, config.graph_top_m, h1) if config.graph_top_m else None
        )

    def encode_user(self, ctx: Context) -> State:
        hist_ids = ctx["history"]
        mask = hist_ids > 0
        hist = self.item_emb(hist_ids)  # (B, L, d)
        states = self._extract(hist, mask)  # (B, L, g)
        user_in = torch.cat([self.user_fields(ctx["user_feats"]), masked_mean(hist, mask)], -1)
        recent = states[:, -self.config.evolve_steps :]  # (B, E, g) what the AUGRU evolves over
        state = {
            "states": recent,
            "states_x": self.aug_x(recent),  # (B, E, 3g)
            "mask": mask[:, -self.config.evolve_steps :],
            "u": self.user_proj(user_in),
        }
        if self.graph is not None:
            state.update(self.graph.profile(hist_ids))  # (B, G, N+1), (B, G, 1)
        return state

    def _extract(self, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Extractor states (B, L, g): zeros at padded steps, and at real steps the GRU
        over the row's real clicks only (its hidden state starts at zero on the first).

        Under ``torch.inference_mode`` (serving: ``stage.StageScorer``) the GRU runs as
        one fused call over each row's real steps (``torch.gru`` on packed rows: histories
        are left-padded, so a row's real steps are its last ``len``), ~2-3x faster than
        the Python loop of ``GRUCell`` calls (50 steps, one request: 1.3-1.6 -> 0.5 ms).
        It is the same recurrence, but its float64 states may differ from the loop's in
        the last bits, below the float32 rounding of the scores (``cascade.item_scores``;
        the served items equal ``run_chain``'s, tests). Training, the simulation and FLOPs
        counting keep the loop, so their numbers do not move by a bit. A mask that is not
        a suffix of real steps always takes the loop.
        """
        if not torch.is_inference_mode_enabled():
            return self._extract_loop(hist, mask)
        b, length, _ = hist.shape
        g = self.config.gru_hidden
        lengths = mask.sum(dim=1)
        suffix = torch.arange(length, device=mask.device) >= (length - lengths).unsqueeze(1)
        if not torch.equal(mask, suffix):
            return self._extract_loop(hist, mask)
        states = hist.new_zeros(b, length, g)
        rows = (lengths > 0).nonzero().squeeze(1)
        if len(rows) == 0:
            return states
        cell = self.extractor
        params = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
        n_max = int(lengths.max())
        lens = lengths[rows]
        offset = (length - lens).unsqueeze(1)  # (R, 1) first real step of each row
        cols = (offset + torch.arange(n_max, device=hist.device)).clamp_max(length - 1)
        aligned = hist[rows.unsqueeze(1), cols]  # (R, n_max, d): real steps first
        packed = pack_padded_sequence(aligned, lens.cpu(), batch_first=True, enforce_sorted=False)
        h0 = hist.new_zeros(1, len(rows), g)
        data, _ = torch.gru(packed.data, packed.batch_sizes, h0, params, True, 1, 0.0, False,
                            False)  # fmt: skip
        out, _ = pad_packed_sequence(
            PackedSequence(
                data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
            ),  # fmt: skip
            batch_first=True,
            total_length=n_max,
        )  # (R, n_max, g), zeros past each row's length
        real = torch.arange(n_max, device=hist.device) < lens.unsqueeze(1)
        states[rows.unsqueeze(1).expand_as(cols)[real], cols[real]] = out[real]
        return states

    def _extract_loop(self, hist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Any mask: the hidden state is held (not updated) through padded steps, so every
        # row's states depend on its real clicks only. Leading steps that are padding in
        # every row hold h at zero and emit zeros, so they are skipped.
        b, length, _ = hist.shape
        h = hist.new_zeros(b, self.config.gru_hidden)
        start = _first_step(mask)
        states = [hist.new_zeros(b, start, self.config.gru_hidden)]
        for t in range(start, length):
            step = mask[:, t : t + 1]
            h = torch.where(step, self.extractor(hist[:, t], h), h)
            states.append((h * step.to(h.dtype)).unsqueeze(1))  # padded steps emit zeros
        return torch.cat(states, dim=1)  # (B, L, g)

    def score(self, state: State, items: torch.Tensor) -> torch.Tensor:
        states, states_x, mask = state["states"], state["states_x"], state["mask"]
        cand = self.item_emb(items)  # (B, n, d)
        logits = torch.bmm(self.att(cand), states.transpose(1, 2))  # (B, n, L)
        att = torch.softmax(logits.masked_fill(~mask.unsqueeze(1), float("-inf")), dim=-1)
        att = torch.nan_to_num(att, nan=0.0)  # users with an empty history
        start = _first_step(mask)  # steps that are padding in every row: att 0, h stays 0
        if torch.is_grad_enabled():
            h = self._evolve_reference(states_x, att, start)
        else:
            h = self._evolve(states_x, att, start)
        pre_tower = self.item_proj(torch.cat([h, cand], -1)) + state["u"].unsqueeze(1)
        return tower_logits(self.tower, pre_tower, self.graph_head, state, items)  # (B, n)

    def _evolve(self, states_x: torch.Tensor, att: torch.Tensor, start: int) -> torch.Tensor:
        """The AUGRU's last hidden state (B, n, g) without autograd (serving, simulation),
        from steps ``start`` on of ``states_x`` (B, L, 3g) under attention ``att`` (B, n, L).

        The same floats as ``_evolve_reference`` (checked bit for bit on the ML-100k eval
        users) with fewer ops per step, the loop that scales with the items scored: one
        sigmoid for both gates, no module call (100 items: 1.58 -> 1.24 ms). Under
        ``torch.inference_mode`` (serving) the loop runs as TorchScript where that is exact
        (``scripted.ExactScript``: one GIL release for the whole loop); the simulation and
        FLOPs counting (whose counter must see each op once) run it from Python. Its
        gradients would differ in the last bits, so training keeps the reference.
        """
        args = (states_x, att, self.aug_h.weight, start, self.config.gru_hidden)
        return _AUGRU(*args) if torch.is_inference_mode_enabled() else _augru(*args)

    def _evolve_reference(self, states_x: torch.Tensor, att: torch.Tensor, start: int
                          ) -> torch.Tensor:  # fmt: skip
        """The AUGRU as trained: reset r, update u·a_t (attention-scaled), new state."""
        g = self.config.gru_hidden
        h = states_x.new_zeros(*att.shape[:2], g)
        for t in range(start, states_x.shape[1]):
            xr, xu, xn = states_x[:, t].unsqueeze(1).split(g, dim=-1)  # each (B, 1, g)
            hr, hu, hn = self.aug_h(h).split(g, dim=-1)  # each (B, n, g)
            reset = torch.sigmoid(xr + hr)
            update = torch.sigmoid(xu + hu) * att[:, :, t : t + 1]  # attention-scaled gate
            new = torch.tanh(xn + reset * hn)
            h = h + update * (new - h)
        return h


def _augru(states_x: torch.Tensor, att: torch.Tensor, w_h: torch.Tensor, start: int, g: int
           ) -> torch.Tensor:  # fmt: skip
    """``DIEN._evolve``'s loop (TorchScript-compatible): w_h (3g, g) the recurrent weights."""
    h = states_x.new_zeros(att.shape[0], att.shape[1], g)
    x_ru = states_x[..., : 2 * g].unsqueeze(2)  # (B, L, 1, 2g)
    x_n = states_x[..., 2 * g :].unsqueeze(2)  # (B, L, 1, g)
    att_steps = att.transpose(1, 2).unsqueeze(-1)  # (B, L, n, 1)
    for t in range(start, states_x.shape[1]):
        h_proj = F.linear(h, w_h)  # (B, n, 3g)
        gates = torch.sigmoid(x_ru[:, t] + h_proj[..., : 2 * g])
        reset, update = gates[..., :g], gates[..., g:] * att_steps[:, t]
        new = torch.tanh(x_n[:, t] + reset * h_proj[..., 2 * g :])
        h = h + update * (new - h)
    return h


_AUGRU = ExactScript(_augru)


def _first_step(mask: torch.Tensor) -> int:
    """The first step (column of ``mask`` (B, L)) that is real in some row; L if none."""
    real = mask.any(dim=0).nonzero()
    return int(real[0, 0]) if len(real) else mask.shape[1]
