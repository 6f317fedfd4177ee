"""The diffusion process, kept apart from the network (like SiT's path / target / integrator split).

A Gaussian path ``z_t = α(t)·x0 + σ(t)·ε``, t ∈ [0, 1] (t = 0 clean, t = 1 noise), is described by:

* an **interpolant** that maps the log signal-to-noise ratio λ = log(α²/σ²) to (α, σ):
  ``vp`` (α² + σ² = 1, DDPM) or ``linear`` (α + σ = 1, rectified flow);
* a **schedule** λ(t): ``cosine`` (λ = −2·log tan(πt/2), the cosine schedule in logSNR form) or
  ``linear`` (λ = 2·log((1 − t)/t), i.e. σ = t on the linear interpolant); both accept a logSNR
  shift (Simple Diffusion's "shifted cosine") and are clipped to [logsnr_min, logsnr_max] so both
  ends are finite;
* a **prediction** target the network outputs: ``x0``, ``eps`` or ``v`` (VP: α·ε − σ·x0, the angular
  velocity; linear: ε − x0, the flow velocity). For fixed (z_t, t) every target is an affine
  function of x̂0, so conversions are exact and classifier-free guidance means the same in every
  parameterisation;
* a **weighting** of the x0-space error ``w(t)·‖x̂0 − x0‖²``: ``sigmoid`` (w = sigmoid(λ − b), the
  x0-space form of the sigmoid weighting of Kingma & Gao / Hoogeboom et al., which the paper uses),
  or the weight that makes the loss equal a plain MSE on ``x0`` (w = 1), ``eps`` (w = e^λ) or ``v``
  (w = 1/σ²).

Writing every loss in x0 space is what the paper's ILSD distillation term needs: both the
ground-truth term and ``w(t)·‖x̂0_teacher − x̂0_student‖²`` compare clean-image predictions,
whatever the network outputs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from elt.core import batch_random
from elt.diffusion.config import PREDICTIONS, PROCESSES, WEIGHTINGS

INTERPOLANTS = ("vp", "linear")
SCHEDULES = ("cosine", "linear")


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


@dataclass(frozen=True)
class DiffusionProcess:
    """Noise path, prediction target and loss weighting; stateless and device-agnostic.

    All methods take ``t`` as a tensor of shape (B,) and broadcast the per-sample scalars over the
    data."""

    interpolant: str = "vp"
    schedule: str = "cosine"
    prediction: str = "x0"
    weighting: str = "sigmoid"
    sigmoid_bias: float = -3.0
    logsnr_shift: float = 0.0
    logsnr_min: float = -15.0
    logsnr_max: float = 15.0

    def __post_init__(self):
        _check("interpolant", self.interpolant, INTERPOLANTS)
        _check("schedule", self.schedule, SCHEDULES)
        _check("prediction", self.prediction, PREDICTIONS)
        _check("weighting", self.weighting, WEIGHTINGS)
        if not self.logsnr_min < self.logsnr_max:
            raise ValueError(
                f"logsnr_min {self.logsnr_min} must be below logsnr_max {self.logsnr_max}"
            )

    # -- the path ----------------------------------------------------------------------------------
    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        """λ(t) = log(α²/σ²), decreasing in t, shifted and clipped; computed in float64 (the ends
        are steep)."""
        t64 = t.double().clamp(1e-9, 1 - 1e-9)
        if self.schedule == "cosine":
            half_angle = 0.5 * math.pi * t64
            lam = 2.0 * (torch.log(torch.cos(half_angle)) - torch.log(torch.sin(half_angle)))
        else:
            lam = 2.0 * (torch.log1p(-t64) - torch.log(t64))
        return (lam + self.logsnr_shift).clamp(self.logsnr_min, self.logsnr_max)

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Signal and noise coefficients (float64, shape like ``t``)."""
        lam = self.logsnr(t)
        if self.interpolant == "vp":
            return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()
        return torch.sigmoid(0.5 * lam), torch.sigmoid(-0.5 * lam)

    def _coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(α, σ, a, b) broadcastable against ``like``, where the v target is ``a·ε − b·x0``."""
        alpha, sigma = self.alpha_sigma(t)
        if self.interpolant == "vp":
            a, b = alpha, sigma
        else:
            a, b = torch.ones_like(alpha), torch.ones_like(alpha)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return tuple(c.to(like.dtype).view(shape) for c in (alpha, sigma, a, b))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Sample of the forward marginal q(z_t | x0) given the noise ε."""
        alpha, sigma, _, _ = self._coefficients(t, x0)
        return alpha * x0 + sigma * noise

    # -- prediction targets ------------------------------------------------------------------------
    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output for clean data ``x0`` noised with ``noise`` at time
        ``t``."""
        if self.prediction == "x0":
            return x0
        if self.prediction == "eps":
            return noise
        _, _, a, b = self._coefficients(t, x0)
        return a * noise - b * x0

    def to_x0_eps(
        self, prediction: torch.Tensor, z: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂0, ε̂) implied by a network output at ``z_t``: the exact inverse of :meth:`target`."""
        alpha, sigma, a, b = self._coefficients(t, z)
        if self.prediction == "x0":
            x0 = prediction
            return x0, (z - alpha * x0) / sigma
        if self.prediction == "eps":
            eps = prediction
            return (z - sigma * eps) / alpha, eps
        det = alpha * a + sigma * b  # 1 for both interpolants; kept so the algebra reads in full
        return (a * z - sigma * prediction) / det, (b * z + alpha * prediction) / det

    def eps_from_x0(self, x0: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma, _, _ = self._coefficients(t, z)
        return (z - alpha * x0) / sigma

    # -- the objective -----------------------------------------------------------------------------
    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """w(t) on the x0-space squared error (float64, shape like ``t``)."""
        lam = self.logsnr(t)
        if self.weighting == "sigmoid":
            return torch.sigmoid(lam - self.sigmoid_bias)
        if self.weighting == "x0":
            return torch.ones_like(lam)
        if self.weighting == "eps":
            return torch.exp(lam)
        _, sigma = self.alpha_sigma(t)
        return sigma.pow(-2)

    def weighted_error(
        self, x0_a: torch.Tensor, x0_b: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """mean over the batch of w(t)·mean((x0_a − x0_b)²): the ground-truth and the distillation
        term alike."""
        per_sample = (x0_a - x0_b).float().pow(2).flatten(1).mean(1)
        return (self.loss_weight(t).to(per_sample.dtype) * per_sample).mean()

    def sample_time(
        self, batch: int, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Training times t ~ U(0, 1) (the schedule shapes the density of noise levels)."""
        if generator is None:  # inside a training step: keyed by the global sample index
            return batch_random.rand(batch, device=device)
        return torch.rand(batch, device=device, generator=generator)


def process_from_config(diffusion_cfg) -> DiffusionProcess:
    """``process: ddpm`` → VP + cosine schedule; ``process: flow`` → linear interpolant + linear
    schedule."""
    _check("diffusion.process", diffusion_cfg.process, PROCESSES)
    interpolant, schedule = (
        ("vp", "cosine") if diffusion_cfg.process == "ddpm" else ("linear", "linear")
    )
    return DiffusionProcess(
        interpolant=interpolant,
        schedule=schedule,
        prediction=diffusion_cfg.prediction,
        weighting=diffusion_cfg.weighting,
        sigmoid_bias=float(diffusion_cfg.sigmoid_bias),
        logsnr_shift=float(diffusion_cfg.logsnr_shift),
    )
