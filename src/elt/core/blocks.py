"""Transformer building blocks shared by both paradigms.

One small class per concept: attention, MLP, the pre-norm block (optionally adaLN-Zero conditioned),
the conditioning embedders, and fixed sin-cos positional embeddings for 1D/2D/3D token grids.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from elt.core import batch_random


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose affine parameters follow the input's dtype: under FSDP's bf16
    parameter policy the weights arrive in bf16 while the residual stream stays fp32, as in the
    unsharded (DDP) path. CUDA's autocast runs layer norms in fp32 anyway; CPU's autocast does not
    cast them, so this does. With weights already in the input's dtype (every unsharded run) it is
    ``nn.LayerNorm`` exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if weight is not None and weight.dtype != x.dtype:
            weight = weight.to(x.dtype)
        if bias is not None and bias.dtype != x.dtype:
            bias = bias.to(x.dtype)
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` (flash/efficient kernels
    on GPU).

    ``dropout`` drops attention probabilities in training (MaskGIT/MAGVIT's
    ``attention_probs_dropout``); 0 (the default) calls the kernel exactly as without the option."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"attention dropout must lie in [0, 1), got {dropout}")
        self.heads = heads
        self.dropout = float(dropout)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (
            linear(self.qkv, x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        )
        if self.dropout and self.training:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return linear(self.proj, out.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self.fc2, gelu_tanh(linear(self.fc1, x)))


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)``. Under ``torch.compile``, in fp32 outside autocast, the matmul and the bias
    addition are written as two operations: inductor then adds the bias inside the fused kernel that
    follows, where ATen's ``addmm`` (what it calls for a linear layer with a bias on a CPU) first
    copies the broadcast bias into the output, at the demo shapes as long as the matmul's own
    epilogue. Eager PyTorch runs the layer itself (outputs unchanged bit for bit); compiled outputs
    differ by float rounding. In bf16 the fused ``addmm`` stays: a bf16 matmul output rounded before
    the bias is added would lose precision."""
    if (
        layer.bias is not None
        and torch.compiler.is_compiling()
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled(x.device.type)
    ):
        return F.linear(x, layer.weight) + layer.bias
    return layer(x)


