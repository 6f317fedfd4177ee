"""The loop engine: N unique transformer blocks applied L times, with exits at any loop count.

Effective depth is N×L with the parameters of N blocks. Every intermediate state ``h_k`` (after k
loops) lies on the same trajectory, so the outputs at several loop counts come from one pass: that
is what makes Intra-Loop Self Distillation cost one extra head application instead of a second
forward."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from elt.core.blocks import Block, LayerNorm, sinusoidal_features


@dataclass
class LoopOutput:
    """Final hidden state (after ``loops`` loops) and the states after each requested exit loop
    count."""

    final: torch.Tensor
    exits: dict[int, torch.Tensor] = field(default_factory=dict)


class LoopedTransformer(nn.Module):
    """``unique_layers`` blocks looped ``loops`` times (the trained L_max; any L ≥ 1 works at
    inference).

    Args:
        dim: token width.
        unique_layers: N, the number of blocks with their own weights.
        loops: L_max, the loop count used by default and for training.
        heads: attention heads.
        mlp_ratio: MLP hidden width / ``dim``.
        cond_dim: width of an adaLN conditioning vector (diffusion: timestep + class). ``None``
            gives plain pre-norm blocks, conditioned by prefix tokens instead (masked models: a
            class token).
        loop_embedding: add a sinusoidal code of the loop index to the state at the start of each
            loop (not in the paper; off by default).
        loop_norm: LayerNorm the state between loops (not in the paper; off by default).
        input_injection: add a learned projection of the loop's input ``x`` to the state at the
            start of every loop, as recurrent-depth models re-inject their input embedding (not in
            the paper; off by default; zero-initialised, so training starts from the plain loop).
        checkpoint_loops: recompute each loop in the backward pass instead of storing its
            activations, so training memory stays flat in L.
        dropout: training-time dropout of each block's residual branches
            (:class:`~elt.core.blocks.Block`; 0 by default, the paper states none).
        attention_dropout: training-time dropout of the attention probabilities (0 by default).
    """

    def __init__(
        self,
        dim: int,
        unique_layers: int,
        loops: int,
        heads: int,
        mlp_ratio: float = 4.0,
        cond_dim: int | None = None,
        qkv_bias: bool = True,
        loop_embedding: bool = False,
        loop_norm: bool = False,
        checkpoint_loops: bool = False,
        input_injection: bool = False,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ):
        super().__init__()
        if unique_layers < 1:
            raise ValueError(f"unique_layers must be >= 1, got {unique_layers}")
        if loops < 1:
            raise ValueError(f"loops must be >= 1, got {loops}")
        self.dim = dim
        self.unique_layers = unique_layers
        self.loops = loops
        self.checkpoint_loops = checkpoint_loops
        self.blocks = nn.ModuleList(
            [
                Block(
                    dim,
                    heads,
                    mlp_ratio,
                    cond_dim=cond_dim,
                    qkv_bias=qkv_bias,
                    dropout=dropout,
                    attention_dropout=attention_dropout,
                )
                for _ in range(unique_layers)
            ]
        )
        self.loop_embed = nn.Linear(dim, dim) if loop_embedding else None
        self.loop_norm = LayerNorm(dim, eps=1e-6) if loop_norm else None
        self.inject = nn.Linear(dim, dim) if input_injection else None
        for extra in (self.loop_embed, self.inject):  # zero: training starts from the plain loop
            if extra is not None:
                nn.init.zeros_(extra.weight)
                nn.init.zeros_(extra.bias)
        self.apply(_init_linear)

    def modulation_memos(self, cond: torch.Tensor | None) -> list[dict] | None:
        """One empty memo per block for the loops of one forward pass with condition ``cond``
        (:meth:`Block.forward`), or ``None`` where nothing is worth keeping: without adaLN blocks,
        and wherever gradients are recorded (training recomputes the modulation at every loop, so
        autograd, activation checkpointing and FSDP's per-block gathering see the plain block).
        A caller that changes ``cond``'s rows (the adaptive exit) takes new memos."""
        if cond is None or torch.is_grad_enabled() or not self.blocks[0].adaptive:
            return None
        return [{} for _ in self.blocks]

    def loop_once(
        self,
        h: torch.Tensor,
        cond: torch.Tensor | None,
        index: int,
        x: torch.Tensor | None = None,
        memos: list[dict] | None = None,
    ) -> torch.Tensor:
        """One application of the block stack g (loop number ``index``, counted from 0).

        ``x`` is the input of loop 0 (prefix tokens included, rows matching ``h``); it is needed,
        and only used, when the model re-injects its input (``input_injection``). ``memos``: from
        :meth:`modulation_memos` for this ``cond``, shared by the loops of one pass."""
        if self.inject is not None:
            if x is None:
                raise ValueError(
                    "this model re-injects its input at every loop: pass x, the input of loop 0"
                )
            h = h + self.inject(x)
        if self.loop_embed is not None:
            code = sinusoidal_features(torch.full((1,), float(index), device=h.device), self.dim)
            h = h + self.loop_embed(code.to(h.dtype)).unsqueeze(1)
        for i, block in enumerate(self.blocks):
            h = block(h, cond, memos[i] if memos is not None else None)
        if self.loop_norm is not None:
            h = self.loop_norm(h)
        return h

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor | None = None,
        loops: int | None = None,
        exit_loops: Iterable[int] = (),
        prefix: torch.Tensor | None = None,
    ) -> LoopOutput:
        """Run ``loops`` loops over tokens ``x`` (B×T×D).

        ``exit_loops`` lists loop counts k (1 ≤ k ≤ loops) whose states h_k are returned as well.
        ``prefix`` (B×P×D) are conditioning tokens (e.g. a class token) attended to by every
        position and stripped from all returned states."""
        loops = self.loops if loops is None else int(loops)
        if loops < 1:
            raise ValueError(f"loops must be >= 1, got {loops}")
        wanted = sorted(set(int(k) for k in exit_loops))
        if wanted and (wanted[0] < 1 or wanted[-1] > loops):
            raise ValueError(f"exit_loops {wanted} must lie in 1..{loops}")
        n_prefix = 0
        h = x
        if prefix is not None:
            n_prefix = prefix.shape[1]
            h = torch.cat([prefix, x], dim=1)
        exits: dict[int, torch.Tensor] = {}
        x0 = h if self.inject is not None else None
        memos = self.modulation_memos(cond)  # sampling: each block's adaLN terms once, not L times
        for index in range(loops):
            if self.checkpoint_loops and self.training and torch.is_grad_enabled():
                h = checkpoint(self.loop_once, h, cond, index, x0, use_reentrant=False)
            else:
                h = self.loop_once(h, cond, index, x0, memos)
            if index + 1 in wanted:
                exits[index + 1] = h[:, n_prefix:]
        return LoopOutput(final=h[:, n_prefix:], exits=exits)

    def flops_per_token(self, tokens: int, loops: int | None = None) -> float:
        """Forward FLOPs per token of the loop (matmuls only: 2·MACs), for ``tokens`` tokens in the
        sequence (input re-injection included: one width×width projection per loop)."""
        loops = self.loops if loops is None else loops
        block = self.blocks[0]
        hidden = block.mlp.fc1.out_features
        d = self.dim
        per_layer = 2 * (4 * d * d + 2 * d * hidden) + 2 * 2 * tokens * d
        inject = 2 * d * d if self.inject is not None else 0
        return float((per_layer * self.unique_layers + inject) * loops)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        if module.weight.is_meta:  # shape-only build (memory/FLOP accounts): nothing to initialise
            return
        if module.weight.abs().sum() == 0:  # deliberately zero-initialised (adaLN-Zero, loop codes)
            return
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
