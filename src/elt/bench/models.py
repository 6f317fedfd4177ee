"""Paradigm-shaped synthetic models for benchmarks: the looped core between a masked-like or
diffusion-like input and head, its training step, and a synthetic paradigm for running the real
Trainer on random data."""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from elt import registry
from elt.core.blocks import LabelEmbedder, TimestepEmbedder
from elt.core.generator import LoopedGenerator, labels_tensor, loops_per_step, to_uint8
from elt.core.ilsd import StudentLoopDraw, ilsd_lambda, ilsd_loss
from elt.core.looped import LoopedTransformer, LoopOutput
from elt.runtime import autocast_context

MODES = ("vanilla", "ilsd", "unique")


class BenchModel(nn.Module):
    """The looped core between a paradigm-shaped input and head (see the module docstring)."""

    def __init__(
        self,
        kind: str,
        width: int,
        unique_layers: int,
        loops: int,
        tokens: int,
        heads: int,
        vocab: int = 1024,
        patch_dim: int = 16,
        num_classes: int = 1000,
        checkpoint_loops: bool = False,
    ):
        super().__init__()
        self.kind, self.tokens, self.vocab, self.patch_dim = kind, tokens, vocab, patch_dim
        cond_dim = width if kind == "diffusion" else None
        self.backbone = LoopedTransformer(
            width, unique_layers, loops, heads, cond_dim=cond_dim, checkpoint_loops=checkpoint_loops
        )
        self.labels = LabelEmbedder(num_classes, width)
        self.pos = nn.Parameter(torch.zeros(1, tokens, width))
        self.norm = nn.LayerNorm(width)
        if kind == "masked":
            self.embed = nn.Embedding(vocab + 1, width)  # + the mask token
            self.out = nn.Linear(width, vocab)
        else:
            self.embed = nn.Linear(patch_dim, width)
            self.time = TimestepEmbedder(width)
            self.out = nn.Linear(width, patch_dim)

    @property
    def sequence_length(self) -> int:
        return self.tokens + (1 if self.kind == "masked" else 0)  # the class token prefix

    def make_batch(
        self, batch: int, device: torch.device, seed: int = 0
    ) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, self.labels.num_classes, (batch,), generator=g)
        if self.kind == "masked":
            target = torch.randint(0, self.vocab, (batch, self.tokens), generator=g)
            masked = torch.rand(batch, self.tokens, generator=g) < 0.5
            inputs = torch.where(masked, torch.full_like(target, self.vocab), target)
        else:
            target = torch.randn(batch, self.tokens, self.patch_dim, generator=g)
            inputs = target + torch.randn(batch, self.tokens, self.patch_dim, generator=g)
        batch_data = {
            "inputs": inputs,
            "target": target,
            "labels": labels,
            "t": torch.rand(batch, generator=g),
        }
        return {k: v.to(device) for k, v in batch_data.items()}

    def states(
        self, data: dict[str, torch.Tensor], loops: int | None = None, exit_loops=()
    ) -> LoopOutput:
        h = self.embed(data["inputs"]) + self.pos
        label = self.labels(data["labels"])
        if self.kind == "masked":
            return self.backbone(h, loops=loops, exit_loops=exit_loops, prefix=label.unsqueeze(1))
        return self.backbone(
            h, cond=label + self.time(data["t"]), loops=loops, exit_loops=exit_loops
        )

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(h))

    def gt_loss(self, pred: torch.Tensor, data: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.kind == "masked":
            return F.cross_entropy(pred.float().flatten(0, 1), data["target"].flatten())
        return F.mse_loss(pred.float(), data["target"])

    def distill_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if self.kind == "masked":
            return -(teacher.float().softmax(-1) * student.float().log_softmax(-1)).sum(-1).mean()
        return F.mse_loss(student.float(), teacher.float())

    def train_flops_per_sample(self) -> float:
        """Model FLOPs of one training sample: backbone matmuls × 3 (forward + backward)."""
        n = self.sequence_length
        return 3.0 * self.backbone.flops_per_token(n) * n


def build_model(
    args: argparse.Namespace, mode: str, device: torch.device, checkpoint_loops: bool = False
):
    """The looped model (N×L) for ilsd/vanilla, the unique stack (N·L×1) of equal FLOPs for
    unique."""
    layers, loops = (
        (args.unique_layers * args.loops, 1)
        if mode == "unique"
        else (args.unique_layers, args.loops)
    )
    torch.manual_seed(0)
    model = BenchModel(
        args.kind,
        args.width,
        layers,
        loops,
        args.tokens,
        args.heads,
        vocab=args.vocab,
        checkpoint_loops=checkpoint_loops,
    ).to(device)
    if args.compile:
        for block in model.backbone.blocks:
            block.compile(backend=args.compile_backend)
    return model


def make_train_step(model: BenchModel, mode: str, args: argparse.Namespace, device: torch.device):
    """A closure running one full optimizer step (forward of L_max loops, ILSD terms, backward,
    AdamW)."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, **({"fused": True} if device.type == "cuda" else {})
    )
    student_draw = StudentLoopDraw(args.loops, seed=0) if mode == "ilsd" else None
    data = model.make_batch(args.batch, device)
    counter = [0]

    def step() -> None:
        student_loops = student_draw.draw() if student_draw else None
        with autocast_context(device, args.precision):
            out = model.states(data, exit_loops=[student_loops] if student_loops else [])
            teacher = model.head(out.final)
            student = model.head(out.exits[student_loops]) if student_loops else None
            terms = ilsd_loss(
                teacher,
                student,
                lambda p: model.gt_loss(p, data),
                model.distill_loss,
                ilsd_lambda(counter[0], 1000),
                student_loops,
            )
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        counter[0] += 1

    return step, optimizer


class SyntheticGenerator(LoopedGenerator):
    """A :class:`BenchModel` behind the paradigm contract, so the Trainer can run it on random data
    (registered as ``paradigm=synthetic`` by ``elt bench trainer`` only, see
    :class:`SyntheticParadigm`)."""

    def __init__(self, cfg, kind: str = "masked", tokens: int = 64, vocab: int = 1024):
        super().__init__()
        self.config = cfg
        self.num_classes = cfg.data.num_classes
        m = cfg.model
        self.model = BenchModel(
            kind,
            m.width,
            *registry.backbone_shape(cfg),
            tokens,
            m.heads,
            vocab=vocab,
            num_classes=self.num_classes,
            checkpoint_loops=m.checkpoint_loops,
        )

    @property
    def backbone(self) -> LoopedTransformer:  # registered once, under model.backbone
        return self.model.backbone

    def training_loss(self, batch, student_loops, lam):
        data = batch
        out = self.model.states(data, exit_loops=[student_loops] if student_loops else [])
        teacher = self.model.head(out.final)
        student = self.model.head(out.exits[student_loops]) if student_loops else None
        return ilsd_loss(
            teacher,
            student,
            lambda p: self.model.gt_loss(p, data),
            self.model.distill_loss,
            lam,
            student_loops,
        )

    @torch.no_grad()
    def generate(
        self, class_labels, loops=None, steps=None, guidance=None, seed=None, progress=False
    ):
        """One forward pass drawn as a square grey image of the tokens' mean output (a stand-in)."""
        data = self.model.make_batch(len(class_labels), self.device, seed=seed or 0)
        data["labels"] = labels_tensor(
            class_labels, self.num_classes, self.device, self.class_names
        )
        values = (
            self.model.head(
                self.model.states(data, loops=loops_per_step(loops, 1, self.trained_loops)[0]).final
            )
            .float()
            .mean(-1)
        )
        side = int(self.model.tokens**0.5)
        image = values[:, : side * side].reshape(-1, 1, side, side)
        return to_uint8(torch.tanh(image - image.mean()))

    def gflops_per_sample(self, loops=None, steps=None, guidance=None):
        n = self.model.sequence_length
        return self.backbone.flops_per_token(n, loops) * n / 1e9


class SyntheticData(torch.utils.data.Dataset):
    def __init__(self, model: BenchModel, size: int):
        self.items = model.make_batch(size, torch.device("cpu"), seed=1)

    def __len__(self) -> int:
        return len(self.items["labels"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.items.items()}


class SyntheticParadigm:
    """The task of ``paradigm=synthetic`` (see :func:`elt.registry.register_paradigm`): synthetic
    models of one shape."""

    def __init__(self, kind: str = "masked", tokens: int = 64, vocab: int = 1024):
        self.kind, self.tokens, self.vocab = kind, tokens, vocab

    def build_generator(self, cfg) -> SyntheticGenerator:
        return SyntheticGenerator(cfg, self.kind, self.tokens, self.vocab)

    def prepare_data(self, cfg, generator, run_dir, progress=True) -> SyntheticData:
        return SyntheticData(generator.model, cfg.data.limit or 4 * cfg.train.batch_size)
