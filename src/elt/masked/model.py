"""The masked-token ELT generator: a bidirectional looped transformer over tokenizer codes
(MaskGIT).

Inputs are token ids with a dedicated [MASK] id (= codebook size), embedded with learned token and
position embeddings. Positions start from a sin-cos code over the tokenizer's grid: 2 axes (h, w)
for images, 3 axes (t, h, w) for video, where the width is split into one block of channels per axis
so that time and space have separate, distinguishable codes (a flattened 2D code would confuse "next
frame" with "next row"). The sequence is the grid flattened in (t,) h, w order; the class label
enters as one prefix token (a :class:`LabelEmbedder` whose extra "null" class is used with
probability ``model.class_dropout`` in training, which enables classifier-free guidance). One shared
head (LayerNorm + linear) maps any loop state to codebook logits, so the student after L_int loops
and the teacher after L_max loops are read the same way: that is Intra-Loop Self Distillation's
single forward pass.

The trained tokenizer is a frozen submodule (never trained here, always in eval mode), so a
checkpoint holds everything needed to decode samples to pixels."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from elt.core import batch_random, rng
from elt.core.adaptive import (
    active_rows,
    argmax_tokens,
    per_active,
    run_adaptive,
    token_change,
)
from elt.core.blocks import LabelEmbedder, linear, sincos_embedding
from elt.core.generator import (
    LoopedGenerator,
    LoopSchedule,
    ResolvedRequest,
    labels_tensor,
    loop_counts,
    resolve_seed,
    to_uint8,
)
from elt.core.ilsd import ILSDTerms, ilsd_loss
from elt.core.schedule import AdaptiveExit
from elt.masked.config import SAMPLING_DEFAULTS
from elt.masked.masking import masked_counts, sample_training_mask
from elt.masked.sampler import iterative_decode
from elt.registry import build_backbone
from elt.runtime import autocast_context


def soft_cross_entropy(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """−Σ_v p_teacher(v) · log p_student(v): averaged over positions, or summed with ``weights``
    (one per position, summing to 1) when given (KL to the teacher up to a constant)."""
    teacher = torch.softmax(teacher_logits.float(), dim=-1)
    per_position = -(teacher * torch.log_softmax(student_logits.float(), dim=-1)).sum(dim=-1)
    return per_position.mean() if weights is None else (per_position * weights).sum()


MASK_BUCKETS = 16


def masked_positions(
    mask: torch.Tensor, buckets: int = MASK_BUCKETS, normaliser: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices of the masked positions of a B×N ``mask``, padded to one of ``buckets`` fixed
    sizes, and their loss weights (1 / ``normaliser``, default #masked; 0 for the padding, which
    repeats index 0).

    Scoring exactly the masked positions (``logits[mask]``) gives tensors of a new size every step,
    and on CPU that fragments the allocator's heap: resident memory grew by ~4 MB/step, to 8.6 GB in
    a 4500-step video run. Scoring every position avoids it but costs 11-22 % more step time (the
    head and the softmaxes over the whole codebook); padding to a few sizes keeps both the memory
    flat and the head on the masked positions (benchmarks/masked_memory_growth.py)."""
    flat = mask.flatten()
    index = flat.nonzero().squeeze(1)
    count = index.numel()
    step = -(-flat.numel() // buckets)
    size = min(flat.numel(), max(step, -(-count // step) * step))
    weights = torch.zeros(size, device=mask.device)
    weights[:count] = 1.0 / max(normaliser if normaliser is not None else count, 1)
    return torch.cat([index, index.new_zeros(size - count)]), weights


class MaskedGenerator(LoopedGenerator):
    """Class-conditional MaskGIT on the looped core; ``tokenizer`` maps images ↔ token grids."""

    def __init__(self, cfg, tokenizer: nn.Module):
        super().__init__()
        self.config = cfg
        self.num_classes = int(cfg.data.num_classes)
        self.tokenizer = tokenizer
        self.tokenizer.requires_grad_(False)
        self.tokenizer.eval()
        self.codebook_size = int(tokenizer.codebook_size)
        self.mask_id = self.codebook_size
        self.grid = tuple(int(n) for n in tokenizer.token_grid)
        if len(self.grid) not in (2, 3):
            raise ValueError(
                f"tokenizer.token_grid must have 2 (h, w) or 3 (t, h, w) axes, got {self.grid}"
            )
        self.seq_len = math.prod(self.grid)
        width = cfg.model.width
        self.backbone = build_backbone(cfg)
        self.token_embed = nn.Embedding(self.codebook_size + 1, width)
        self.pos_embed = nn.Parameter(sincos_embedding(self.grid, width).unsqueeze(0))
        self.embed_norm = nn.LayerNorm(width, eps=1e-6)
        self.class_embed = LabelEmbedder(self.num_classes, width, drop_prob=cfg.model.class_dropout)
        self.head = nn.Sequential(
            nn.LayerNorm(width, eps=1e-6), nn.Linear(width, self.codebook_size)
        )
        # MaskGIT/MAGVIT drop the input embeddings at the transformer's hidden dropout rate
        # (training only)
        self.embed_dropout = float(cfg.model.get("dropout", 0.0) or 0.0)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.head[1].weight, std=0.02)
        nn.init.zeros_(self.head[1].bias)

    @property
    def is_video(self) -> bool:
        """True when the tokenizer's grid has a time axis (samples are N×T×H×W×C)."""
        return len(self.grid) == 3

    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one decoded sample, channels last: H×W×C, or T×H×W×C for video."""
        size, channels = int(self.tokenizer.image_size), int(self.tokenizer.image_channels)
        if self.is_video:
            return int(self.tokenizer.frames), size, size, channels
        return size, size, channels

    def train(self, mode: bool = True) -> MaskedGenerator:
        """The tokenizer stays in eval mode whatever the generator's mode."""
        super().train(mode)
        self.tokenizer.eval()
        return self

    # -- the network -------------------------------------------------------------------------------
    def class_token(self, labels: torch.Tensor, allow_dropout: bool) -> torch.Tensor:
        """B×1×D prefix token; label −1 is the null class. Label dropout only when training and
        allowed."""
        if allow_dropout:
            return self._drop(self.class_embed(labels).unsqueeze(1))
        null = torch.full_like(labels, self.class_embed.null_class)
        return self.class_embed.table(torch.where(labels < 0, null, labels)).unsqueeze(1)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return (
            F.dropout(x, self.embed_dropout, training=True)
            if self.embed_dropout and self.training
            else x
        )

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._drop(self.embed_norm(self.token_embed(tokens) + self.pos_embed))

    def logits(
        self, tokens: torch.Tensor, labels: torch.Tensor, loops: int | None = None
    ) -> torch.Tensor:
        """Codebook logits B×N×V for token ids B×N (``mask_id`` where masked), no label dropout."""
        out = self.backbone(
            self.embed(tokens), loops=loops, prefix=self.class_token(labels, allow_dropout=False)
        )
        norm, projection = self.head
        return linear(projection, norm(out.final))  # = self.head(out.final)

    # -- training ----------------------------------------------------------------------------------
    def training_loss(self, batch, student_loops: int | None, lam: float) -> ILSDTerms:
        """Mask a cosine-scheduled fraction of each sequence; cross-entropy on masked positions for
        the teacher (and student), soft-target cross-entropy from teacher to student (ILSD)."""
        tokens, labels = batch
        tokens = tokens.long().flatten(1)
        if tokens.shape[1] != self.seq_len:
            raise ValueError(f"expected {self.seq_len} tokens per item, got {tokens.shape[1]}")
        labels = labels.long().to(tokens.device)
        # per-token mean over the masked tokens of the whole global batch: each rank divides its sum
        # by (global count × its share), so DDP's mean over ranks equals the single-process loss
        mask, global_masked = sample_training_mask(
            tokens.shape[0], self.seq_len, device=tokens.device, with_global_count=True
        )
        inputs = torch.where(mask, torch.full_like(tokens, self.mask_id), tokens)
        exits = [student_loops] if student_loops else []
        out = self.backbone(
            self.embed(inputs),
            exit_loops=exits,
            prefix=self.class_token(labels, allow_dropout=True),
        )
        index, weights = masked_positions(
            mask, normaliser=global_masked * batch_random.rank_share()
        )
        target = tokens.flatten()[index]
        teacher = self.head(
            out.final.flatten(0, 1)[index]
        )  # the head runs on (about) the masked positions only
        student = (
            self.head(out.exits[student_loops].flatten(0, 1)[index]) if student_loops else None
        )
        smoothing = float(self.config.masked.label_smoothing)

        def gt_loss(logits: torch.Tensor) -> torch.Tensor:
            per_position = F.cross_entropy(
                logits.float(), target, reduction="none", label_smoothing=smoothing
            )
            return (per_position * weights).sum()

        def distill_loss(
            student_logits: torch.Tensor, teacher_logits: torch.Tensor
        ) -> torch.Tensor:
            return soft_cross_entropy(student_logits, teacher_logits, weights)

        return ilsd_loss(teacher, student, gt_loss, distill_loss, lam, student_loops)

    # -- sampling ----------------------------------------------------------------------------------
    def guided_logits(
        self, tokens: torch.Tensor, labels: torch.Tensor, loops: int, guidance: float
    ) -> torch.Tensor:
        """Classifier-free guidance on logits with scale s: uncond + s·(cond − uncond), computed as
        cond + (s − 1)·(cond − uncond) (the same value; this form keeps results bit-identical to
        models sampled with the earlier masked convention g = s − 1). s = 1 is the conditional path
        alone."""
        if guidance == 1:
            return self.logits(tokens, labels, loops)
        both = self.logits(
            torch.cat([tokens, tokens]), torch.cat([labels, torch.full_like(labels, -1)]), loops
        )
        return self._combine(both, guidance)

    @staticmethod
    def _combine(both: torch.Tensor, guidance: float) -> torch.Tensor:
        cond, uncond = both.chunk(2)
        # cond + (s − 1)·(cond − uncond), bit for bit, in one buffer instead of three
        return (cond - uncond).mul_(guidance - 1).add_(cond)

    def sampling_defaults(self) -> dict:
        """:data:`~elt.masked.config.SAMPLING_DEFAULTS`: 12 decoding steps, s = 1, fp32."""
        return dict(SAMPLING_DEFAULTS)

    def adaptive_logits(
        self, tokens: torch.Tensor, labels: torch.Tensor, rule: AdaptiveExit, guidance: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Guided logits where each sample stops looping once the share of masked positions whose
        argmax token changed between two consecutive loops is below ``rule.threshold``; returns
        (logits, loops used).

        The head is read after every loop, so it runs on the masked positions only (the decoder
        draws nothing at the others): their logits are exactly the full head's, and positions
        already fixed get logits 0."""
        batch = len(tokens)
        masked = tokens == self.mask_id
        # the masked positions first, in order; rows with fewer masked positions pad with fixed ones
        # (ignored)
        width = max(int(masked.sum(1).max()), 1)
        order = masked.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :width]
        where = masked.gather(1, order)
        branches = 1 if guidance == 1 else 2
        if branches == 2:
            tokens, labels = (
                torch.cat([tokens, tokens]),
                torch.cat([labels, torch.full_like(labels, -1)]),
            )
        h = torch.cat([self.class_token(labels, allow_dropout=False), self.embed(tokens)], dim=1)

        @per_active
        def positions(active: torch.Tensor) -> torch.Tensor:  # once per set of active samples
            return (
                active_rows(order, active)
                .repeat(branches, 1)
                .unsqueeze(-1)
                .expand(-1, -1, h.shape[-1])
            )

        def readout(state: torch.Tensor, cond, active: torch.Tensor) -> torch.Tensor:
            picked = state[:, 1:].gather(1, positions(active))
            logits = self.head(picked)
            return logits if branches == 1 else self._combine(logits, guidance)

        picked, used = run_adaptive(
            self.backbone,
            h,
            None,
            branches,
            readout,
            token_change(where),
            rule,
            summarise=argmax_tokens,
        )
        logits = picked.new_zeros((batch, self.seq_len, picked.shape[-1]))
        return logits.scatter_(
            1, order.unsqueeze(-1).expand(-1, -1, picked.shape[-1]), picked
        ), used

    @torch.no_grad()
    def generate_tokens(
        self,
        class_labels: Sequence[int] | torch.Tensor,
        loops: LoopSchedule = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        progress: bool = False,
        *,
        seeds: Sequence[int] | None = None,
        return_loops: bool = False,
        request: ResolvedRequest | None = None,
    ):
        """Token grids B×h×w (video: B×t×h×w) by iterative decoding (see
        :func:`elt.masked.sampler.iterative_decode`); with ``return_loops`` also the loops used
        (B×steps). ``request``: see :meth:`LoopedGenerator.generate`."""
        cfg = self.config.masked
        request = self.request_for(request, loops, steps, guidance, seed)
        steps, guidance, plan = request.steps, request.guidance, request.plan
        labels = labels_tensor(class_labels, self.num_classes, self.device, self.class_names)
        self.last_seed = resolve_seed(request.seed)
        generator = rng.make_streams(self.last_seed, seeds, len(labels), self.device)
        used = torch.zeros((len(labels), steps), dtype=torch.long)
        autocast = autocast_context(self.device, request.precision)
        compiled = request.compile

        def logits_fn(tokens: torch.Tensor, step: int) -> torch.Tensor:
            with autocast:
                if isinstance(plan, AdaptiveExit):
                    logits, loops_used = self.adaptive_logits(tokens, labels, plan, guidance)
                    used[:, step] = loops_used.cpu()
                    return logits.float()
                used[:, step] = plan[step]
                if compiled:
                    step_fn = self.compiled_step(
                        "guided_logits", self.guided_logits, loops=plan[step], guidance=guidance
                    )
                    return step_fn(tokens, labels).float()
                return self.guided_logits(tokens, labels, plan[step], guidance).float()

        tokens = iterative_decode(
            logits_fn,
            len(labels),
            self.seq_len,
            self.mask_id,
            steps,
            generator=generator,
            device=self.device,
            temperature_base=cfg.temperature_base,
            temperature_range=cfg.temperature_range,
            token_temperature=cfg.token_temperature,
            progress=progress,
        )
        tokens = tokens.view(len(labels), *self.grid)
        return (tokens, used.numpy()) if return_loops else tokens

    @torch.no_grad()
    def generate(
        self,
        class_labels: Sequence[int] | torch.Tensor,
        loops: LoopSchedule = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        progress: bool = False,
        *,
        seeds: Sequence[int] | None = None,
        return_loops: bool = False,
        request: ResolvedRequest | None = None,
    ):
        request = self.request_for(request, loops, steps, guidance, seed)
        was_training = self.training
        self.eval()
        try:
            tokens, used = self.generate_tokens(
                class_labels, progress=progress, seeds=seeds, return_loops=True, request=request
            )
            if tokens.shape[0] == 0:
                images = np.zeros((0, *self.sample_shape()), np.uint8)
            else:
                images = to_uint8(self.tokenizer.decode(tokens))
            return (images, used) if return_loops else images
        finally:
            self.train(was_training)

    def gflops_per_sample(
        self,
        loops: LoopSchedule = None,
        steps: int | None = None,
        guidance: float | None = None,
        loops_used: np.ndarray | None = None,
        *,
        request: ResolvedRequest | None = None,
    ) -> float:
        """Transformer + head per decoding step (×2 with guidance s ≠ 1), plus one tokenizer decode.
        An adaptive exit needs ``loops_used`` (N×steps, from ``generate(..., return_loops=True)``):
        the mean over its samples, with the head read after every loop it ran, on the positions
        still masked at that step. ``request``: a resolved one-point request in place of ``loops``,
        ``steps`` and ``guidance``."""
        request = self.request_for(request, loops, steps, guidance)
        steps, guidance, plan = request.steps, request.guidance, request.plan
        tokens = self.seq_len + 1  # + the class token
        head_per_position = 2 * self.head[1].in_features * self.codebook_size
        counts = loop_counts(plan, loops_used, steps)
        per_sample = counts.sum(1) * self.backbone.flops_per_token(tokens, 1) * tokens
        if isinstance(plan, AdaptiveExit):
            masked_before = np.array([self.seq_len, *masked_counts(self.seq_len, steps)[:-1]])
            per_sample = per_sample + (counts * masked_before).sum(1) * head_per_position
        else:
            per_sample = per_sample + self.seq_len * head_per_position * steps
        return (
            float(per_sample.mean()) * (2 if guidance != 1 else 1) / 1e9
            + self.tokenizer.decode_gflops()
        )
