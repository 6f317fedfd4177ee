"""Train the FSQ tokenizer (images, ``fsq``) or the video FSQ tokenizer (clips, ``fsq3d``) on a
config's dataset and report its reconstruction quality.

The objective is plain pixel MSE: FSQ needs no codebook or commitment terms. The learning rate warms
up linearly, then decays with a cosine to a tenth, which gives a noticeably better final PSNR than a
constant rate in a short CPU budget. Quality is reported on the test split (PSNR over images scaled
to [0, 1]; for clips the MSE is taken over all frames).

SIGINT/SIGTERM stop it at the next step with a resumable state (weights, optimizer, step, data
position, RNG) in ``training_state.pt`` of the tokenizer folder; resuming it ends with the same
weights as an uninterrupted training. ``elt train --dry-run`` times a few steps
(:func:`time_tokenizer_steps`)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from tqdm.auto import tqdm

from elt.data.datasets import build_dataset
from elt.errors import UserError
from elt.fileio import (
    OutputError,
    _remove,
    check_not_in_package,
    output_error,
    temporary_name,
    write_text,
)
from elt.tokenizers.factory import build_trainable_tokenizer
from elt.tokenizers.fsq import META_FILE, FSQTokenizer, save_tokenizer
from elt.tokenizers.video_fsq import VideoFSQTokenizer


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of images with peak 1, from an MSE measured in that [0, 1] range."""
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)


@torch.no_grad()
def evaluate_reconstruction(
    tokenizer: FSQTokenizer | VideoFSQTokenizer,
    dataset: Dataset,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, float]:
    """MSE (pixels in [0, 1]) and PSNR of encode → decode over ``dataset`` (images or clips, every
    frame counted); the PSNR is that of the mean MSE."""
    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    total, count = 0.0, 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    from elt.progress import stderr_is_terminal

    bar = not (progress and stderr_is_terminal())  # no bar in a log file
    for images, _ in tqdm(loader, desc="tokenizer eval", disable=bar, leave=False):
        images = images.to(device)
        recon = tokenizer.decode(tokenizer.encode(images))
        total += float(((recon - images) / 2).pow(2).flatten(1).mean(dim=1).sum())
        count += len(images)
    mse = total / max(count, 1)
    return {"mse": mse, "psnr": psnr_from_mse(mse), "items": count}


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def eval_split(cfg: DictConfig) -> tuple[Dataset, str]:
    """The test split if the data has one; else the first training images (labelled as such)."""
    limit = cfg.tokenizer.eval_items
    try:
        dataset, name = build_dataset(cfg.data, "test"), "test"
    except FileNotFoundError:
        dataset, name = build_dataset(cfg.data, "train"), "train"
    return Subset(dataset, range(min(limit, len(dataset)))), name


# An unfinished training's resumable state, in the tokenizer folder. It is never mistaken for a
# tokenizer (fsq.is_saved wants tokenizer.safetensors + tokenizer.json) and is removed once the
# tokenizer is saved.
STATE_FILE = "training_state.pt"
STATE_FORMAT = 1

# whether a tokenizer training that finds an unfinished one continues it: set by ``elt train
# --resume`` around the run (the tokenizer is trained inside the paradigm's prepare_data)
_RESUME: ContextVar[bool] = ContextVar("tokenizer_resume", default=False)


@contextmanager
def resuming(enabled: bool) -> Iterator[None]:
    """Tokenizer trainings inside this block continue an unfinished one (``elt train --resume``)."""
    token = _RESUME.set(bool(enabled))
    try:
        yield
    finally:
        _RESUME.reset(token)


def unfinished_step(out_dir: str | Path) -> int | None:
    """The step an interrupted tokenizer training in ``out_dir`` stopped at (None: there is none;
    -1: a state that cannot be read)."""
    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except Exception:  # a damaged state is still an unfinished training
        return -1


def check_unfinished(out_dir: str | Path, steps: int, resume: bool) -> int | None:
    """The step of an interrupted tokenizer training in ``out_dir`` (None: none); without
    ``resume`` such a training is refused (one line: how to continue or start over)."""
    stopped_at = unfinished_step(out_dir)
    if stopped_at is not None and not resume:
        where = f" at step {stopped_at}/{steps}" if stopped_at >= 0 else ""
        raise UserError(
            f"{out_dir} holds an interrupted tokenizer training{where}; continue it with "
            "--resume auto (elt train or elt tokenizer train), or start over with "
            "elt tokenizer train --force"
        )
    return stopped_at