_GELU_C = 2.0 * math.sqrt(2.0 / math.pi)  # 0.5·(1 + tanh(u)) = sigmoid(2u)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation: ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))``.

    Eager PyTorch runs ATen's kernel (``F.gelu(approximate="tanh")``). Under ``torch.compile`` the
    same function is written ``x·sigmoid(2√(2/π)·(x + 0.044715·x³))`` (the identity 0.5·(1 + tanh u)
    = sigmoid(2u)): inductor's CPU code vectorises that form 2-5× faster than its tanh, the MLP's
    largest non-matmul cost. Compiled and eager outputs then differ by float rounding only
    (≤ 5e-7 absolute on unit-scale fp32 inputs)."""
    if torch.compiler.is_compiling():
        return x * torch.sigmoid(x * (_GELU_C + (_GELU_C * 0.044715) * (x * x)))
    return F.gelu(x, approximate="tanh")


class Block(nn.Module):
    """Pre-norm transformer block.

    Without ``cond_dim`` it is a plain pre-LayerNorm block (masked models). With ``cond_dim`` the
    norms lose their affine parameters and a zero-initialised linear map of the conditioning vector
    produces shift/scale/gate for both branches (adaLN-Zero, as in DiT): at initialisation the block
    is the identity.

    ``dropout`` drops the output of each residual branch (attention projection, MLP) in training,
    where MaskGIT/MAGVIT apply their ``hidden_dropout``; ``attention_dropout`` drops attention
    probabilities. Both draw from the device's RNG (not keyed by the sample index), so with dropout
    a multi-process run is not bit-identical to one process. At 0 (the default) the forward pass is
    exactly the one without them."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        cond_dim: int | None = None,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.adaptive = cond_dim is not None
        self.dropout = float(dropout)
        self.norm1 = LayerNorm(dim, elementwise_affine=not self.adaptive, eps=1e-6)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias, dropout=attention_dropout)
        self.norm2 = LayerNorm(dim, elementwise_affine=not self.adaptive, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        if self.adaptive:
            self.ada = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * dim))
            nn.init.zeros_(self.ada[1].weight)
            nn.init.zeros_(self.ada[1].bias)

    def _drop(self, branch: torch.Tensor) -> torch.Tensor:
        return (
            F.dropout(branch, self.dropout, training=True)
            if self.dropout and self.training
            else branch
        )

    def modulation(self, cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """adaLN-Zero's (shift, 1 + scale, gate) of the attention and MLP branches, each B×1×D."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(cond).unsqueeze(1).chunk(6, dim=-1)
        return shift1, 1 + scale1, gate1, shift2, 1 + scale2, gate2

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None, memo: dict | None = None
    ) -> torch.Tensor:
        """``memo``: a dict kept by the caller for one condition (one forward pass of the loop):
        the first call stores this block's modulation in it and later loops reuse it, the same
        values without the conditioning matmul (see :meth:`LoopedTransformer.forward`)."""
        if not self.adaptive:
            x = x + self._drop(self.attn(self.norm1(x)))
            return x + self._drop(self.mlp(self.norm2(x)))
        if cond is None:
            raise ValueError("an adaLN block needs a conditioning vector")
        terms = memo.get("modulation") if memo is not None else None
        if terms is None:
            terms = self.modulation(cond)
            if memo is not None:
                memo["modulation"] = terms
        shift1, scale1, gate1, shift2, scale2, gate2 = terms
        x = x + gate1 * self._drop(self.attn(self.norm1(x) * scale1 + shift1))
        return x + gate2 * self._drop(self.mlp(self.norm2(x) * scale2 + shift2))


class TimestepEmbedder(nn.Module):
    """Continuous scalar (diffusion time or noise level) → vector, via sinusoidal features and an
    MLP."""

    def __init__(self, dim: int, frequency_dim: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_features(t, self.frequency_dim, self.max_period))


def sinusoidal_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class LabelEmbedder(nn.Module):
    """Class label → vector, with one extra "null" class used for classifier-free guidance.

    ``drop_prob`` replaces labels by the null class during training (the paper drops 10%).
    Label ``-1`` (or ``num_classes``) at call time means "unconditional".
    """

    def __init__(self, num_classes: int, dim: int, drop_prob: float = 0.1):
        super().__init__()
        self.num_classes = num_classes
        self.drop_prob = drop_prob
        self.table = nn.Embedding(num_classes + 1, dim)
        nn.init.normal_(self.table.weight, std=0.02)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(
        self, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        labels = torch.where(labels < 0, torch.full_like(labels, self.null_class), labels)
        if self.training and self.drop_prob > 0:
            if generator is None:  # inside a training step: keyed by the global sample index
                draw = batch_random.rand(labels.shape[0], *labels.shape[1:], device=labels.device)
            else:
                draw = torch.rand(labels.shape, device=labels.device, generator=generator)
            drop = draw < self.drop_prob
            labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        return self.table(labels)


def sincos_embedding(grid: tuple[int, ...], dim: int) -> torch.Tensor:
    """Fixed sin-cos positional embedding for a token grid of 1, 2 or 3 axes (T×H×W), shape
    (prod(grid), dim).

    The width is split evenly over the axes (each axis gets an even number of channels; any
    remainder is zero), so time and space get distinct, separable codes."""
    axes = len(grid)
    per_axis = (dim // axes) // 2 * 2
    if per_axis == 0:
        raise ValueError(f"width {dim} is too small for a {axes}-axis positional embedding")
    coords = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in grid], indexing="ij")
    parts = []
    for c in coords:
        omega = 1.0 / 10000 ** (np.arange(per_axis // 2, dtype=np.float64) / (per_axis / 2))
        out = c.reshape(-1)[:, None] * omega[None]
        parts.append(np.concatenate([np.sin(out), np.cos(out)], axis=1))
    emb = np.concatenate(parts, axis=1)
    if emb.shape[1] < dim:
        emb = np.concatenate([emb, np.zeros((emb.shape[0], dim - emb.shape[1]))], axis=1)
    return torch.from_numpy(emb).float()
