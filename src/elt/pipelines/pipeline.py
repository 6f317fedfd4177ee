"""``ELTDiffusionPipeline`` and ``ELTMaskedPipeline``: elt's generators as diffusers pipelines.

A pipeline drives elt's own sampling code (``generator.generate``) on the wrapped network, so its
images are bit for bit those of ``elt.load(...).generate(...)`` with the same arguments; what it
adds is diffusers' packaging: components, ``save_pretrained``/``from_pretrained``, the call
conventions and an :class:`ELTPipelineOutput`.

The seed rule (``generator=``), mapped onto elt's (an int seed makes a sample deterministic):

* an int ``s`` is elt's ``seed=s``;
* a ``torch.Generator`` freshly seeded with ``manual_seed(s)`` is also ``seed=s`` (elt's random
  stream *is* ``torch.Generator().manual_seed(s)``); a generator that has already been drawn from
  gives the seed drawn from it (a 62-bit int). Either way the call draws once from it, so reusing
  one generator across calls gives new images, as in diffusers;
* a list of them (one per image) is elt's ``seeds=[...]``: every image its own stream, the same
  image whatever batch it is in;
* ``None`` draws a fresh seed from OS entropy. The seed(s) used are in the output's ``seed``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, ImagePipelineOutput

from elt.core.request import SampleRequest
from elt.core.schedule import LoopSchedule, as_point
from elt.errors import UserError
from elt.pipelines.models import ELTScheduler, ELTTransformer

OUTPUT_TYPES = ("pil", "np", "pt")


@dataclass
class ELTPipelineOutput(ImagePipelineOutput):
    """``images``: a list of PIL images (video: a list of frame lists), or float arrays / tensors
    in [0, 1] that are elt's uint8 images / 255 (np: N×H×W×C, video N×T×H×W×C; pt: N×C×H×W, video
    N×T×C×H×W). ``loops``: the loop count each image used at each step (int N×steps; an adaptive
    exit varies per image). ``gflops``: forward GFLOPs per image actually spent (mean over the
    batch). ``seed``: elt's seed (or the list of per-image seeds) the call used. ``steps``,
    ``guidance``: the settings used."""

    loops: np.ndarray = None
    gflops: float = 0.0
    seed: int | list[int] | None = None
    steps: int = 0
    guidance: float = 0.0


def _fresh(generator: torch.Generator) -> bool:
    """Whether ``generator`` is in the state ``manual_seed(initial_seed())`` leaves it in."""
    probe = torch.Generator(device=generator.device).manual_seed(generator.initial_seed())
    return bool(torch.equal(probe.get_state(), generator.get_state()))


def seed_of(item: Any, what: str = "generator") -> int:
    """elt's seed for one ``generator=`` item (see the module docstring); draws once from a
    ``torch.Generator``."""
    if isinstance(item, torch.Generator):
        fresh = _fresh(item)
        drawn = int(torch.randint(0, 2**62, (1,), generator=item, device=item.device))
        return int(item.initial_seed()) if fresh else drawn
    if isinstance(item, (int, np.integer)) and not isinstance(item, bool) and item >= 0:
        return int(item)
    raise UserError(
        f"{what}={item!r} is not allowed; allowed: a torch.Generator, an int seed >= 0, a list of "
        "them (one per image) or None"
    )


def seeds_for(generator: Any, batch: int) -> tuple[int | None, list[int] | None]:
    """(seed, seeds) for elt's ``generate`` from diffusers' ``generator=``."""
    if generator is None:
        return None, None
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise UserError(
                f"generator is a list of {len(generator)} for {batch} images; allowed: one "
                "generator (or seed) per image, or a single one"
            )
        return None, [seed_of(g, "generator[i]") for g in generator]
    return seed_of(generator), None


class _ELTPipeline(DiffusionPipeline):
    """What both pipelines share: loading elt models, the call, the output."""

    paradigm = ""
    model_cpu_offload_seq = "transformer"

    # -- loading -----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """A pipeline folder (``save_pretrained``, ``model_index.json``) or Hub repository of one,
        loaded by diffusers; anything ``elt.load`` takes (a shipped model ``demo:NAME``, a Hub
        folder, a Hub repo id, a checkpoint or run directory) through :meth:`from_elt`
        (keyword arguments: ``device``, ``ema``, ``overrides``)."""
        source = pretrained_model_name_or_path
        folder = _pipeline_folder(source)
        if folder is None:
            unknown = sorted(set(kwargs) - {"device", "ema", "overrides"})
            if unknown:
                raise UserError(
                    f"from_pretrained({str(source)!r}) loads an elt model: {', '.join(unknown)} "
                    "not allowed; allowed: device, ema, overrides (then pipe.to(...) as usual)"
                )
            return cls.from_elt(source, **kwargs)
        kwargs.setdefault("low_cpu_mem_usage", False)  # (without accelerate, diffusers' default)
        pipe = super().from_pretrained(str(folder), **kwargs)
        pipe._check_paradigm(str(source))
        return pipe

    @classmethod
    def from_elt(
        cls,
        source: str | Path,
        *,
        device: str = "cpu",
        ema: bool = True,
        overrides: list[str] | tuple[str, ...] = (),
    ):
        """The pipeline of an elt model: what ``elt.load(source, ema, device, overrides)`` loads."""
        from elt.inference.checkpoints import load_generator

        return cls.from_generator(
            load_generator(source, ema=ema, device=device, overrides=overrides)
        )

    @classmethod
    def from_generator(cls, generator):
        """Wrap a loaded elt generator (shared, not copied: a diffusion pipeline writes its
        scheduler's solver settings into the generator's ``diffusion:`` config before sampling)."""
        paradigm = str(generator.config.paradigm)
        if paradigm != cls.paradigm:
            raise UserError(_wrong_paradigm(cls, paradigm, "this model"))
        return cls(**cls._components(generator))

    @classmethod
    def _components(cls, generator) -> dict[str, Any]:
        return {"transformer": ELTTransformer.from_generator(generator)}

    def _check_paradigm(self, source: str) -> None:
        paradigm = str(self.transformer.elt_config.paradigm)
        if paradigm != self.paradigm:
            raise UserError(_wrong_paradigm(type(self), paradigm, repr(source)))

    # -- the call ----------------------------------------------------------------------------------
    @property
    def elt_generator(self):
        """The elt generator the pipeline samples with (``elt.load``'s object)."""
        return self.transformer.generator

    def _prepare(self) -> None:
        """Bring the generator in line with the pipeline's other components before sampling."""

    @property
    def id2label(self) -> dict[int, str]:
        """Class number -> class name, as diffusers' DiTPipeline has it (empty for a model
        without stored class names)."""
        return dict(enumerate(self.elt_generator.class_names or []))

    @property
    def labels(self) -> dict[str, int]:
        """Class name -> class number, sorted by name (DiTPipeline's ``labels``)."""
        return dict(sorted((name, i) for i, name in self.id2label.items()))

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """The class numbers of class names (DiTPipeline's ``get_label_ids``); an unknown name
        is one line listing the known ones."""
        from elt.core.generator import label_index

        names = [label] if isinstance(label, str) else list(label)
        for name in names:
            if not isinstance(name, str):
                raise UserError(f"get_label_ids takes class names, got {name!r}")
        return [int(label_index(n, self.elt_generator.class_names)) for n in names]

    def _labels(self, class_labels) -> list[int]:
        count = int(self.elt_generator.num_classes)
        names = self.elt_generator.class_names
        allowed = (
            f"allowed: integers 0..{count - 1} (or -1 for unconditional)"
            + (f" or class names ({', '.join(names[:20])})" if names else "")
            + ", one per image"
        )
        if isinstance(class_labels, torch.Tensor):
            class_labels = class_labels.tolist()
        elif isinstance(class_labels, np.ndarray):
            class_labels = class_labels.tolist()
        items = [class_labels] if not isinstance(class_labels, (list, tuple)) else class_labels
        if not items:
            raise UserError(f"class_labels is empty; {allowed}")
        items = [self.get_label_ids(i)[0] if isinstance(i, str) else i for i in items]
        for item in items:
            ok = isinstance(item, (int, np.integer)) and not isinstance(item, bool)
            if not ok or not -1 <= int(item) < count:
                raise UserError(f"class_labels holds {item!r}; {allowed}")
        return [int(v) for v in items]

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | int | list | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        *,
        loops: LoopSchedule = None,
    ) -> ELTPipelineOutput | tuple:
        """Sample one image (video: one clip) per class label.

        Args:
            class_labels: an int or a list of ints in 0..num_classes-1 (-1: unconditional), or
                class names where the model has them (:attr:`id2label`).
            num_inference_steps: sampling steps (masked decoding steps, diffusion steps); None:
                the model's ``sampling.steps``, else the paradigm's default.
            guidance_scale: classifier-free guidance s in uncond + s·(cond − uncond) (1: the
                conditional model alone); None: the model's default.
            generator: see the module docstring (maps to elt's seed rule).
            output_type: ``"pil"``, ``"np"`` or ``"pt"``.
            loops: elt's operating point: a loop count, a per-step schedule (a list, ``"4:1"``,
                ``"3x6+2x6"``), or an adaptive exit (``"exit:0.05"``); None: the model's default
                (L_max).
        Returns:
            :class:`ELTPipelineOutput` (or ``(images,)`` when ``return_dict`` is false)."""
        if output_type not in OUTPUT_TYPES:
            raise UserError(
                f"output_type={output_type!r} is not known; allowed: {', '.join(OUTPUT_TYPES)}"
            )
        labels = self._labels(class_labels)
        point = as_point(loops)  # an unknown string or bad value: one line naming it
        if num_inference_steps is not None and (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, (int, np.integer))
            or num_inference_steps < 1
        ):
            raise UserError(
                f"num_inference_steps={num_inference_steps!r} is not allowed; allowed: an "
                "integer >= 1, or None for the model's default"
            )
        if guidance_scale is not None:
            from elt.config import check_guidance

            check_guidance(guidance_scale, "guidance_scale")
        seed, seeds = seeds_for(generator, len(labels))
        self._prepare()
        gen = self.elt_generator
        # one request, resolved once (a bad point or loop ceiling: one line before any sampling)
        request = gen.resolve_request(
            SampleRequest(
                points=(point,), steps=num_inference_steps, guidance=guidance_scale, seed=seed
            )
        )
        steps, guidance = request.steps, request.guidance
        progress = not getattr(self, "_progress_bar_config", {}).get("disable", False)
        images, used = gen.generate(
            labels, progress=progress, seeds=seeds, return_loops=True, request=request
        )
        gflops = gen.gflops_per_sample(loops_used=used, request=request)
        self.maybe_free_model_hooks()
        images = convert(images, output_type)
        if not return_dict:
            return (images,)
        return ELTPipelineOutput(
            images=images,
            loops=np.asarray(used),
            gflops=float(gflops),
            seed=seeds if seeds is not None else int(gen.last_seed),
            steps=int(steps),
            guidance=float(guidance),
        )


