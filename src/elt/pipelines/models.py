"""The diffusers components of elt's pipelines: the transformer (a ``ModelMixin`` around elt's
generator network) and the diffusion solver (elt's sampler behind the ``SchedulerMixin`` interface).

No diffusers scheduler reproduces elt's diffusion process exactly: elt integrates in continuous
time t ∈ [0, 1] on a uniform grid over a VP-cosine (``process: ddpm``) or linear (``process: flow``)
path, with x̂0 clamping in pixel space, while diffusers' DDIM/DDPM schedulers walk a discrete
1000-step ``alphas_cumprod`` table. So :class:`ELTScheduler` wraps elt's own samplers
(:mod:`elt.diffusion.sampler`): ``set_timesteps`` gives elt's grid and ``step`` is one move of elt's
sampling loop."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin, SchedulerMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from omegaconf import OmegaConf

from elt.core.generator import LoopedGenerator
from elt.errors import ConfigError, UserError


def config_from_data(data: dict[str, Any], what: str = "the transformer's elt_config"):
    """A validated elt config from its plain form (what :func:`elt.config.to_yaml` writes), read the
    way a checkpoint's config is (migrations, key and value checks); errors name ``what``."""
    from elt import config as config_lib

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(data))
        try:
            return config_lib.from_yaml_file(path)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(repr(str(path)), what)) from None


def build_network(cfg, data_shape: list[int] | None = None) -> LoopedGenerator:
    """The generator a config describes, with random weights. A latent diffusion model is built
    without its VAE (the pipeline holds it as its ``vae`` component): ``data_shape`` gives the
    latent shape."""
    if cfg.paradigm == "diffusion" and cfg.diffusion.space == "latent":
        from elt.diffusion.model import DiffusionGenerator
        from elt.diffusion.process import process_from_config
        from elt.registry import build_backbone

        if not data_shape:
            raise UserError("a latent diffusion transformer needs data_shape (C×H×W of a latent)")
        return DiffusionGenerator(
            cfg,
            build_backbone(cfg, cond_dim=cfg.model.width),
            process_from_config(cfg.diffusion),
            data_shape,
        )
    from elt import registry

    return registry.build_generator(cfg)


class ELTTransformer(ModelMixin, ConfigMixin):
    """elt's generator network (looped core, embeddings, head; the masked model's tokenizer too) as
    a diffusers model. Its config is what rebuilds it: the run's elt config and, for a latent
    diffusion model, the latent shape. ``generator`` is the elt :class:`LoopedGenerator` itself:
    sampling runs elt's own code on it."""

    ignore_for_config = ["generator"]

    @register_to_config
    def __init__(
        self,
        elt_config: dict[str, Any],
        data_shape: list[int] | None = None,
        generator: LoopedGenerator | None = None,
    ):
        super().__init__()
        if generator is None:
            generator = build_network(config_from_data(elt_config), data_shape)
        self.generator = generator.eval()

    @classmethod
    def from_generator(cls, generator: LoopedGenerator) -> ELTTransformer:
        """Wrap a loaded generator (``elt.load``) without copying its weights."""
        cfg = generator.config
        latent = cfg.paradigm == "diffusion" and cfg.diffusion.space == "latent"
        return cls(
            elt_config=OmegaConf.to_container(cfg, resolve=True),
            data_shape=list(generator.data_shape) if latent else None,
            generator=generator,
        )

    @property
    def elt_config(self):
        """The generator's elt config (a DictConfig: sampling defaults, paradigm settings)."""
        return self.generator.config

    def forward(self, *args, **kwargs):
        """One network evaluation of the generator (see its ``forward``)."""
        return self.generator(*args, **kwargs)


