"""The diffusion generator: a DiT whose adaLN-Zero blocks are the looped core.

    z_t ──patchify──► linear ──+pos──► [ N adaLN-Zero blocks ] × L ──► final layer ──unpatchify──►
                                            prediction ▲ cond = timestep embedding + class embedding

Embedding happens once, the shared final layer reads the state after any loop count, so the teacher
(L_max loops) and the ILSD student (L_int loops) come from one forward pass. The network is
process-agnostic: what its output means (x0 / eps / v) and how samples move between noise levels
live in ``process.py`` and ``sampler.py``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from elt.core import batch_random, rng
from elt.core.adaptive import active_rows, per_active, relative_change, run_adaptive
from elt.core.blocks import LabelEmbedder, TimestepEmbedder, sincos_embedding
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
from elt.core.looped import LoopedTransformer
from elt.core.schedule import AdaptiveExit
from elt.diffusion.config import SAMPLING_DEFAULTS
from elt.diffusion.patches import patchify, token_grid, unpatchify
from elt.diffusion.process import DiffusionProcess
from elt.diffusion.sampler import build_sampler, sample
from elt.runtime import autocast_context

TIME_SCALE = (
    1000.0  # t ∈ [0, 1] is embedded as t·1000, the range DiT's sinusoidal features were made for
)


def patch_shape(diffusion_cfg, axes: int) -> tuple[int, ...]:
    """Patch box over the data's trailing axes: (p, p) for images, (p_t, p, p) for video
    (C×T×H×W)."""
    p = int(diffusion_cfg.patch_size)
    return (int(diffusion_cfg.temporal_patch_size), p, p) if axes == 3 else (p,) * axes


def x0_from(
    prediction_type: str,
    prediction: torch.Tensor,
    z: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
) -> torch.Tensor:
    """x̂0 of :meth:`DiffusionProcess.to_x0_eps` from coefficients computed beforehand
    (``_coefficients``): the adaptive exit converts every loop's prediction, and the coefficients
    change only with the rows."""
    if prediction_type == "x0":
        return prediction
    if prediction_type == "eps":
        return (z - sigma * prediction) / alpha
    return (a * z - sigma * prediction) / (alpha * a + sigma * b)


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map to patch values; zero-initialised (DiT), so the
    model predicts 0 at step 0."""

    def __init__(self, width: int, out_dim: int, cond_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * width))
        self.linear = nn.Linear(width, out_dim)
        for layer in (self.ada[1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def modulation(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """adaLN's (shift, 1 + scale), each B×1×D."""
        shift, scale = self.ada(cond).unsqueeze(1).chunk(2, dim=-1)
        return shift, 1 + scale

    def forward(
        self,
        h: torch.Tensor,
        cond: torch.Tensor,
        terms: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``terms``: :meth:`modulation` of ``cond`` computed beforehand (the adaptive exit reads
        the head after every loop; the rows change only when samples leave)."""
        shift, scale = self.modulation(cond) if terms is None else terms
        return self.linear(self.norm(h) * scale + shift)


class DiffusionGenerator(LoopedGenerator):
    """Class-conditional DiT-style ELT over images (pixel or VAE-latent space).

    Args:
        cfg (DictConfig): the full run config (``model``, ``data``, ``diffusion`` sections are
            read).
        backbone: the looped core, built with ``cond_dim = width`` (adaLN-Zero blocks).
        process: the diffusion process (path, prediction target, weighting).
        data_shape: C×H×W of what the network denoises (pixels, or latents in latent space), or
            C×T×H×W for video (pixel space; 3D patches of ``temporal_patch_size × patch_size ×
            patch_size``).
        vae (PretrainedVAE | None): a :class:`elt.tokenizers.vae.PretrainedVAE` for latent space
            (decodes samples), else ``None``.
    """

    sampling_options = ("precision", "compile", "sampler")

    def __init__(
        self,
        cfg,
        backbone: LoopedTransformer,
        process: DiffusionProcess,
        data_shape: Sequence[int],
        vae=None,
    ):
        super().__init__()
        self.config = cfg
        self.num_classes = int(cfg.data.num_classes)
        self.process = process
        self.data_shape = tuple(int(v) for v in data_shape)
        # plain attribute: not a submodule, not in the state dict (it follows the device: _apply)
        self.vae = vae
        self.output_channels = int(cfg.data.channels)
        width = backbone.dim
        self.patch = patch_shape(cfg.diffusion, len(self.data_shape) - 1)
        self.grid = token_grid(self.data_shape, self.patch)
        self.tokens = math.prod(self.grid)
        patch_dim = self.data_shape[0] * math.prod(self.patch)
        self.patch_embed = nn.Linear(patch_dim, width)
        self.register_buffer(
            "pos_embed", sincos_embedding(self.grid, width).unsqueeze(0), persistent=False
        )
        self.time_embed = TimestepEmbedder(width)
        self.label_embed = LabelEmbedder(
            self.num_classes, width, drop_prob=float(cfg.model.class_dropout)
        )
        self.backbone = backbone
        self.final = FinalLayer(width, patch_dim, width)
        nn.init.xavier_uniform_(self.patch_embed.weight)
        nn.init.zeros_(self.patch_embed.bias)
        for layer in (self.time_embed.mlp[0], self.time_embed.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def _apply(self, fn, *args, **kwargs):
        """``.to(device)``, ``.cuda()``, ``.float()``…: the VAE (not a submodule, so outside the
        state dict, the optimizer, the EMA copy and FSDP's units) follows the generator's device,
        keeping its own dtype."""
        result = super()._apply(fn, *args, **kwargs)
        if self.vae is not None:
            device = next(self.parameters()).device
            if self.vae.device != device:
                self.vae.to(device)
        return result

    # -- the network -------------------------------------------------------------------------------
    def condition(self, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Conditioning vector: timestep embedding + class embedding (labels −1 / null class =
        unconditional; in training mode the label embedder drops labels with
        ``model.class_dropout``)."""
        return self.time_embed(t * TIME_SCALE) + self.label_embed(labels)

    def head(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Shared prediction head: tokens after any loop count → a prediction shaped like the
        data."""
        return unpatchify(self.final(h, cond), self.patch, self.grid, self.data_shape[0])

    def forward(
        self,
        z: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor,
        loops: int | None = None,
        exit_loops: Sequence[int] = (),
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Network output after ``loops`` loops, and after each of ``exit_loops`` (same forward
        pass)."""
        cond = self.condition(t, labels)
        tokens = self.patch_embed(patchify(z, self.patch)) + self.pos_embed
        out = self.backbone(tokens, cond, loops=loops, exit_loops=exit_loops)
        return self.head(out.final, cond), {k: self.head(h, cond) for k, h in out.exits.items()}

    def guided(
        self, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, loops: int, guidance: float
    ) -> torch.Tensor:
        """Classifier-free guided output ``u + g·(c − u)`` on every channel; conditional and
        unconditional halves run as one batch with the same loop count. ``g = 1`` is the conditional
        output alone."""
        if guidance == 1.0:
            return self(z, t, labels, loops)[0]
        null = torch.full_like(labels, self.label_embed.null_class)
        both = self(torch.cat([z, z]), torch.cat([t, t]), torch.cat([labels, null]), loops)[0]
        return self._combine(both, guidance)

    @staticmethod
    def _combine(both: torch.Tensor, guidance: float) -> torch.Tensor:
        cond, uncond = both.chunk(2)
        # uncond + s·(cond − uncond), bit for bit, in one buffer instead of three
        return (cond - uncond).mul_(guidance).add_(uncond)

    def adaptive(
        self,
        z: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor,
        rule: AdaptiveExit,
        guidance: float,
        clip: tuple[float, float] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Guided output where each sample stops looping once its x̂0 changed by less than
        ``rule.threshold`` (relative L2) between two consecutive loops; returns (output, loops used
        per sample)."""
        branches = 1 if guidance == 1.0 else 2
        if branches == 2:
            null = torch.full_like(labels, self.label_embed.null_class)
            z2, t2, labels2 = torch.cat([z, z]), torch.cat([t, t]), torch.cat([labels, null])
        else:
            z2, t2, labels2 = z, t, labels
        cond = self.condition(t2, labels2)
        tokens = self.patch_embed(patchify(z2, self.patch)) + self.pos_embed

        final = self.final
        modulation: list = [
            None,
            None,
        ]  # the final layer's (shift, scale) of the current condition rows

        def readout(
            state: torch.Tensor, rows_cond: torch.Tensor, active: torch.Tensor
        ) -> torch.Tensor:
            if (
                modulation[0] is not rows_cond
            ):  # new rows only when samples left: computed once per set
                modulation[0], modulation[1] = rows_cond, final.modulation(rows_cond)
            patches = final(state, rows_cond, modulation[1])  # = self.head(state, rows_cond)
            out = unpatchify(patches, self.patch, self.grid, self.data_shape[0])
            return out if branches == 1 else self._combine(out, guidance)

        @per_active
        def coefficients(active: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return active_rows(z, active), self.process._coefficients(active_rows(t, active), z)

        def to_x0(prediction: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
            rows, (alpha, sigma, a, b) = coefficients(active)
            x0 = x0_from(self.process.prediction, prediction.float(), rows, alpha, sigma, a, b)
            return x0.clamp(*clip) if clip is not None else x0

        return run_adaptive(
            self.backbone, tokens, cond, branches, readout, relative_change(), rule, summarise=to_x0
        )

    # -- the contract ------------------------------------------------------------------------------
    def training_loss(self, batch, student_loops: int | None, lam: float) -> ILSDTerms:
        """Noise the batch at t ~ U(0, 1) and score x̂0 after L_max loops (teacher) and after
        ``student_loops`` (student) with w(t)·‖·‖²; see :func:`elt.core.ilsd.ilsd_loss`."""
        x0, labels = batch
        x0 = x0.float()
        t = self.process.sample_time(x0.shape[0], x0.device)
        noise = batch_random.randn_like(
            x0
        )  # keyed by the global sample index inside a training step
        z = self.process.add_noise(x0, noise, t)
        exits = [student_loops] if student_loops else []
        teacher, students = self(z, t, labels, exit_loops=exits)

        def x0_of(prediction: torch.Tensor) -> torch.Tensor:
            return self.process.to_x0_eps(prediction.float(), z, t)[0]

        return ilsd_loss(
            teacher,
            students.get(student_loops) if student_loops else None,
            gt_loss=lambda prediction: self.process.weighted_error(x0_of(prediction), x0, t),
            distill_loss=lambda student, teacher_: self.process.weighted_error(
                x0_of(student), x0_of(teacher_), t
            ),
            lam=lam,
            student_loops=student_loops,
        )

    def sampling_defaults(self) -> dict:
        """:data:`~elt.diffusion.config.SAMPLING_DEFAULTS` (50 steps, s = 2); the network samples
        in the precision it was trained in (``train.precision``: bf16 on CUDA by default) and with
        the config's solver (``diffusion.sampler``); the sampler's arithmetic stays float32."""
        precision = SAMPLING_DEFAULTS["precision"] or self.config.train.precision
        return {
            **SAMPLING_DEFAULTS,
            "precision": precision,
            "sampler": self.config.diffusion.sampler,
        }

    @torch.no_grad()
    def sample_latents(
        self,
        class_labels: Sequence[int] | torch.Tensor,
        loops: LoopSchedule = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        progress: bool = False,
        sampler: str | None = None,
        *,
        seeds: Sequence[int] | None = None,
        return_loops: bool = False,
        request: ResolvedRequest | None = None,
    ):
        """Samples in the space the network works in (pixels in [-1, 1], or scaled VAE latents);
        with ``return_loops`` also the loops each sample used at each step (int N×steps).
        ``request``: see :meth:`LoopedGenerator.generate`."""
        request = self.request_for(request, loops, steps, guidance, seed, sampler=sampler)
        steps, guidance, plan = request.steps, request.guidance, request.plan
        labels = labels_tensor(class_labels, self.num_classes, self.device, self.class_names)
        self.last_seed = resolve_seed(request.seed)
        generator = rng.make_streams(self.last_seed, seeds, len(labels), self.device)
        noise = rng.randn((len(labels), *self.data_shape), generator, self.device)
        d = self.config.diffusion
        integrator = build_sampler(request.sampler, float(d.ddim_eta))
        clip = (-1.0, 1.0) if d.clip_denoised and self.vae is None else None
        used = torch.zeros((len(labels), steps), dtype=torch.long)
        calls = []
        compiled = request.compile

        def denoise(z: torch.Tensor, t: torch.Tensor, k: int) -> torch.Tensor:
            step = len(calls)
            calls.append(k)
            if isinstance(plan, AdaptiveExit):
                out, loops_used = self.adaptive(z, t, labels, plan, guidance, clip)
                used[:, step] = loops_used.cpu()
                return out.float()
            used[:, step] = k
            if compiled:
                return self.compiled_step("guided", self.guided, loops=k, guidance=guidance)(
                    z, t, labels
                ).float()
            return self.guided(z, t, labels, k, guidance).float()

        schedule = [plan.max_loops] * steps if isinstance(plan, AdaptiveExit) else plan
        was_training = self.training
        self.eval()
        try:
            with autocast_context(self.device, request.precision):
                out = sample(
                    denoise,
                    noise,
                    self.process,
                    integrator,
                    schedule,
                    generator=generator,
                    clip=clip,
                    progress=progress,
                )
        finally:
            self.train(was_training)
        return (out, used.numpy()) if return_loops else out

    @torch.no_grad()
    def generate(
        self,
        class_labels,
        loops: LoopSchedule = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        progress: bool = False,
        sampler: str | None = None,
        *,
        seeds: Sequence[int] | None = None,
        return_loops: bool = False,
        request: ResolvedRequest | None = None,
    ):
        """See :meth:`LoopedGenerator.generate`; ``sampler`` (ddim | ddpm | euler) overrides
        ``diffusion.sampler``, e.g. ``sampler="ddpm", steps=512`` for the paper's ancestral
        sampling."""
        request = self.request_for(request, loops, steps, guidance, seed, sampler=sampler)
        samples, used = self.sample_latents(
            class_labels, progress=progress, seeds=seeds, return_loops=True, request=request
        )
        if self.vae is not None:
            samples = self.vae.decode(samples, channels=self.output_channels)
        images = to_uint8(samples)
        return (images, used) if return_loops else images

    def gflops_per_sample(
        self,
        loops: LoopSchedule = None,
        steps: int | None = None,
        guidance: float | None = None,
        loops_used: np.ndarray | None = None,
        *,
        request: ResolvedRequest | None = None,
    ) -> float:
        """Transformer GFLOPs (matmuls, 2·MACs) per sample over all sampling steps, CFG counted
        twice (the VAE decode, once per sample in latent space, is not included). An adaptive exit
        needs ``loops_used`` (N×steps from ``generate(..., return_loops=True)``): the mean over its
        samples, with the final layer read after every loop it ran. ``request``: a resolved
        one-point request in place of ``loops``, ``steps`` and ``guidance``."""
        request = self.request_for(request, loops, steps, guidance)
        steps, guidance, plan = request.steps, request.guidance, request.plan
        adaptive = isinstance(plan, AdaptiveExit)
        counts = loop_counts(plan, loops_used, steps)
        width, tokens = self.backbone.dim, self.tokens
        patch_dim = self.patch_embed.in_features
        embed = (
            2 * tokens * patch_dim * width  # patch embedding
            + 2 * (self.time_embed.frequency_dim * width + width * width)
        )  # timestep MLP
        final = 2 * width * 2 * width + 2 * tokens * width * patch_dim  # final adaLN + linear
        per_loop = tokens * self.backbone.flops_per_token(tokens, 1)
        per_loop += (  # adaLN-Zero modulation of each block, counted per loop as the architecture
            # has it; sampling computes it once per pass (≤ 3 % fewer FLOPs at the demo shapes)
            self.backbone.unique_layers * 2 * width * 6 * width
        )
        if adaptive:
            per_sample = steps * embed + counts.sum(1) * (per_loop + final)
        else:
            per_sample = steps * (embed + final) + counts.sum(1) * per_loop
        return float(per_sample.mean()) * (1 if guidance == 1.0 else 2) / 1e9