def convert(images: np.ndarray, output_type: str):
    """elt's uint8 images (N×H×W×C or N×T×H×W×C) → the requested type, every value exact."""
    if output_type == "np":
        return images.astype(np.float32) / 255.0
    if output_type == "pt":
        tensor = torch.from_numpy(images.astype(np.float32) / 255.0)
        return tensor.movedim(-1, -3).contiguous()  # channels before height: (N[, T], C, H, W)

    def pil(frame: np.ndarray) -> PIL.Image.Image:
        return PIL.Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame)

    if images.ndim == 5:
        return [[pil(frame) for frame in clip] for clip in images]
    return [pil(image) for image in images]


def _wrong_paradigm(cls, paradigm: str, what: str) -> str:
    other = ELTMaskedPipeline if paradigm == "masked" else ELTDiffusionPipeline
    return (
        f"{what} is a {paradigm} model, not a {cls.paradigm} one; load it with "
        f"{other.__name__}.from_pretrained (or elt.pipelines.load_pipeline, which picks the class)"
    )


def _pipeline_folder(source: Any) -> Path | None:
    """The local folder of a diffusers pipeline (``model_index.json``) ``source`` names, or None
    (then it is something ``elt.load`` takes)."""
    from elt.inference import hub

    if isinstance(source, str) and source.startswith("demo:"):
        return None
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        return Path(source) if (Path(source) / hub.PIPELINE_INDEX).is_file() else None
    repo = hub.repo_id_of(source)
    if repo is None:
        return None
    folder = hub.snapshot(repo)
    return folder if (folder / hub.PIPELINE_INDEX).is_file() else None


