"""The training loop, shared by both paradigms, from one CPU process to many GPUs on many nodes.

Per step: draw L_int (ILSD mode; the same on every rank), compute λ, one forward of L_max loops
through ``generator.training_loss`` on this rank's share of the global batch, backward (DDP/FSDP
average the gradients over ranks), clip, AdamW step, EMA update. Rank 0 logs (``log.jsonl``,
TensorBoard, W&B), writes sample grids (one row per loop count, from the EMA weights) and
checkpoints.

Launch: ``elt train CONFIG`` for one process; ``torchrun --nproc_per_node G -m elt.cli train
CONFIG`` for G processes per node (docs/distributed.md). Throughput defaults on CUDA: bf16 autocast,
TF32, fused AdamW, attention through SDPA (flash kernels); options: ``train.compile`` (each looped
block compiled once) and ``model.checkpoint_loops`` (per-loop activation checkpointing).

A run is resumable exactly: the checkpoint holds model, EMA, optimizer, step (which fixes the LR and
λ schedules), data position, and the RNG states of every rank and of the L_int draws. SIGTERM/SIGINT
write a checkpoint at the next step boundary (:class:`TrainingInterrupted`); a NaN/Inf loss stops
the run naming the step (:class:`NonFiniteLossError`)."""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from elt import config as config_lib
from elt import registry
from elt.core import batch_random
from elt.core.ilsd import StudentLoopDraw, ilsd_lambda
from elt.data.shape import resolve_data_config
from elt.errors import CheckpointError, UserError
from elt.fileio import check_output_dir, exclusive_lock, refuse_symlink, write_text
from elt.inference.checkpoints import (
    checkpoints_newest_first,
    first_non_finite,
    load_weights,
    resolve_checkpoint,
    warn,
)
from elt.inference.files import EMA_FILE, MODEL_FILE
from elt.progress import Progress, data_description, parameter_counts, print_summary
from elt.runtime import (
    autocast_context,
    rng_state,
    seed_everything,
    set_rng_state,
    set_threads,
    uses_bf16,
)
from elt.sampling import class_labels_of, grid_classes, sample_grid_rows
from elt.signals import GracefulStop, TrainingInterrupted
from elt.train import advice
from elt.train import distributed as dist_lib
from elt.train.checkpoint import NonFiniteWeightsError, load_training_state, save_checkpoint
from elt.train.distributed import DistEnv, ShardedSampler
from elt.train.ema import EMA
from elt.train.logger import RunLogger
from elt.train.optim import build_optimizer
from elt.train.perf import FlopCounter, memory_record, mfu, peak_flops
from elt.visual import save_grid

STATE_FORMAT = 2


class NonFiniteLossError(UserError, RuntimeError):
    """Training produced a NaN/Inf loss; stops the run (one line naming the step) instead of
    training on."""


def run_lock(run_dir: str | Path, env: DistEnv):
    """The exclusive lock of a run directory, held by rank 0 while it trains there (a no-op
    elsewhere): a second training on the same directory is refused with a message naming the
    holder."""
    from contextlib import nullcontext

    if not env.is_main:
        return nullcontext()
    return exclusive_lock(run_dir, ".lock", what="run directory")


