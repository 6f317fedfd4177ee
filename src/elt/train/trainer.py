"""The training loop, shared by both paradigms.

Per step: draw L_int (ILSD mode), compute λ, one forward of L_max loops through
``generator.training_loss``, backward, clip, AdamW step, EMA update. Logs to ``RUN/log.jsonl``, writes
sample grids (one row per loop count, from the EMA weights) and checkpoints.
"""

from __future__ import annotations

import json
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from elt import config as config_lib
from elt import registry
from elt.core.ilsd import StudentLoopSampler, ilsd_lambda
from elt.sampling import sample_grid_rows
from elt.train.checkpoint import load_training_state, resolve_checkpoint, save_checkpoint
from elt.train.ema import EMA
from elt.visual import save_grid


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss; stops the run instead of silently training on."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    return torch.device(name)


def autocast_context(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def lr_at(step: int, cfg: DictConfig) -> float:
    """Linear warm-up, then constant (the λ schedule already changes the objective over training)."""
    warmup = cfg.train.warmup_steps
    return cfg.train.lr * min(1.0, (step + 1) / warmup) if warmup > 0 else cfg.train.lr


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Owns the model, EMA, optimizer and schedules of one run directory."""

    def __init__(self, cfg: DictConfig, run_dir: str | Path | None = None, progress: bool = True):
        self.cfg = cfg
        self.run_dir = Path(run_dir or cfg.train.out_dir)
        self.progress = progress
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        self.device = resolve_device(cfg.train.device)
        seed_everything(cfg.train.seed)
        self.generator = registry.build_generator(cfg)
        self.dataset = registry.prepare_data(cfg, self.generator, self.run_dir)
        self.generator.to(self.device)
        self.ema = EMA(self.generator, cfg.train.ema_decay)
        self.optimizer = torch.optim.AdamW(
            self.generator.trainable_parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas),
            weight_decay=cfg.train.weight_decay,
            **({"fused": True} if self.device.type == "cuda" else {}),
        )
        self.student_sampler = (
            StudentLoopSampler(cfg.model.loops, cfg.ilsd.min_student_loops, seed=cfg.train.seed + 1)
            if cfg.ilsd.mode == "ilsd" else None
        )
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.log_path = self.run_dir / "log.jsonl"

    # -- data ---------------------------------------------------------------------------------------------
    def _loader(self, epoch: int) -> DataLoader:
        shuffle = torch.Generator().manual_seed(self.cfg.train.seed * 100003 + epoch)
        batch_size = min(self.cfg.train.batch_size, len(self.dataset))
        return DataLoader(self.dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                          generator=shuffle, num_workers=self.cfg.data.num_workers,
                          pin_memory=self.device.type == "cuda")

    def _batches(self):
        """Endless batches; the position (epoch, batch) is part of the training state so resume is exact."""
        while True:
            for index, batch in enumerate(self._loader(self.epoch)):
                if index < self.batch_in_epoch:
                    continue
                self.batch_in_epoch = index + 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    # -- state ----------------------------------------------------------------------------------------------
    def training_state(self) -> dict[str, Any]:
        state = {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "optimizer": self.optimizer.state_dict(), "ema": self.ema.state_dict(),
            "rng_cpu": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        if self.student_sampler is not None:
            state["student_sampler"] = self.student_sampler.state_dict()
        return state

    def resume_from(self, path: str | Path) -> None:
        from safetensors.torch import load_file

        ckpt = resolve_checkpoint(path)
        state = load_training_state(ckpt)
        if state is None:
            raise FileNotFoundError(f"{ckpt} has no training state (state.pt); cannot resume from it")
        self.generator.load_state_dict(load_file(str(ckpt / "model.safetensors")))
        self.ema.shadow.load_state_dict(load_file(str(ckpt / "ema.safetensors")))
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        if self.student_sampler is not None:
            self.student_sampler.load_state_dict(state["student_sampler"])

    def save(self) -> Path:
        return save_checkpoint(self.run_dir, self.step, self.cfg, self.generator, self.ema.shadow,
                               self.training_state())

    # -- one step -----------------------------------------------------------------------------------------------
    def train_step(self, batch: Any) -> dict[str, float]:
        cfg = self.cfg
        self.generator.train()
        lam = ilsd_lambda(self.step, cfg.train.steps, cfg.ilsd.lambda_schedule, cfg.ilsd.lambda_start,
                          cfg.ilsd.lambda_end)
        student_loops = self.student_sampler.sample() if self.student_sampler is not None else None
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, cfg)
        with autocast_context(self.device, cfg.train.precision):
            terms = self.generator.training_loss(to_device(batch, self.device), student_loops, lam)
        loss_value = float(terms.total.detach())
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(f"loss is {loss_value} at step {self.step}; stopping (lower train.lr, "
                                     "or check the data)")
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        grad_norm = float("nan")
        if cfg.train.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.generator.trainable_parameters(),
                                                             cfg.train.grad_clip))
        self.optimizer.step()
        self.ema.update(self.generator)
        self.step += 1
        record = terms.as_floats()
        record.update(step=self.step, lr=self.optimizer.param_groups[0]["lr"], grad_norm=grad_norm)
        return record

    # -- outputs ------------------------------------------------------------------------------------------------
    def sample_loops(self) -> list[int]:
        loops = list(self.cfg.train.sample_loops)
        return loops or list(range(1, self.generator.trained_loops + 1))

    def write_grid(self) -> Path:
        rows = sample_grid_rows(self.ema.shadow, self.sample_loops(), self.cfg.train.samples_per_class,
                                seed=self.cfg.train.seed)
        return save_grid(self.run_dir / "samples" / f"step_{self.step:07d}.png", rows,
                         [f"L={loops}" for loops in self.sample_loops()],
                         title=f"step {self.step}, rows: loop count")

    def fit(self, until: int | None = None) -> Path:
        """Train to ``train.steps`` (or stop early at step ``until``, e.g. to test resuming); returns the
        checkpoint written at the end."""
        cfg = self.cfg
        stop = cfg.train.steps if until is None else min(until, cfg.train.steps)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(config_lib.to_yaml(cfg))
        batches = self._batches()
        bar = tqdm(total=cfg.train.steps, initial=self.step, desc="train", disable=not self.progress,
                   dynamic_ncols=True)
        window_start, window_items = time.perf_counter(), 0
        with open(self.log_path, "a") as log:
            while self.step < stop:
                batch = next(batches)
                record = self.train_step(batch)
                window_items += _batch_len(batch)
                bar.update(1)
                if self.step % cfg.train.log_every == 0 or self.step == cfg.train.steps:
                    elapsed = time.perf_counter() - window_start
                    record["samples_per_s"] = window_items / max(elapsed, 1e-9)
                    window_start, window_items = time.perf_counter(), 0
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lam=f"{record['lambda']:.2f}")
                if cfg.train.sample_every and self.step % cfg.train.sample_every == 0:
                    self.write_grid()
                if cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0:
                    self.save()
        bar.close()
        final = self.save()
        if self.step == cfg.train.steps:
            self.write_grid()
        return final


def _batch_len(batch: Any) -> int:
    if torch.is_tensor(batch):
        return batch.shape[0]
    if isinstance(batch, dict):
        return _batch_len(next(iter(batch.values())))
    return _batch_len(batch[0])


def train(cfg: DictConfig, resume: str | None = None, progress: bool = True) -> Path:
    """Train a run as ``cfg`` describes; returns the final checkpoint directory.

    ``resume``: ``None`` (start fresh), ``"auto"`` (newest checkpoint in the run directory if any) or a path.
    """
    trainer = Trainer(cfg, progress=progress)
    if resume == "auto":
        try:
            trainer.resume_from(trainer.run_dir)
        except FileNotFoundError:
            pass
    elif resume:
        trainer.resume_from(resume)
    return trainer.fit()