class ELTMaskedPipeline(_ELTPipeline):
    """Class-conditional masked-token generation (MaskGIT decoding) with an ELT; images, or clips
    for a video model. Component: ``transformer`` (the generator, its tokenizer inside; MaskGIT's
    decoding schedule and temperatures are the model's ``masked:`` settings)."""

    paradigm = "masked"

    def __init__(self, transformer: ELTTransformer):
        super().__init__()
        self.register_modules(transformer=transformer)


class ELTDiffusionPipeline(_ELTPipeline):
    """Class-conditional diffusion with an ELT (DiT-style). Components: ``transformer``,
    ``scheduler`` (:class:`ELTScheduler`, elt's solver), and ``vae`` (diffusers ``AutoencoderKL``)
    for a latent-space model, else None."""

    paradigm = "diffusion"
    _optional_components = ["vae"]

    def __init__(
        self,
        transformer: ELTTransformer,
        scheduler: ELTScheduler,
        vae: AutoencoderKL | None = None,
    ):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler, vae=vae)

    @classmethod
    def _components(cls, generator) -> dict[str, Any]:
        cfg = generator.config
        return {
            "transformer": ELTTransformer.from_generator(generator),
            "scheduler": ELTScheduler.from_elt_config(cfg.diffusion),
            "vae": generator.vae.model if generator.vae is not None else None,
        }

    def _prepare(self) -> None:
        gen = self.elt_generator
        diffusion = gen.config.diffusion
        self.scheduler.apply_to(diffusion)
        if diffusion.space != "latent":
            return
        if self.vae is None:
            raise UserError(
                "this latent diffusion model needs its vae component (a diffusers AutoencoderKL): "
                "ELTDiffusionPipeline(transformer, scheduler, vae=AutoencoderKL...)"
            )
        if gen.vae is None or gen.vae.model is not self.vae:
            from elt.tokenizers.vae import PretrainedVAE

            gen.vae = PretrainedVAE(self.vae, scaling_factor=diffusion.latent_scale)


def load_pipeline(source: str | Path, **kwargs) -> ELTMaskedPipeline | ELTDiffusionPipeline:
    """The pipeline class that fits ``source`` (masked or diffusion), loaded with its
    ``from_pretrained``."""
    import json

    folder = _pipeline_folder(source)
    if folder is not None:
        index = json.loads((folder / "model_index.json").read_text())
        name = index.get("_class_name")
        classes = {c.__name__: c for c in (ELTMaskedPipeline, ELTDiffusionPipeline)}
        if name not in classes:
            raise UserError(
                f"{str(source)!r} holds a {name} pipeline; allowed: {', '.join(classes)} folders"
            )
        return classes[name].from_pretrained(source, **kwargs)
    from elt.inference.checkpoints import load_generator

    options = {k: kwargs[k] for k in ("device", "ema", "overrides") if k in kwargs}
    generator = load_generator(source, **options)
    cls = ELTMaskedPipeline if generator.config.paradigm == "masked" else ELTDiffusionPipeline
    return cls.from_generator(generator)