def configure_backends(device: torch.device, tf32: bool) -> None:
    """TF32 for fp32 matmuls on CUDA (the legacy switch, which torch.compile also reads)."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high" if tf32 else "highest")


def to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def lr_at(step: int, cfg: DictConfig) -> float:
    """Learning rate of optimizer step ``step`` (counted from 0): linear warm-up over
    ``lr_schedule.warmup_steps``, then ``lr_schedule.kind``: constant (the default), or a cosine /
    linear decay that reaches ``lr_schedule.min_ratio · optimizer.lr`` at the last step
    (``train.steps − 1``). A function of the step alone, so a resumed run follows the same curve
    exactly."""
    lr, schedule = cfg.optimizer.lr, cfg.lr_schedule
    warmup = schedule.warmup_steps
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if schedule.kind == "constant":
        return float(lr)
    floor = lr * schedule.min_ratio
    span = max(1, cfg.train.steps - 1 - max(warmup, 0))
    progress = min(max((step - max(warmup, 0)) / span, 0.0), 1.0)
    weight = (
        0.5 * (1.0 + math.cos(math.pi * progress)) if schedule.kind == "cosine" else 1.0 - progress
    )
    return float(floor + (lr - floor) * weight)


def accumulation_steps(cfg: DictConfig, world_size: int) -> int:
    """Micro-batches per optimizer step: ``train.grad_accum_steps``, or derived from
    ``train.micro_batch_size`` (per rank) so that the global batch ``train.batch_size`` stays
    independent of memory."""
    t = cfg.train
    micro = OmegaConf.select(cfg, "train.micro_batch_size", default=0) or 0
    if micro > 0:
        if t.batch_size % (world_size * micro):
            raise config_lib.ConfigError(
                f"train.batch_size={t.batch_size} is not divisible by {world_size} "
                f"processes × train.micro_batch_size={micro}"
            )
        return t.batch_size // (world_size * micro)
    return int(OmegaConf.select(cfg, "train.grad_accum_steps", default=1) or 1)


def compile_blocks(generator: torch.nn.Module, backend: str = "inductor") -> None:
    """``torch.compile`` each block of the looped core in place: one compiled graph serves all N
    blocks (same code; parameters are graph inputs) and all L loops, instead of tracing the unrolled
    N×L stack. State-dict names are unchanged, so checkpoints load with or without compilation."""
    for block in generator.backbone.blocks:
        block.compile(backend=backend)


class Trainer:
    """Owns the model, EMA, optimizer and schedules of one run directory (on one rank)."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: str | Path | None = None,
        progress: bool = True,
        env: DistEnv | None = None,
        compile_backend: str = "inductor",
    ):
        """``compile_backend``: the torch.compile backend when ``train.compile`` is set (``eager``
        checks tracing only; ``elt bench trainer --compile-backend``)."""
        self.cfg = cfg
        self.env = env or dist_lib.current_env(cfg.train.device)
        self.device = self.env.device
        self.run_dir = Path(run_dir or cfg.train.out_dir)
        if (
            self.env.is_main
        ):  # before any work: an out_dir that cannot be written fails now, not at the end
            check_output_dir(self.run_dir, "train.out_dir")
        self.progress = progress and self.env.is_main
        set_threads(config=cfg.train.threads)
        configure_backends(self.device, cfg.train.tf32)
        world = self.env.world_size
        self.accum = accumulation_steps(cfg, world)
        if cfg.train.batch_size % (world * self.accum):
            raise config_lib.ConfigError(
                f"train.batch_size={cfg.train.batch_size} is the global batch and must "
                f"be divisible by the number of processes ({world}) × "
                f"train.grad_accum_steps ({self.accum})"
            )
        self.sharded = self.env.enabled and cfg.distributed.strategy == "fsdp"
        seed_everything(cfg.train.seed)  # the same initial weights on every rank
        # FSDP: only rank 0 builds the looped core in full (host memory, the seeded weights one
        # process starts from); the other ranks build it on the meta device, and every rank
        # materialises its shards only
        meta_backbone = self.sharded and not self.env.is_main
        with registry.backbone_on("meta" if meta_backbone else None):
            self.generator = registry.build_generator(cfg)
        if (
            not self.sharded
        ):  # before the data: the tokenizer / VAE follow it, so a cache is encoded on the device
            self.generator.to(
                self.device
            )  # (under torchrun no rank encodes: prepare_data only reads caches)
        self.dataset = self.prepare_data()
        full_state = None
        if self.sharded:
            full_state = (
                self.generator.state_dict() if self.env.is_main else None
            )  # references, no copy
            self.generator.backbone.to(
                "meta"
            )  # rank 0 too: its full weights live on in full_state only
            dist_lib.move_to_device(self.generator, self.device)
        self.ema = EMA(self.generator, cfg.train.ema_decay, keep_shadow=not self.sharded)
        if cfg.train.compile:
            compile_blocks(self.generator, backend=compile_backend)
        self.model = dist_lib.wrap_for_training(
            self.generator,
            self.env,
            cfg.distributed.strategy,
            cfg.distributed.find_unused_parameters,
            fsdp_unit=cfg.distributed.fsdp_unit,
            reshard_after_forward=cfg.distributed.fsdp_reshard_after_forward,
            param_dtype=torch.bfloat16 if uses_bf16(self.device, cfg.train.precision) else None,
            full_state=full_state,
        )
        del full_state
        if self.sharded:
            self.ema.track_sharded(
                self.generator
            )  # the averages: this rank's shards, like the parameters
        self.checkpoint_format = config_lib.resolved_checkpoint_format(cfg, self.sharded)
        seed_everything(
            dist_lib.rank_seed(cfg.train.seed, self.env.rank)
        )  # noise/masks differ per rank
        self.optimizer = build_optimizer(
            self.generator, self.generator.trainable_parameters(), cfg, self.device
        )
        self.student_draw = (
            StudentLoopDraw(cfg.model.loops, cfg.ilsd.min_student_loops, seed=cfg.train.seed + 1)
            if cfg.ilsd.mode == "ilsd"
            else None
        )
        parts = world * self.accum  # the global batch splits into this many equal micro-batches
        self.global_batch = min(cfg.train.batch_size, len(self.dataset) - len(self.dataset) % parts)
        if self.global_batch < parts or self.global_batch % parts:
            raise config_lib.ConfigError(
                f"the dataset has {len(self.dataset)} items, too few for a global batch "
                f"divisible by {world} processes × {self.accum} micro-batches"
            )
        self.sampler = ShardedSampler(len(self.dataset), self.env.rank, world, seed=cfg.train.seed)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.resumed_from: Path | None = None
        self.log_path = self.run_dir / "log.jsonl"
        self._stop_agreed = False
        self._flops = FlopCounter(self.generator.backbone)
        self.flops_per_sample: float | None = None
        self.tokens_per_sample: int | None = None
        self.peak = peak_flops(
            self.device, uses_bf16(self.device, cfg.train.precision), cfg.logging.peak_tflops
        )

    # -- data --------------------------------------------------------------------------------------
    def shared_paths(self) -> dict[str, Any]:
        """Folders every rank must see (the shared-filesystem check of multi-node runs)."""
        paths = {"train.out_dir": self.run_dir}
        for key in ("tokenizer.path", "diffusion.latent_cache"):
            value = OmegaConf.select(self.cfg, key, default=None)
            if value:
                paths[key] = value
        return paths

    def prepare_data(self):
        """The training set (caches read, tokenizer loaded). One process builds a missing cache or
        tokenizer itself; under torchrun every rank reads in parallel and a missing one is refused
        (one line pointing to ``elt prepare``, which encodes with every rank), never built by rank 0
        while the others wait inside a collective. The ranks agree on failure, so none is left
        waiting for one that stopped."""
        from elt.data.cache import refuse_solo_builds

        if not self.env.enabled:
            return registry.prepare_data(
                self.cfg, self.generator, self.run_dir, progress=self.progress
            )
        dist_lib.check_shared_paths(self.env, self.shared_paths())
        world = self.env.world_size
        hint = (
            f"elt train with {world} processes does not build it (one rank would work alone while "
            "the others "
            f"wait): build it first with every process, torchrun --nproc_per_node {world} -m "
            "elt.cli prepare "
            "CONFIG (the same overrides), then train"
        )
        dataset, error = None, None
        try:
            with refuse_solo_builds(hint):
                dataset = registry.prepare_data(
                    self.cfg, self.generator, self.run_dir, progress=self.progress
                )
        except (
            Exception
        ) as exc:  # every rank hears of it below, so none waits in the next collective
            error = exc
        failures = [
            (rank, message)
            for rank, message in enumerate(
                dist_lib.all_gather_object(None if error is None else str(error), self.env)
            )
            if message is not None
        ]
        if error is not None:
            raise error
        if failures:
            rank, message = failures[0]
            raise UserError(f"rank {rank} could not prepare the data: {message}".splitlines()[0])
        return dataset

    @property
    def per_rank_batch(self) -> int:
        """Items one rank loads per micro-batch (= per step without gradient accumulation)."""
        return self.global_batch // (self.env.world_size * self.accum)

    def _loader(self, epoch: int, skip_batches: int) -> DataLoader:
        self.sampler.set_position(epoch, skip_batches * self.per_rank_batch)
        # the loader's own generator seeds worker processes; never the global RNG (that would make
        # the random stream depend on when loaders are created, i.e. on resuming)
        workers_seed = torch.Generator().manual_seed(
            dist_lib.rank_seed(self.cfg.train.seed, self.env.rank) + epoch
        )
        return DataLoader(
            self.dataset,
            batch_size=self.per_rank_batch,
            sampler=self.sampler,
            drop_last=True,
            generator=workers_seed,
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    def _batches(self):
        """Endless (micro-)batches; the position (epoch, batch) is part of the training state so
        resume is exact. An epoch ends after its last whole optimizer step, so accumulated steps
        never straddle epochs."""
        per_epoch = (len(self.dataset) // self.global_batch) * self.accum
        while True:
            for batch in self._loader(self.epoch, self.batch_in_epoch):
                if self.batch_in_epoch >= per_epoch:
                    break
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    # -- state -------------------------------------------------------------------------------------
    def lam_at(self, step: int) -> float:
        ilsd = self.cfg.ilsd
        return ilsd_lambda(
            step, self.cfg.train.steps, ilsd.lambda_schedule, ilsd.lambda_start, ilsd.lambda_end
        )

    @property
    def dcp(self) -> bool:
        """Sharded checkpoints: ``checkpoint.format=dcp``, or ``auto`` (the default) under
        FSDP."""
        return self.checkpoint_format == "dcp"

    def training_state(self) -> dict[str, Any]:
        """The resumable state (a collective: every rank calls it). With DCP checkpoints (the
        default under FSDP) the optimizer state stays sharded (``sharded/``) and is left out; with
        ``full`` it is gathered to full tensors here."""
        optimizer = None if self.dcp else dist_lib.gather_full(self.optimizer.state_dict())
        rng = dist_lib.all_gather_object(rng_state(self.device), self.env)
        state = {
            "format": STATE_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.env.world_size,
            "global_batch": self.global_batch,
            "grad_accum_steps": self.accum,
            "schedule": {
                "lr": lr_at(self.step, self.cfg),
                "lambda": self.lam_at(self.step),
                "total_steps": self.cfg.train.steps,
            },
            "optimizer": optimizer,
            "ema": self.ema.state_dict(),
            "rng": rng,
            "checkpoint_format": self.checkpoint_format,
        }
        if self.student_draw is not None:
            state["student_draw"] = self.student_draw.state_dict()
        return state

    def resume_from(self, path: str | Path) -> Path:
        """Restore everything a checkpoint holds; ``path`` is a checkpoint or a run directory (then
        the newest checkpoint that loads is used, falling back to older ones if the newest is
        damaged)."""
        path = Path(path)
        candidates = [resolve_checkpoint(path)]
        if not (path / MODEL_FILE).is_file():
            candidates += [c for c in checkpoints_newest_first(path) if c != candidates[0]]
        errors = []
        for index, ckpt in enumerate(candidates):
            try:
                self._load(ckpt)
            except (
                Exception
            ) as exc:  # a damaged file fails in many ways; the next candidate may load
                errors.append(f"{ckpt.name}: {exc}".splitlines()[0])
                if len(candidates) == 1:
                    raise CheckpointError(
                        f"cannot resume from {str(ckpt)!r}: {exc}".splitlines()[0]
                    ) from None
                if self.env.is_main and index + 1 < len(candidates):
                    warn(f"cannot resume from {ckpt} ({errors[-1]}); trying an older checkpoint")
                continue
            self.resumed_from = ckpt
            return ckpt
        raise CheckpointError(f"no loadable checkpoint under {str(path)!r}: {'; '.join(errors)}")

    def _load(self, ckpt: Path) -> None:
        state = load_training_state(ckpt)
        if state is None:
            raise CheckpointError(f"{ckpt} has no training state (state.pt); cannot resume from it")
        if state.get("format") != STATE_FORMAT:
            raise CheckpointError(
                f"{ckpt}/state.pt is from another version of elt (format "
                f"{state.get('format')}, expected {STATE_FORMAT})"
            )
        if (
            state.get("checkpoint_format") == "dcp"
        ):  # sharded weights, optimizer, EMA: any process count
            from elt.train.dcp import SHARDED_DIR, load_sharded

            load_sharded(ckpt / SHARDED_DIR, self.generator, self.optimizer, self.ema.averages())
            for name, weights in (
                ("weights", self.generator.state_dict()),
                ("EMA weights", self.ema.averages()),
            ):
                bad = dist_lib.first_non_finite_anywhere(
                    weights, self.env
                )  # each rank reads its own shards
                if bad is not None:
                    raise CheckpointError(f"its {name} hold NaN/Inf ({bad})")
        else:
            model = load_weights(ckpt / MODEL_FILE)
            ema = load_weights(ckpt / EMA_FILE)
            for name, weights in (("weights", model), ("EMA weights", ema)):
                bad = first_non_finite(weights)
                if bad is not None:
                    raise CheckpointError(f"its {name} hold NaN/Inf ({bad})")
            current = self.generator.state_dict()
            wrong = [
                k
                for k, v in model.items()
                if k not in current or tuple(v.shape) != tuple(current[k].shape)
            ]
            if wrong or set(current) - set(model):
                raise CheckpointError(
                    f"{ckpt / MODEL_FILE} does not match this config's architecture "
                    f"({(wrong or sorted(set(current) - set(model)))[:2]})"
                )
            self.generator.load_state_dict(
                {k: dist_lib.shard_like(v, current[k]) for k, v in model.items()}
            )
            self.ema.load_weights(ema)
            dist_lib.load_full_optimizer_state(self.optimizer, state["optimizer"])
        self.ema.load_state_dict(state["ema"])
        self.step, self.epoch = state["step"], state["epoch"]
        # the data position counts micro-batches: whole steps × this run's accumulation
        self.batch_in_epoch = (
            state["batch_in_epoch"] // state.get("grad_accum_steps", 1) * self.accum
        )
        if state["global_batch"] != self.global_batch and self.env.is_main:
            warn(
                f"resuming with global batch {self.global_batch} (checkpoint: "
                f"{state['global_batch']}); "
                "the data position is kept in batches, not items"
            )
        if state["schedule"]["total_steps"] != self.cfg.train.steps and self.env.is_main:
            warn(
                f"train.steps changed from {state['schedule']['total_steps']} to "
                f"{self.cfg.train.steps}: "
                "the λ schedule is stretched from the current step on"
            )
        if len(state["rng"]) == self.env.world_size:
            set_rng_state(state["rng"][self.env.rank], self.device)
        else:  # another process count: exact continuation is impossible, keep the streams distinct
            if self.env.is_main:
                warn(
                    f"checkpoint was written by {len(state['rng'])} processes, this run has "
                    f"{self.env.world_size}: random streams are re-seeded (not bit-exact)"
                )
            seed_everything(dist_lib.rank_seed(self.cfg.train.seed, self.env.rank) + self.step)
        saved_draw = state.get(
            "student_draw", state.get("student_sampler")
        )  # earlier checkpoints: student_sampler
        if self.student_draw is not None and saved_draw is not None:
            self.student_draw.load_state_dict(saved_draw)

    def save(self) -> Path:
        """Checkpoint the current step (every rank calls it; rank 0 writes). Non-finite weights are
        never
        written: every rank stops with :class:`NonFiniteWeightsError`. With DCP (the default under
        FSDP) every rank also writes its shards of the weights, optimizer state and EMA
        (``sharded/``).

        Under FSDP nothing is gathered whole: ``model.safetensors`` and ``ema.safetensors`` (what
        ``elt sample`` and ``elt.load`` read) are streamed from the shards one tensor at a time and
        written by rank 0."""
        checkpoints = self.run_dir / "checkpoints"
        if self.env.is_main:  # staging folders of writes that were killed are garbage
            for stale in (*checkpoints.glob(".dcp_step_*"), *checkpoints.glob(".weights_step_*")):
                shutil.rmtree(stale, ignore_errors=True)
        if self.sharded:
            model, ema = self._stream_weights(checkpoints / f".weights_step_{self.step:07d}")
        else:
            model = dist_lib.gather_full(self.generator.state_dict())
            ema = self.ema.materialize()
            for label, weights in (("weights", model), ("EMA weights", ema.state_dict())):
                self._refuse_non_finite(label, first_non_finite(weights))
        extra = {}
        if (
            self.dcp
        ):  # every rank writes its shards into a staging folder, moved into the checkpoint below
            from elt.train.dcp import SHARDED_DIR, save_sharded

            staging = checkpoints / f".dcp_step_{self.step:07d}"
            dist_lib.barrier(self.env)
            save_sharded(staging, self.generator, self.optimizer, self.ema.averages())
            dist_lib.barrier(self.env)
            extra = {SHARDED_DIR: staging}
        state = self.training_state()
        path = checkpoints / f"step_{self.step:07d}"
        if self.env.is_main:
            path = save_checkpoint(
                self.run_dir,
                self.step,
                self.cfg,
                model,
                ema,
                state,
                keep=self.cfg.checkpoint.keep,
                extra_dirs=extra,
            )
            if self.sharded:
                shutil.rmtree(checkpoints / f".weights_step_{self.step:07d}", ignore_errors=True)
        dist_lib.barrier(self.env)
        return path

    def _refuse_non_finite(self, label: str, bad: str | None) -> None:
        if bad is not None:
            raise NonFiniteWeightsError(
                f"the {label} hold NaN/Inf after step {self.step} ({bad}); no "
                "checkpoint was written (lower optimizer.lr or optimizer.grad_clip, or check "
                "the data; --resume auto continues from the last finite checkpoint)"
            )

    def _stream_weights(self, staging: Path) -> tuple[Path, Path]:
        """FSDP: write the weights and the EMA as safetensors into ``staging`` (rank 0) from the
        shards, one gathered tensor at a time (every rank takes part in each gather)."""
        from elt.train.dcp import stream_safetensors

        if self.env.is_main:
            staging.mkdir(parents=True, exist_ok=True)
        files = staging / MODEL_FILE, staging / EMA_FILE
        metadata = {"step": str(self.step)}
        for label, state, target in (
            ("weights", self.generator.state_dict(), files[0]),
            ("EMA weights", self.ema.averages(), files[1]),
        ):
            bad = stream_safetensors(target if self.env.is_main else None, state, metadata)
            if bad is not None and self.env.is_main:
                shutil.rmtree(staging, ignore_errors=True)
            self._refuse_non_finite(label, bad)
        return files

    # -- one step ----------------------------------------------------------------------------------
    def _gradient_sync(self, enabled: bool):
        """DDP: ``no_sync`` on non-final micro-batches; FSDP2: skip the reduce-scatter the same
        way."""
        if self.env.enabled and hasattr(self.model, "no_sync") and not enabled:
            return self.model.no_sync()
        if hasattr(self.model, "set_requires_gradient_sync"):
            self.model.set_requires_gradient_sync(enabled)
        return contextlib.nullcontext()

    def accumulated_step(
        self, micro_batches: list[Any], stop_requested: bool = False
    ) -> dict[str, float]:
        """One optimizer step over ``micro_batches`` (this rank's share of the global batch, in
        equal parts): the gradients of the parts' mean losses are averaged, which equals one step on
        the whole batch (up to float rounding) for losses that are means over items. λ and the ILSD
        student loop count are drawn once per step, so every micro-batch trains the same student.
        Returns the log record (losses averaged over micro-batches and ranks). ``stop_requested`` is
        this rank's wish to stop; the ranks agree on it in the same collective as the loss, so they
        all stop after the same step."""
        cfg = self.cfg
        self.model.train()
        lam = self.lam_at(self.step)
        student_loops = self.student_draw.draw() if self.student_draw is not None else None
        lr = lr_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        parts = len(micro_batches)
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        world, rank = self.env.world_size, self.env.rank
        for index, batch in enumerate(micro_batches):
            final = index == parts - 1
            # noise, masks, timesteps and label dropout keyed by the global sample index: W ranks
            # (and k micro-batches) draw what one process draws for the same items. Rank r's
            # micro-batch m holds global positions (m·b + i)·W + r, i < b, of the step's batch (b =
            # per_rank_batch).
            rows = (torch.arange(self.per_rank_batch) + index * self.per_rank_batch) * world + rank
            with self._gradient_sync(final):
                with (
                    autocast_context(self.device, cfg.train.precision),
                    batch_random.keyed_draws(cfg.train.seed, self.step, rows, self.global_batch),
                ):
                    terms = dist_lib.as_terms(
                        self.model(to_device(batch, self.device), student_loops, lam)
                    )
                # a non-finite loss is caught after the step's collective below, before the
                # optimizer step
                (terms.total / parts).backward()
            for key, value in terms.as_floats().items():
                sums[key] = sums.get(key, 0.0) + value
        record = {key: value / parts for key, value in sums.items()}
        record["lambda"] = lam
        if "student_loops" in record:
            record["student_loops"] = student_loops
        loss_sum, stops = dist_lib.all_reduce_sum([record["loss"], float(stop_requested)], self.env)
        loss_value = loss_sum / world
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(
                f"loss is {loss_value} at step {self.step}; stopping (lower optimizer.lr, "
                "or check the data)"
            )
        self._stop_agreed = stops > 0
        grad_norm = float("nan")
        if cfg.optimizer.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(
                self.generator.trainable_parameters(), cfg.optimizer.grad_clip
            )
            grad_norm = float(norm.full_tensor() if dist_lib.is_sharded(norm) else norm)
        self.optimizer.step()
        self.ema.update(self.generator)
        self.step += 1
        if world > 1:  # rank means of the loss parts (the total was reduced above)
            keys = [k for k in ("teacher_gt", "student_gt", "distill") if k in record]
            for key, value in zip(
                keys, dist_lib.all_reduce_sum([record[k] for k in keys], self.env), strict=True
            ):
                record[key] = value / world
        record["loss"] = loss_value
        record.update(step=self.step, lr=lr, grad_norm=grad_norm)
        return record

    # -- outputs -----------------------------------------------------------------------------------
    def sample_loops(self) -> list[int]:
        loops = list(self.cfg.logging.sample_loops)
        return loops or list(range(1, self.generator.trained_loops + 1))

    def write_grid(self) -> Path | None:
        """A grid of EMA samples, one row per loop count, over ``logging.grid_classes`` evenly
        spaced classes (0: all). Every rank draws its share of the samples (each has its own seed,
        so the grid does not depend on the process count); rank 0 writes it."""
        shadow = self.ema.materialize()
        try:
            classes = grid_classes(
                shadow.num_classes, OmegaConf.select(self.cfg, "logging.grid_classes", default=0)
            )
            rows = sample_grid_rows(
                shadow,
                self.sample_loops(),
                self.cfg.logging.samples_per_class,
                seed=self.cfg.train.seed,
                classes=classes,
            )
        finally:
            self.ema.release()  # FSDP: the gathered full EMA is freed now, not at the next update
        if rows is None:  # not rank 0
            return None
        per_class = self.cfg.logging.samples_per_class
        return save_grid(
            self.run_dir / "samples" / f"step_{self.step:07d}.png",
            rows,
            [f"L={loops}" for loops in self.sample_loops()],
            title=f"step {self.step}, rows: loop count",
            col_labels=class_labels_of(shadow, np.repeat(classes, per_class)),
        )

    def _perf_record(self, steps: int, elapsed: float) -> dict[str, float]:
        samples_per_s = steps * self.global_batch / max(elapsed, 1e-9)
        record = {"samples_per_s": samples_per_s, "step_s": elapsed / max(steps, 1)}
        if self.tokens_per_sample:
            record["tokens_per_s"] = samples_per_s * self.tokens_per_sample
        utilisation = mfu(self.flops_per_sample, samples_per_s, self.env.world_size, self.peak)
        if utilisation is not None:
            record["mfu"] = utilisation
        record.update(memory_record(self.device))
        return record

    def summary_title(self) -> str:
        resumed = f" (resuming at step {self.step})" if self.step else ""
        return f"training the {self.cfg.paradigm} model -> {self.run_dir}{resumed}"

    def summary_rows(self) -> list[tuple[str, str]]:
        """The start summary (rank 0 prints it before the first step): data, tokens, parameters,
        precision, threads, device, steps × batch."""
        cfg, model = self.cfg, self.cfg.model
        grid = getattr(self.generator, "grid", None)
        precision = "bf16 autocast" if uses_bf16(self.device, cfg.train.precision) else "fp32"
        threads = torch.get_num_threads()
        processes = f", {self.env.world_size} processes" if self.env.world_size > 1 else ""
        accum = f" ({self.accum} micro-batches)" if self.accum > 1 else ""
        params = parameter_counts(self.generator, self.generator.trainable_parameters())
        return [
            ("data", data_description(cfg.data, len(self.dataset))),
            ("tokens per sample", str(math.prod(grid)) if grid else "n/a"),
            (
                "model",
                f"{model.unique_layers} blocks x {model.loops} loops, width {model.width}, "
                f"{params}",
            ),
            (
                "run",
                f"{cfg.train.steps} steps x batch {self.global_batch}{accum}, {precision}, "
                f"{threads} thread{'s' if threads != 1 else ''}, {self.device}{processes}",
            ),
        ]

    def fit(self, until: int | None = None) -> Path:
        """Train to ``train.steps`` (or stop early at step ``until``, e.g. to test resuming);
        returns the checkpoint written at the end. Raises :class:`TrainingInterrupted` after
        checkpointing when a SIGTERM/SIGINT arrives."""
        cfg = self.cfg
        stop = cfg.train.steps if until is None else min(until, cfg.train.steps)
        with run_lock(self.run_dir, self.env):
            return self._fit(stop)

    def _fit(self, stop: int) -> Path:
        cfg = self.cfg
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.run_dir / "config.yaml", config_lib.to_yaml(cfg))
        batches = self._batches()
        if self.env.is_main:
            print_summary(self.summary_title(), self.summary_rows())
        bar = Progress(
            "train",
            cfg.train.steps,
            initial=self.step,
            bar=self.progress,
            enabled=None if self.env.is_main else False,  # rank 0, inside progress.reporting()
            every=cfg.logging.every,
        )
        # a continuation (resumed, or this trainer already trained) keeps the log up to this step; a
        # fresh start never appends to an earlier run's log (RunLogger rotates it)
        resume_step = self.step if self.resumed_from is not None or self.step > 0 else None
        logger = RunLogger(self.run_dir, cfg, enabled=self.env.is_main, resume_step=resume_step)
        window_start, window_steps = time.perf_counter(), 0
        advice.before_fit(self)  # legal but surely mistaken settings: one warning line each
        watch = advice.DivergenceWatch(enabled=self.env.is_main)
        with GracefulStop(cfg.checkpoint.handle_signals) as stopper, logger:
            while self.step < stop:
                micro_batches = [next(batches) for _ in range(self.accum)]
                record = self.accumulated_step(micro_batches, stop_requested=stopper.requested)
                watch.update(self.step, record["loss"], cfg.optimizer.lr)
                if (
                    self._flops is not None
                ):  # counted on the first step only (all its micro-batches)
                    self.flops_per_sample = self._flops.flops_per_sample / self.accum
                    self.tokens_per_sample = self._flops.tokens_per_sample
                    self._flops.detach()
                    self._flops = None
                window_steps += 1
                if (
                    self.step % cfg.logging.every == 0
                    or self.step == cfg.train.steps
                    or self._stop_agreed
                ):
                    record.update(
                        self._perf_record(window_steps, time.perf_counter() - window_start)
                    )
                    window_start, window_steps = time.perf_counter(), 0
                    logger.log(record)
                bar.update(self.step, {"loss": record["loss"]})
                if self._stop_agreed:
                    bar.close()
                    checkpoint = self.save()
                    raise TrainingInterrupted(
                        stopper.signum or 15, self.step, checkpoint, announce=self.env.is_main
                    )
                if cfg.logging.sample_every and self.step % cfg.logging.sample_every == 0:
                    self.write_grid()
                if cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0:
                    self.save()
            bar.close()
            final = self.save()
        if self.step == cfg.train.steps:
            self.write_grid()
        return final


def earlier_checkpoints(run_dir: Path, resume: str | None) -> list[Path]:
    """The run directory's checkpoints, newest first; a fresh start (no ``resume``) among them is
    refused."""
    earlier = (
        sorted((run_dir / "checkpoints").glob("step_*"), reverse=True)
        if (run_dir / "checkpoints").is_dir()
        else []
    )
    if not resume and earlier:
        raise UserError(
            f"train.out_dir {str(run_dir)!r} already holds the checkpoints of a run (up to "
            f"{earlier[0].name}); continue it with --resume auto, or start a new run in "
            "another train.out_dir"
        )
    return earlier


class _DryRunTrainer(Trainer):
    """A trainer whose data is the paradigm's ``dry_run_data`` (shaped like the real data, built
    without writing anything); without that hook, the real data prepared in a temporary
    directory."""

    def prepare_data(self):
        task = registry.task_module(self.cfg.paradigm)
        hook = getattr(task, "dry_run_data", None)
        if hook is not None:
            return hook(self.cfg, self.generator, self.run_dir)
        import tempfile

        with tempfile.TemporaryDirectory(prefix="elt-dry-run-") as scratch:
            dataset = registry.prepare_data(self.cfg, self.generator, Path(scratch), progress=False)
            return [dataset[i] for i in range(len(dataset))]  # read before the folder goes


def dry_run(cfg: DictConfig, resume: str | None = None) -> dict[str, float]:
    """``elt train --dry-run``: build what the run would (config, data, model, tokenizer found or
    not), time a few steps of every phase it would run (the tokenizer's when none is trained, then
    the model's), print the start summaries and the estimated times; write nothing. The refusals
    of a real run (a config error, checkpoints without ``--resume``) still happen. Returns the
    estimated seconds per phase."""
    from elt.progress import TIMED_STEPS, estimate_line, format_duration
    from elt.train import checkpoint as ckpt_lib

    ckpt_lib.refuse_environment_reads(cfg)
    resolve_data_config(cfg)  # as a real run: the inferred shape, and its warnings
    if dist_lib.launched_by_torchrun():
        raise UserError("--dry-run runs in one process: start it without torchrun")
    run_dir = Path(cfg.train.out_dir)
    check_output_dir(run_dir, "train.out_dir")
    earlier_checkpoints(run_dir, resume)
    how = f"timed over {TIMED_STEPS} steps after a warm-up step"
    estimates: dict[str, float] = {}
    task = registry.task_module(cfg.paradigm)
    tokenizer_folder = getattr(task, "tokenizer_to_train", lambda *a: None)(cfg, run_dir)
    if tokenizer_folder is not None:
        from elt.tokenizers.train import check_unfinished, time_tokenizer_steps

        done = check_unfinished(tokenizer_folder, cfg.tokenizer.steps, bool(resume))
        step_s, run = time_tokenizer_steps(cfg, TIMED_STEPS)
        left = run.steps - max(done or 0, 0)
        print_summary(
            f"dry run: would train the {cfg.tokenizer.kind} tokenizer first -> "
            f"{tokenizer_folder}" + (f" (resuming at step {done})" if done else ""),
            run.summary(tokenizer_folder),
        )
        print(estimate_line("tokenizer", step_s, left, how), file=sys.stderr, flush=True)
        estimates["tokenizer"] = step_s * left
    trainer = _DryRunTrainer(cfg, progress=False)
    if resume:
        try:
            trainer.step = load_training_state(
                resolve_checkpoint(run_dir if resume == "auto" else Path(resume))
            )["step"]
        except Exception:  # nothing to resume from: a fresh start, as a real run does
            trainer.step = 0
    print_summary(
        "dry run: " + trainer.summary_title().replace("training", "would train", 1),
        trainer.summary_rows(),
    )
    batches = trainer._batches()
    step, start = trainer.step, 0.0
    for index in range(TIMED_STEPS + 1):
        if index == 1:
            start = time.perf_counter()
        trainer.accumulated_step([next(batches) for _ in range(trainer.accum)])
    step_s = (time.perf_counter() - start) / TIMED_STEPS
    left = cfg.train.steps - step
    print(estimate_line("train", step_s, left, how), file=sys.stderr, flush=True)
    estimates["train"] = step_s * left
    parts = " + ".join(f"{name} {format_duration(s)}" for name, s in estimates.items())
    print(
        f"elt: dry run: estimated total ~{format_duration(sum(estimates.values()))} ({parts}; data "
        "preparation and sample grids not included)",
        file=sys.stderr,
        flush=True,
    )
    return estimates


def train(cfg: DictConfig, resume: str | None = None, progress: bool = True) -> Path:
    """Train a run as ``cfg`` describes; returns the final checkpoint directory.

    ``resume``: ``None`` (start fresh), ``"auto"`` (newest valid checkpoint of the run directory, if
    any) or a checkpoint/run path. A fresh start in a folder that already holds checkpoints is
    refused (one line naming ``--resume auto`` and a new ``train.out_dir``): one run's checkpoints
    are never replaced by another's. Under torchrun this initialises the process group (NCCL on
    CUDA, gloo on CPU) and tears it down at the end."""
    from elt.train import checkpoint as ckpt_lib

    ckpt_lib.refuse_environment_reads(cfg)
    resolve_data_config(cfg)  # null data shape keys from the data; one warning per conversion
    timeout = OmegaConf.select(cfg, "distributed.timeout_s", default=None)
    with dist_lib.distributed_session(cfg.train.device, timeout_s=timeout) as env:
        run_dir = Path(cfg.train.out_dir)
        if env.is_main:
            check_output_dir(run_dir, "train.out_dir")
        with run_lock(
            run_dir, env
        ):  # held from data preparation (tokenizer, caches) to the last checkpoint
            for name in (
                "config.yaml",
                "log.jsonl",
                "wandb_id",
                "checkpoints",
                "checkpoints/latest",
            ):
                refuse_symlink(
                    run_dir / name, "run file"
                )  # planted links are refused before any work
            earlier = earlier_checkpoints(run_dir, resume)
            from elt.tokenizers.train import resuming

            with resuming(bool(resume)):  # a tokenizer training stopped earlier goes on
                trainer = Trainer(cfg, progress=progress, env=env)
            if resume == "auto":
                if checkpoints_newest_first(trainer.run_dir):
                    ckpt = trainer.resume_from(trainer.run_dir)
                    if env.is_main:
                        print(f"elt: resuming from {ckpt} (step {trainer.step})", file=sys.stderr)
                elif earlier:
                    raise CheckpointError(
                        f"train.out_dir {str(run_dir)!r} holds no complete checkpoint "
                        f"({earlier[0].name} is damaged: "
                        f"{ckpt_lib.damage_of(earlier[0]) or 'unreadable'}); it is not "
                        "overwritten: start a new run in another train.out_dir"
                    )
            elif resume:
                trainer.resume_from(resume)
            if trainer.resumed_from is not None:
                run_id = ckpt_lib.continue_run(trainer.run_dir, trainer.resumed_from)
                # resuming another run's checkpoint into this folder: its saves must not land on
                # this folder's own later steps (refused now, not after training up to them)
                foreign = [
                    p
                    for p in earlier
                    if p.name > f"step_{trainer.step:07d}" and ckpt_lib.run_id_of(p) != run_id
                ]
                if foreign:
                    raise CheckpointError(
                        f"train.out_dir {str(run_dir)!r} holds {foreign[-1].name} of another run, "
                        f"which resuming from {trainer.resumed_from} would replace; choose a new "
                        "train.out_dir"
                    )
            else:
                ckpt_lib.start_run(trainer.run_dir)
            return trainer.fit()