@dataclass
class ELTSchedulerOutput(BaseOutput):
    """``prev_sample``: z at the next (earlier) time; ``pred_original_sample``: the x̂0 used."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class ELTScheduler(SchedulerMixin, ConfigMixin):
    """elt's diffusion solver behind the diffusers scheduler interface.

    ``sampler`` (ddim | ddpm | euler) and ``eta`` choose the integrator, ``process``,
    ``prediction``, ``logsnr_shift`` the path and what the network predicts (elt's ``diffusion:``
    section), ``clip_denoised`` clamps x̂0 to [-1, 1]. ``set_timesteps(n)`` gives elt's uniform
    grid 1 = t_0 > … > t_{n-1} (continuous times; the network embeds t·1000), ``step`` one move of
    :func:`elt.diffusion.sampler.sample` (the last one returns x̂0). The pipelines pass this
    config to elt's sampling code, so swapping the scheduler (``pipe.scheduler =
    ELTScheduler(sampler="ddpm", ...)``) changes the solver the pipeline uses."""

    config_name = "scheduler_config.json"
    order = 1

    @register_to_config
    def __init__(
        self,
        sampler: str = "ddim",
        eta: float = 0.0,
        process: str = "ddpm",
        prediction: str = "x0",
        logsnr_shift: float = 0.0,
        clip_denoised: bool = True,
    ):
        from elt.diffusion.config import PREDICTIONS, PROCESSES, SAMPLERS

        for key, value, allowed in (
            ("sampler", sampler, SAMPLERS),
            ("process", process, PROCESSES),
            ("prediction", prediction, PREDICTIONS),
        ):
            if value not in allowed:
                raise UserError(
                    f"ELTScheduler {key}={value!r} is not known; allowed: {', '.join(allowed)}"
                )
        if not 0.0 <= float(eta) <= 1.0:
            raise UserError(f"ELTScheduler eta={eta!r} is not allowed; allowed: 0 <= eta <= 1")
        self.timesteps = torch.tensor([])
        self.num_inference_steps = None
        self._grid: list[float] = []

    @classmethod
    def from_elt_config(cls, diffusion) -> ELTScheduler:
        """The scheduler of a diffusion model's ``diffusion:`` section (x̂0 clamping as elt does
        it: pixel space only)."""
        return cls(
            sampler=str(diffusion.sampler),
            eta=float(diffusion.ddim_eta),
            process=str(diffusion.process),
            prediction=str(diffusion.prediction),
            logsnr_shift=float(diffusion.logsnr_shift),
            clip_denoised=bool(diffusion.clip_denoised) and diffusion.space != "latent",
        )

    def apply_to(self, diffusion) -> None:
        """Write the solver settings into a model's ``diffusion:`` section (what elt's sampling
        code reads); the path and prediction must be the model's."""
        for key, mine in (("process", self.config.process), ("prediction", self.config.prediction)):
            if str(diffusion[key]) != mine:
                raise UserError(
                    f"ELTScheduler {key}={mine!r} does not match the model's {diffusion[key]!r}; "
                    "the network was trained for its own; allowed: a scheduler with "
                    f"{key}={diffusion[key]!r}"
                )
        diffusion.sampler = self.config.sampler
        diffusion.ddim_eta = float(self.config.eta)
        if diffusion.space != "latent":
            diffusion.clip_denoised = bool(self.config.clip_denoised)

    # -- the scheduler interface -------------------------------------------------------------------
    def _process(self):
        from elt.diffusion.process import process_from_config

        return process_from_config(
            OmegaConf.create(
                {
                    "process": self.config.process,
                    "prediction": self.config.prediction,
                    "weighting": "sigmoid",  # (training only)
                    "sigmoid_bias": 0.0,
                    "logsnr_shift": self.config.logsnr_shift,
                }
            )
        )

    def _sampler(self):
        from elt.diffusion.sampler import build_sampler

        return build_sampler(self.config.sampler, float(self.config.eta))

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None):
        grid = self._sampler().timesteps(int(num_inference_steps))
        self._grid = grid
        self.num_inference_steps = int(num_inference_steps)
        self.timesteps = torch.tensor(grid[:-1], dtype=torch.float32, device=device)

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ):
        """One move of elt's sampler from ``timestep`` to the next time of the grid."""
        if not self._grid:
            raise UserError("call set_timesteps(num_inference_steps) before step()")
        t = float(timestep)
        index = min(range(len(self._grid) - 1), key=lambda i: abs(self._grid[i] - t))
        t, s = self._grid[index], self._grid[index + 1]
        process = self._process()
        t_batch = torch.full((sample.shape[0],), t, device=sample.device)
        x0, eps = process.to_x0_eps(model_output, sample, t_batch)
        if self.config.clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
            eps = process.eps_from_x0(x0, sample, t_batch)
        prev = x0 if s <= 0.0 else self._sampler().step(process, sample, t, s, x0, eps, generator)
        if not return_dict:
            return (prev, x0)
        return ELTSchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    def __len__(self) -> int:
        return self.num_inference_steps or 0
