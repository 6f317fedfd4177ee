"""A tiny paradigm used to test the paradigm-agnostic machinery (trainer, checkpoints, sampling,
CLI).

Each class has a fixed 4×4 template image; the generator predicts it from the class label plus noise
through the looped core. Registered under the name ``toy`` by the ``toy_paradigm`` fixture.
"""

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from elt.core import batch_random
from elt.core.blocks import LabelEmbedder
from elt.core.generator import LoopedGenerator, labels_tensor, loops_per_step, to_uint8
from elt.core.ilsd import ilsd_loss
from elt.registry import build_backbone

SIZE = 4


def templates(num_classes):
    g = torch.Generator().manual_seed(123)
    return torch.rand(num_classes, 1, SIZE, SIZE, generator=g) * 2 - 1


class ToyGenerator(LoopedGenerator):
    """One-step regression from (label, noise) to a ``size``×``size`` image, in ``patch``×``patch``
    tokens."""

    size = SIZE
    patch = 1

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.num_classes = cfg.data.num_classes
        width, tokens = cfg.model.width, (self.size // self.patch) ** 2
        self.backbone = build_backbone(cfg)
        self.labels = LabelEmbedder(self.num_classes, width, drop_prob=0.0)
        self.noise_in = nn.Linear(self.patch**2, width)
        self.pos = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, self.patch**2))

    def _tokens(self, labels, noise):
        p = self.patch
        patches = noise.unfold(2, p, p).unfold(3, p, p).reshape(len(noise), -1, p * p)
        return self.noise_in(patches) + self.pos + self.labels(labels).unsqueeze(1)

    def _image(self, h):
        p, n = self.patch, self.size // self.patch
        return (
            self.head(h)
            .view(len(h), n, n, p, p)
            .permute(0, 1, 3, 2, 4)
            .reshape(len(h), 1, self.size, self.size)
        )

    def training_loss(self, batch, student_loops, lam):
        images, labels = batch
        noise = batch_random.randn_like(images)
        out = self.backbone(
            self._tokens(labels, noise), exit_loops=[student_loops] if student_loops else []
        )
        teacher = self._image(out.final)
        student = self._image(out.exits[student_loops]) if student_loops else None
        return ilsd_loss(
            teacher,
            student,
            lambda p: (p - images).pow(2).mean(),
            lambda s, t: (s - t).pow(2).mean(),
            lam,
            student_loops,
        )

    @torch.no_grad()
    def generate(
        self,
        class_labels,
        loops=None,
        steps=None,
        guidance=None,
        seed=None,
        progress=False,
        *,
        seeds=None,
        return_loops=False,
    ):
        labels = labels_tensor(class_labels, self.num_classes, self.device)
        schedule = loops_per_step(loops, 1, self.trained_loops)
        g = torch.Generator(device=self.device).manual_seed(seed or 0)
        noise = torch.randn(len(labels), 1, self.size, self.size, generator=g, device=self.device)
        images = to_uint8(
            self._image(self.backbone(self._tokens(labels, noise), loops=schedule[0]).final)
        )
        return (images, np.full((len(labels), 1), schedule[0])) if return_loops else images

    def gflops_per_sample(self, loops=None, steps=None, guidance=None, loops_used=None):
        tokens = (self.size // self.patch) ** 2
        return (
            self.backbone.flops_per_token(tokens, loops_per_step(loops, 1, self.trained_loops)[0])
            * tokens
            / 1e9
        )


def build_generator(cfg):
    return ToyGenerator(cfg)


def prepare_data(cfg, generator, run_dir, progress=True):
    n = cfg.data.limit or 256
    labels = torch.arange(n) % cfg.data.num_classes
    return TensorDataset(templates(cfg.data.num_classes)[labels], labels)


def template_uint8(num_classes):
    return to_uint8(templates(num_classes)).astype(np.int64)
