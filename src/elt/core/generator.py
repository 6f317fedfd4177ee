"""The contract every paradigm's generator fulfils, so that the trainer, ``elt sample``, ``elt
eval`` and ``elt.load`` work the same for masked and diffusion models."""

from __future__ import annotations

import functools
import os
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from elt.core import request as request_lib
from elt.core.ilsd import ILSDTerms
from elt.core.looped import LoopedTransformer
from elt.core.request import ResolvedRequest, SampleRequest
from elt.core.schedule import AdaptiveExit, LoopSchedule, loops_per_step, resolve

__all__ = [
    "LoopSchedule",
    "LoopedGenerator",
    "ResolvedRequest",
    "SampleRequest",
    "labels_tensor",
    "loop_counts",
    "loops_per_step",
    "resolve",
    "to_uint8",
]


class LoopedGenerator(nn.Module, ABC):
    """A class-conditional generator whose backbone is a :class:`LoopedTransformer`.

    Subclasses set ``self.backbone`` and ``self.config`` (the full run config) and implement the
    three methods below.
    """

    backbone: LoopedTransformer
    num_classes: int
    # the sampling settings this generator has besides steps/guidance/loops/seed (SampleRequest)
    sampling_options: ClassVar[tuple[str, ...]] = ("precision", "compile")

    @property
    def class_names(self) -> list[str] | None:
        """The class names in label order (``data.class_names`` of the config the model was
        trained with); None for data without names and checkpoints saved before they were
        stored."""
        config = getattr(self, "config", None)
        names = None
        if config is not None:
            data = getattr(config, "data", None)
            names = getattr(data, "class_names", None) if data is not None else None
        return [str(n) for n in names] if names else None

    @property
    def trained_loops(self) -> int:
        """L_max: the loop count the model was trained with (the default when sampling)."""
        return self.backbone.loops

    @abstractmethod
    def training_loss(self, batch: Any, student_loops: int | None, lam: float) -> ILSDTerms:
        """One forward pass of L_max loops on a training batch; ILSD terms when ``student_loops`` is
        given, the teacher's ground-truth loss alone otherwise."""

    @abstractmethod
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
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Sample one image per label; returns uint8 N×H×W×C (video: N×T×H×W×C).

        ``loops`` is an operating point (:mod:`elt.core.schedule`): one loop count for every
        sampling step, one per step (a list, ``"4:1"``, ``"1x6+4x6"``), or an adaptive exit
        (``"exit:0.05"``, :class:`~elt.core.schedule.AdaptiveExit`); ``None`` uses the config's
        ``sampling.loops``, else L_max. ``steps``/``guidance`` default to the config's ``sampling``
        section, then to the paradigm's defaults. ``guidance`` is the classifier-free guidance scale
        s in output = uncond + s·(cond − uncond): 1 is the conditional model alone (no unconditional
        pass), 0 the unconditional one. Seed rule: an int seed makes the samples deterministic (same
        seed, same arguments → same images), and ``seed=None`` draws a fresh seed from OS entropy
        and records it in ``self.last_seed``. ``seeds`` (one per sample) gives every sample its own
        random stream, so it is the same image in any batch. ``return_loops`` also returns the loops
        each sample used at each step (int N×steps).

        ``request``: a request already resolved (:meth:`resolve_request`, one operating point) in
        place of ``loops``/``steps``/``guidance``/``seed``, which then stay unset; without it those
        arguments are built into a request and resolved once."""

    # -- sampling requests -------------------------------------------------------------------------
    def sampling_defaults(self) -> dict[str, Any]:
        """The paradigm's sampling settings where the config's ``sampling:`` section leaves them
        null (``steps``, ``guidance``, ``precision``, ...); none for a generator that decides them
        in its own ``generate``."""
        return {}

    def resolve_request(self, request: SampleRequest | ResolvedRequest) -> ResolvedRequest:
        """Every setting of ``request`` decided once against this model (the request, else the
        config's ``sampling:`` section, else :meth:`sampling_defaults`), every operating point
        resolved into per-step loops within the loop ceiling (:func:`elt.limits.loop_ceiling`:
        4·L_max, at least 8). A request already resolved is returned as it is."""
        if isinstance(request, ResolvedRequest):
            return request
        return request_lib.resolve_request(
            request,
            getattr(self, "config", None),
            self.sampling_defaults(),
            self.trained_loops,
            self.sampling_options,
        )

    def request_for(
        self,
        request: ResolvedRequest | None,
        loops: LoopSchedule = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
        **settings: Any,
    ) -> ResolvedRequest:
        """What ``generate`` runs: ``request`` when given (the other arguments must then be unset),
        else a one-point request of the arguments, resolved once."""
        if request is None:
            return self.resolve_request(
                SampleRequest.one(loops, steps=steps, guidance=guidance, seed=seed, **settings)
            )
        given = {"loops": loops, "steps": steps, "guidance": guidance, "seed": seed, **settings}
        clash = [name for name, value in given.items() if value is not None]
        if clash:
            raise ValueError(
                f"give either a resolved request or {', '.join(clash)}, not both (the request "
                "already holds them)"
            )
        if not isinstance(request, ResolvedRequest):
            raise TypeError(
                f"request must be a ResolvedRequest (generator.resolve_request), got "
                f"{type(request).__name__}"
            )
        return request.one_point()

    def sampling_settings(
        self, steps: int | None = None, guidance: float | None = None
    ) -> tuple[int | None, float | None]:
        """(steps, guidance s) that sampling runs with these arguments: the arguments, else the
        config's ``sampling.*``, else the paradigm's defaults (what records should say)."""
        resolved = self.resolve_request(SampleRequest.one(None, steps=steps, guidance=guidance))
        return resolved.steps, resolved.guidance

    @abstractmethod
    def gflops_per_sample(
        self, loops: LoopSchedule = None, steps: int | None = None, guidance: float | None = None
    ) -> float:
        """Forward GFLOPs (matmuls) to generate one sample, computed analytically."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # -- compiled sampling -------------------------------------------------------------------------
    def compiled_step(self, name: str, function: Callable, **constants: Any) -> Callable:
        """``function(*tensors, **constants)`` compiled with ``torch.compile``, once per (name,
        constants) and input shapes, cached on the generator and reused by every sampling step (see
        :func:`compile_step`).

        The cache is dropped when a parameter changed since it was filled (an optimizer step, a
        ``load_state_dict``, a move to another device): on a CPU the weights are frozen into the
        compiled code."""
        state = parameter_state(self)
        cache = self.__dict__.setdefault("_compiled_steps", {})
        if cache.get("state") != state:
            cache.clear()
            cache["state"] = state
        key = (name, tuple(sorted(constants.items())))
        if key not in cache:
            cache[key] = compile_step(functools.partial(function, **constants), self.device)
        return cache[key]


def parameter_state(module: nn.Module) -> tuple:
    """Identity and in-place version of every parameter: changes when the weights change."""
    return tuple((id(p), p._version) for p in module.parameters())


COMPILE_RECOMPILE_LIMIT = (
    64  # compiled sampling steps per generator: loop counts × guidance × batch shapes
)


# inductor's options on a CPU (compile_step): the C++ wrapper, and frozen weights left in ATen's
# layout (constant-folded, transposed once) rather than pre-packed for oneDNN/MKL, whose linear op
# was up to 7 % slower and at most 0.2 % faster at the demo shapes (benchmarks/compile_variants.py)
CPU_COMPILE_OPTIONS = {"cpp_wrapper": True, "cpp.weight_prepack": False}


def compile_step(function: Callable, device: torch.device) -> Callable:
    """One sampling step compiled for ``device``: on CUDA ``mode="reduce-overhead"`` (CUDA graphs:
    the step's launches replayed as one graph; outputs are cloned, since the next replay overwrites
    them), elsewhere inductor with the weights frozen into the code (freezing: constant-folded, so
    bf16 autocast's weight casts and the linear layers' weight transposes happen once, at compile
    time) and its C++ wrapper (``cpp_wrapper``: the compiled graph's kernels called from C++, not
    one Python call each), which is what makes small batches faster on a CPU. Shapes are static:
    each (batch, loops) compiles once. Dynamo's limit of recompilations per function is raised to
    :data:`COMPILE_RECOMPILE_LIMIT` while it compiles (every loop count and batch shape is one entry
    of the same code).

    Freezing is switched on around each call, not through ``torch.compile(options=...)``: Dynamo
    decides whether parameters become constants from the global ``torch._inductor.config.freezing``
    when it traces, so inductor's per-call options cannot turn it on (they leave every weight a
    graph input). Frozen weights are why :meth:`LoopedGenerator.compiled_step` drops its cache when
    a parameter changes, and why each compiled step traces through a code object of its own
    (:func:`_own_entry`) as one graph (``fullgraph``): Dynamo keeps compiled code on the code object
    it traced, guarding a frozen parameter by identity only, so a step compiled again after an
    in-place weight change would otherwise be served the code with the old weights. Outputs are
    returned as they come (a tensor or a tuple of them)."""
    import torch._dynamo.config
    import torch._inductor.config

    cpu = device.type != "cuda"
    entry = _own_entry(function)
    if cpu:
        compiled = torch.compile(entry, fullgraph=True, dynamic=False, options=CPU_COMPILE_OPTIONS)
    else:
        compiled = torch.compile(entry, fullgraph=True, mode="reduce-overhead", dynamic=False)
    inductor, dynamo = torch._inductor.config, torch._dynamo.config

    def run(*args: Any, **kwargs: Any) -> Any:
        # plain attribute swaps (about 8 µs) rather than config.patch (about 45 µs per call)
        freezing, limit = inductor.freezing, dynamo.recompile_limit
        inductor.freezing = freezing or cpu
        dynamo.recompile_limit = max(limit, COMPILE_RECOMPILE_LIMIT)
        try:
            out = compiled(*args, **kwargs)
        finally:
            inductor.freezing, dynamo.recompile_limit = freezing, limit
        if cpu:
            return out
        return torch.utils._pytree.tree_map_only(torch.Tensor, torch.clone, out)

    return run


def _own_entry(function: Callable) -> Callable:
    """``function`` called through a fresh copy of a one-line trampoline's code object, so that
    what Dynamo caches on the code it traces belongs to this compiled step alone (not shared with
    another generator of the same class, nor with this one's earlier weights)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    return types.FunctionType(
        call.__code__.replace(), call.__globals__, "compiled_step", None, call.__closure__
    )


def resolve_seed(seed: int | None) -> int:
    """The seed rule of every generator: an int is used as given; ``None`` draws a fresh one from OS
    entropy."""
    return int.from_bytes(os.urandom(8), "little") >> 2 if seed is None else int(seed)


def labels_tensor(
    class_labels: Sequence[int | str] | torch.Tensor,
    num_classes: int,
    device: torch.device,
    class_names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Class labels as a long tensor; a label may be a class name (``"circle"``) where the model
    knows its class names (:attr:`LoopedGenerator.class_names`)."""
    if isinstance(class_labels, (str, int)):
        class_labels = [class_labels]
    if not isinstance(class_labels, torch.Tensor):
        class_labels = [label_index(label, class_names) for label in class_labels]
    labels = torch.as_tensor(class_labels, dtype=torch.long, device=device).reshape(-1)
    if labels.numel() and (labels.min() < -1 or labels.max() >= num_classes):
        raise ValueError(f"class labels must lie in 0..{num_classes - 1} (or -1 for unconditional)")
    return labels


def label_index(label: Any, class_names: Sequence[str] | None) -> Any:
    """A class name's label (its index in ``class_names``); any other value as it is. An unknown
    name is a one-line :class:`~elt.errors.UserError` listing the known ones."""
    if not isinstance(label, str):
        return label
    from elt.errors import UserError

    names = list(class_names or [])
    if label in names:
        return names.index(label)
    if label.strip().lstrip("-").isdigit():
        return int(label)
    shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    raise UserError(
        f"unknown class name {label[:60]!r}; "
        + (
            f"allowed: {shown} (or 0..{len(names) - 1})"
            if names
            else "this model has no class "
            "names (checkpoints store them from data.class_names): give class numbers"
        )
    )


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Model-space images in [-1, 1], channels first (N×C×H×W or N×C×T×H×W) → uint8 channels
    last."""
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    order = (0, 2, 3, 1) if images.ndim == 4 else (0, 2, 3, 4, 1)
    return images.permute(*order).cpu().numpy()


def loop_counts(
    plan: list[int] | AdaptiveExit, loops_used: np.ndarray | None, steps: int
) -> np.ndarray:
    """Loops per sample and step (N×steps) of a run: the given ones, or the fixed plan's
    (1×steps)."""
    if loops_used is not None:
        counts = np.asarray(loops_used, dtype=np.float64)
        if counts.ndim != 2 or counts.shape[1] != steps:
            raise ValueError(
                f"loops_used must be N×{steps} (samples × steps), got shape {counts.shape}"
            )
        return counts
    if isinstance(plan, AdaptiveExit):
        raise ValueError(
            "GFLOPs of an adaptive exit depend on the loops it used: pass loops_used from "
            "generate(..., return_loops=True)"
        )
    return np.asarray([plan], dtype=np.float64)


def accepts_requests(generator: Any) -> bool:
    """Whether ``generator.generate`` takes a resolved ``request=`` (the built-in paradigms do; a
    plug-in's own ``generate`` may not)."""
    import inspect

    try:
        return "request" in inspect.signature(generator.generate).parameters
    except (TypeError, ValueError):
        return False


def generate_request(
    generator: Any, class_labels: Any, request: ResolvedRequest, **options: Any
) -> Any:
    """``generator.generate`` for a resolved one-point request: passed as it is where the generator
    takes requests, else as the ``loops``/``steps``/``guidance``/``seed`` arguments of the
    contract."""
    if accepts_requests(generator):
        return generator.generate(class_labels, request=request, **options)
    return generator.generate(
        class_labels,
        loops=request.loops,
        steps=request.steps,
        guidance=request.guidance,
        seed=request.seed,
        **options,
    )


def gflops_of_request(
    generator: Any, request: ResolvedRequest, loops_used: np.ndarray | None = None
) -> float:
    """``generator.gflops_per_sample`` for a resolved one-point request (see
    :func:`generate_request`)."""
    if accepts_requests(generator):
        return generator.gflops_per_sample(loops_used=loops_used, request=request)
    return generator.gflops_per_sample(
        request.loops, request.steps, request.guidance, loops_used=loops_used
    )