class _EpochSampler(Sampler):
    """The items of one epoch in a shuffled order fixed by (seed, epoch), from a start position:
    the data order resumes exactly from (epoch, items already drawn)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch, self.start = size, seed, 0, 0

    def set_position(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self):
        order = torch.randperm(
            self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)
        )
        return iter(order[self.start :].tolist())

    def __len__(self) -> int:
        return self.size - self.start


class TokenizerTraining:
    """One tokenizer training: the tokenizer, its data, optimizer and position (step, epoch, batch
    in epoch), which :meth:`state` / :meth:`load_state` save and restore exactly."""

    def __init__(self, cfg: DictConfig):
        from elt.runtime import resolve_device, seed_everything, set_threads

        self.cfg = cfg
        self.threads = set_threads(config=cfg.train.threads)
        seed_everything(cfg.train.seed)
        self.device = resolve_device(cfg.train.device)
        self.tokenizer = build_trainable_tokenizer(cfg).to(self.device)
        self.video = isinstance(self.tokenizer, VideoFSQTokenizer)
        self.dataset = build_dataset(cfg.data, "train")
        self.batch_size = min(cfg.tokenizer.batch_size, len(self.dataset))
        self.sampler = _EpochSampler(len(self.dataset), cfg.train.seed)
        self.optimizer = torch.optim.AdamW(
            self.tokenizer.parameters(), lr=cfg.tokenizer.lr, betas=(0.9, 0.99), weight_decay=0.0
        )
        self.steps = cfg.tokenizer.steps
        self.step = self.epoch = self.batch_in_epoch = 0
        self.log: list[dict] = []
        self.seconds = 0.0  # training time of earlier sessions (resumed runs)
        self._batches = None
        self._pending = None  # a batch loaded ahead (prefetch)

    def summary(self, out_dir: Path | None, resumed: bool = False) -> list[tuple[str, str]]:
        from elt.progress import data_description, parameter_counts

        rows = [
            ("data", data_description(self.cfg.data, len(self.dataset))),
            ("tokens per sample", str(math.prod(self.tokenizer.token_grid))),
            ("model", f"{self.cfg.tokenizer.kind} tokenizer, {parameter_counts(self.tokenizer)}"),
            (
                "run",
                f"{self.steps} steps x batch {self.batch_size}, fp32, {self.threads} "
                f"thread{'s' if self.threads != 1 else ''}, "
                f"{self.device}",
            ),
        ]
        if resumed:
            rows.append(("resumed", f"from step {self.step} (saved state in {out_dir})"))
        return rows

    def batches(self):
        """Endless batches; the position (epoch, batch in epoch) is part of the state."""
        per_epoch = len(self.dataset) // self.batch_size
        while True:
            self.sampler.set_position(self.epoch, self.batch_in_epoch * self.batch_size)
            loader = DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                sampler=self.sampler,
                drop_last=True,
                num_workers=self.cfg.data.num_workers,
                generator=torch.Generator().manual_seed(self.cfg.train.seed + self.epoch),
            )
            for batch in loader:
                if self.batch_in_epoch >= per_epoch:
                    break
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    def prefetch(self) -> None:
        """Load the next batch now (before the start summary: data that cannot be read fails in
        one line, with nothing printed before it)."""
        if self._batches is None:
            self._batches = self.batches()
        if self._pending is None:
            self._pending = next(self._batches)

    def train_step(self) -> float:
        """One optimizer step; returns the loss (MSE of pixels in [-1, 1])."""
        self.prefetch()
        batch, self._pending = self._pending, None
        self.tokenizer.train()
        images = batch[0].to(self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(
                self.step, self.steps, self.cfg.tokenizer.lr, self.cfg.tokenizer.warmup_steps
            )
        loss = (self.tokenizer.reconstruct(images) - images).pow(2).mean()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise RuntimeError(f"tokenizer loss is {value} at step {self.step}; lower tokenizer.lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.tokenizer.parameters(), 1.0)
        self.optimizer.step()
        if self.step % 50 == 0 or self.step == self.steps - 1:
            mse01 = value / 4
            self.log.append({"step": self.step + 1, "mse": mse01, "psnr": psnr_from_mse(mse01)})
        self.step += 1
        return value

    def state(self, seconds: float) -> dict:
        from elt.runtime import rng_state

        return {
            "format": STATE_FORMAT,
            "step": self.step,
            "steps": self.steps,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "batch_size": self.batch_size,
            "weights": self.tokenizer.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(self.device),
            "log": json.dumps(self.log),
            "seconds": seconds,
            "kind": self.cfg.tokenizer.kind,
        }

    def load_state(self, path: Path) -> None:
        from elt.runtime import set_rng_state

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state.get("format") != STATE_FORMAT:
                raise ValueError(f"format {state.get('format')}, expected {STATE_FORMAT}")
            if state["kind"] != self.cfg.tokenizer.kind:
                raise ValueError(f"it trains tokenizer.kind={state['kind']}")
            self.tokenizer.load_state_dict(state["weights"])
            self.optimizer.load_state_dict(state["optimizer"])
        except Exception as exc:
            raise UserError(
                f"cannot resume the tokenizer training saved in {path}: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                "start over with --force (elt tokenizer train) or delete that file"
            ) from None
        if state["batch_size"] != self.batch_size:
            warn(
                f"resuming the tokenizer with batch {self.batch_size} (saved: "
                f"{state['batch_size']}); the data position is kept in batches"
            )
        saved_steps = int(state.get("steps", self.steps))
        if saved_steps != self.steps:
            stopped = int(state["step"])
            warn(
                f"resuming the tokenizer training saved at step {stopped}/{saved_steps} with "
                f"tokenizer.steps={self.steps}: "
                + (
                    f"it is past that already and is saved as it is, after {stopped} steps"
                    if stopped >= self.steps
                    else f"it trains to step {self.steps}, with the learning-rate schedule of "
                    f"{self.steps} steps from here on"
                )
            )
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.log = json.loads(state["log"])
        self.seconds = float(state["seconds"])
        set_rng_state(state["rng"], self.device)


def warn(message: str) -> None:
    print(f"elt: warning: {message}", file=sys.stderr, flush=True)


def time_tokenizer_steps(cfg: DictConfig, steps: int) -> tuple[float, TokenizerTraining]:
    """For a dry run: the seconds per step of ``steps`` tokenizer steps after a first, untimed one
    (nothing is written). Returns the time and the training (for its summary)."""
    run = TokenizerTraining(cfg)
    run.train_step()
    start = time.perf_counter()
    for _ in range(steps):
        run.train_step()
    return (time.perf_counter() - start) / steps, run


def train_tokenizer(
    cfg: DictConfig,
    out_dir: str | Path,
    progress: bool = True,
    resume: bool | None = None,
    restart: bool = False,
) -> dict:
    """Train the FSQ tokenizer ``cfg.tokenizer`` describes (``fsq`` or ``fsq3d``) on ``cfg.data``;
    save it in ``out_dir``.

    Inside :func:`elt.progress.reporting` (the training commands) it prints the start summary
    (stderr), the measured time estimate after the first steps and progress lines when stderr is
    not a terminal; ``progress``: the bar on a terminal. SIGINT/SIGTERM save
    a resumable state in ``out_dir/training_state.pt`` at the next step and raise
    :class:`TrainingInterrupted`. ``resume`` (default: inside :func:`resuming`): continue such a
    state; an unfinished training is otherwise refused, unless ``restart`` (start over).

    Returns the metadata written to ``out_dir/tokenizer.json`` (architecture, hash, metrics,
    timing)."""
    from elt.progress import Progress, print_summary
    from elt.signals import GracefulStop, TrainingInterrupted

    out_dir = Path(out_dir)
    check_not_in_package(out_dir)
    resume = _RESUME.get() if resume is None else resume
    state_path = out_dir / STATE_FILE
    stopped_at = None if restart else check_unfinished(out_dir, cfg.tokenizer.steps, resume)
    run = TokenizerTraining(cfg)
    if stopped_at is not None:
        run.load_state(state_path)
    run.prefetch()
    print_summary(
        f"training the {cfg.tokenizer.kind} tokenizer -> {out_dir}",
        run.summary(out_dir, resumed=stopped_at is not None),
    )
    steps = run.steps
    start = time.perf_counter()
    bar = Progress("tokenizer", steps, initial=run.step, bar=progress, every=cfg.logging.every)
    with GracefulStop(cfg.checkpoint.handle_signals) as stopper:
        while run.step < steps:
            loss = run.train_step()
            bar.update(run.step, {"psnr": psnr_from_mse(loss / 4)})
            if stopper.requested and run.step < steps:
                bar.close()
                out_dir.mkdir(parents=True, exist_ok=True)
                _save_state(state_path, run.state(run.seconds + time.perf_counter() - start))
                raise TrainingInterrupted(
                    stopper.signum,
                    run.step,
                    state_path,
                    message=f"stopped tokenizer training at step {run.step}/{steps}; state "
                    f"saved in {state_path}; continue with --resume auto",
                )
    bar.close()
    seconds = run.seconds + time.perf_counter() - start
    tokenizer = run.tokenizer.eval()
    info: dict = {
        "train_seconds": seconds,
        "steps": max(steps, run.step),  # a resumed training may already be past tokenizer.steps
        "batch_size": run.batch_size,
        "data": {
            "name": cfg.data.name,
            "root": cfg.data.root,
            "image_size": cfg.data.image_size,
            **(
                {
                    "frames": cfg.data.frames,
                    "sprite_size": cfg.data.sprite_size,
                    "motion": cfg.data.motion,
                }
                if run.video
                else {}
            ),
        },
    }
    with _staged(out_dir) as stage:
        _write_outputs(cfg, tokenizer, info, run.log, stage, run.video, progress)
    _remove(state_path)  # the tokenizer is saved: the unfinished state is done with
    return json.loads((out_dir / "tokenizer.json").read_text())


def _save_state(path: Path, state: dict) -> None:
    from elt.fileio import write_via

    write_via(path, lambda tmp: torch.save(state, tmp))


@contextmanager
def _staged(out_dir: Path) -> Iterator[Path]:
    """Write the tokenizer's files in a temporary sibling folder, then move them into ``out_dir``: a
    write that fails (disk full, file-size limit) leaves neither a partial tokenizer nor the
    temporary folder behind."""
    stage = temporary_name(out_dir)
    _remove(stage)
    try:
        stage.mkdir(parents=True)
        yield stage
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in sorted(
            stage.iterdir(), key=lambda p: p.name == META_FILE
        ):  # tokenizer.json (is_saved) last
            os.replace(item, out_dir / item.name)
    except OutputError as exc:  # name the final folder, not the temporary one
        error = OutputError(str(exc).replace(str(stage), str(out_dir)))
        error.errno = exc.errno
        raise error from exc
    except OSError as exc:
        raise output_error(out_dir, exc) from exc
    finally:
        _remove(stage)


def _write_outputs(
    cfg: DictConfig, tokenizer, info: dict, log: list, out_dir: Path, video: bool, progress: bool
) -> None:
    from elt.visual import save_grid

    device = next(tokenizer.parameters()).device
    if cfg.tokenizer.eval_items > 0:
        eval_set, split = eval_split(cfg)
        # clips are ~frames× bigger than images: keep the evaluation batch's memory about the same
        eval_batch = max(1, 256 // cfg.data.frames) if video else 256
        metrics = evaluate_reconstruction(
            tokenizer, eval_set, batch_size=eval_batch, progress=progress
        )
        info["metrics"] = {**metrics, "split": split}
        shown = min(4 if video else 16, len(eval_set))
        images = torch.stack([eval_set[i][0] for i in range(shown)]).to(device)
        recon = tokenizer.decode(tokenizer.encode(images))
        if video:  # one row of frames per clip: input, then decoded
            rows, labels = [], []
            for clip, decoded in zip(_uint8(images), _uint8(recon), strict=True):
                rows += [clip, decoded]
                labels += ["input", "decoded"]
        else:
            rows, labels = [_uint8(images), _uint8(recon)], ["input", "decoded"]
        save_grid(
            out_dir / "reconstructions.png",
            rows,
            labels,
            title=f"{tokenizer.kind} tokenizer, {split} PSNR {metrics['psnr']:.2f} dB",
        )
    save_tokenizer(tokenizer.cpu(), out_dir, info)
    write_text(out_dir / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in log))


def _uint8(images: torch.Tensor) -> np.ndarray:
    from elt.core.generator import to_uint8

    return to_uint8(images)
