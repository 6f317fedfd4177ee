"""Samplers (integrators) over a :class:`~elt.diffusion.process.DiffusionProcess`, independent of
the network.

The loop ``sample`` walks a time grid 1 = t_0 > t_1 > … > t_K = 0. At each step it asks a
``denoise`` callable for the network output at (z_t, t) with that step's loop count, converts it to
(x̂0, ε̂) and moves to the next time with one of:

* ``DDPMSampler`` — ancestral sampling from the posterior q(z_s | z_t, x0 = x̂0) (valid for any
  Gaussian path with increasing noise, so also the linear one). The paper samples with 512 such
  steps.
* ``DDIMSampler`` — z_s = α_s·x̂0 + √(σ_s² − η²·v)·ε̂ + η·√v·n, with v the ancestral variance; η = 0
  is deterministic, and on the linear (rectified-flow) path exactly an Euler step of the velocity ε̂
  − x̂0; η = 1 coincides with DDPM.

The last step (to t = 0) returns x̂0 itself. Every random draw comes from the caller's
``torch.Generator``, so a seed fixes the samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from elt.core import rng
from elt.diffusion.config import SAMPLERS
from elt.diffusion.process import DiffusionProcess

Denoise = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def _scalars(process: DiffusionProcess, t: float) -> tuple[float, float]:
    alpha, sigma = process.alpha_sigma(torch.tensor([t], dtype=torch.float64))
    return float(alpha), float(sigma)


def posterior(process: DiffusionProcess, t: float, s: float) -> tuple[float, float, float]:
    """q(z_s | z_t, x0) = N(c_z·z_t + c_x·x0, var) for s < t: returns (c_z, c_x, var)."""
    alpha_t, sigma_t = _scalars(process, t)
    alpha_s, sigma_s = _scalars(process, s)
    alpha_ts = alpha_t / alpha_s
    var_ts = max(sigma_t**2 - alpha_ts**2 * sigma_s**2, 0.0)
    c_z = alpha_ts * sigma_s**2 / sigma_t**2
    c_x = alpha_s * var_ts / sigma_t**2
    return c_z, c_x, var_ts * sigma_s**2 / sigma_t**2


class Sampler:
    """A rule for one move from time t to an earlier time s, given the current (x̂0, ε̂)."""

    name = "base"

    def timesteps(self, steps: int) -> list[float]:
        """Uniform grid from 1 (pure noise) to 0 (data), ``steps + 1`` points."""
        if steps < 1:
            raise ValueError(f"sampling needs at least 1 step, got {steps}")
        return [1.0 - i / steps for i in range(steps + 1)]

    def step(
        self,
        process: DiffusionProcess,
        z: torch.Tensor,
        t: float,
        s: float,
        x0: torch.Tensor,
        eps: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        raise NotImplementedError


class DDPMSampler(Sampler):
    """Ancestral sampling: draw z_s from the posterior with x0 replaced by the model's x̂0."""

    name = "ddpm"

    def step(self, process, z, t, s, x0, eps, generator):
        c_z, c_x, var = posterior(process, t, s)
        noise = rng.randn(z.shape, generator, z.device, z.dtype)
        return c_z * z + c_x * x0 + var**0.5 * noise


class DDIMSampler(Sampler):
    """DDIM with stochasticity ``eta`` (0: deterministic; Euler on the flow path)."""

    name = "ddim"

    def __init__(self, eta: float = 0.0):
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"ddim eta must lie in [0, 1], got {eta}")
        self.eta = eta

    def step(self, process, z, t, s, x0, eps, generator):
        alpha_s, sigma_s = _scalars(process, s)
        if self.eta == 0.0:
            return alpha_s * x0 + sigma_s * eps
        _, _, var = posterior(process, t, s)
        noise_var = self.eta**2 * var
        noise = rng.randn(z.shape, generator, z.device, z.dtype)
        return alpha_s * x0 + max(sigma_s**2 - noise_var, 0.0) ** 0.5 * eps + noise_var**0.5 * noise


def build_sampler(name: str, eta: float = 0.0) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}")
    return DDPMSampler() if name == "ddpm" else DDIMSampler(eta if name == "ddim" else 0.0)


@torch.no_grad()
def sample(
    denoise: Denoise,
    noise: torch.Tensor,
    process: DiffusionProcess,
    sampler: Sampler,
    loop_schedule: Sequence[int],
    generator: rng.Streams = None,
    clip: tuple[float, float] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Integrate from ``noise`` (z at t = 1) to data; step k calls ``denoise(z, t,
    loop_schedule[k])``.

    ``clip`` clamps x̂0 (pixel space) and re-derives ε̂ from the clamped x̂0 so the step stays on
    the path. Returns the final x̂0. ``generator`` may be one per sample (:mod:`elt.core.rng`)."""
    steps = len(loop_schedule)
    grid = sampler.timesteps(steps)
    z = noise
    x0 = noise
    for k in tqdm(range(steps), desc="denoise", disable=not progress, leave=False):
        t, s = grid[k], grid[k + 1]
        t_batch = torch.full((z.shape[0],), t, device=z.device)
        prediction = denoise(z, t_batch, int(loop_schedule[k]))
        x0, eps = process.to_x0_eps(prediction, z, t_batch)
        if clip is not None:
            x0 = x0.clamp(*clip)
            eps = process.eps_from_x0(x0, z, t_batch)
        if s <= 0.0:
            return x0
        z = sampler.step(process, z, t, s, x0, eps, generator)
    return x0
