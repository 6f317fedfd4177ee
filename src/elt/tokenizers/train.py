"""Train the FSQ tokenizer (images, ``fsq``) or the video FSQ tokenizer (clips, ``fsq3d``) on a
config's dataset and report its reconstruction quality.

The objective is plain pixel MSE: FSQ needs no codebook or commitment terms. The learning rate warms
up linearly, then decays with a cosine to a tenth, which gives a noticeably better final PSNR than a
constant rate in a short CPU budget. Quality is reported on the test split (PSNR over images scaled
to [0, 1]; for clips the MSE is taken over all frames)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from elt.data.datasets import build_dataset
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
    for images, _ in tqdm(loader, desc="tokenizer eval", disable=not progress, leave=False):
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


def _endless(loader: DataLoader):
    while True:
        yield from loader


def eval_split(cfg: DictConfig) -> tuple[Dataset, str]:
    """The test split if the data has one; else the first training images (labelled as such)."""
    limit = cfg.tokenizer.eval_items
    try:
        dataset, name = build_dataset(cfg.data, "test"), "test"
    except FileNotFoundError:
        dataset, name = build_dataset(cfg.data, "train"), "train"
    return Subset(dataset, range(min(limit, len(dataset)))), name


def train_tokenizer(cfg: DictConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train the FSQ tokenizer ``cfg.tokenizer`` describes (``fsq`` or ``fsq3d``) on ``cfg.data``;
    save it in ``out_dir``.

    Returns the metadata written to ``out_dir/tokenizer.json`` (architecture, hash, metrics,
    timing)."""
    from elt.runtime import resolve_device, seed_everything, set_threads

    set_threads(config=cfg.train.threads)
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    out_dir = Path(out_dir)
    check_not_in_package(out_dir)
    tokenizer = build_trainable_tokenizer(cfg).to(device)
    video = isinstance(tokenizer, VideoFSQTokenizer)
    dataset = build_dataset(cfg.data, "train")
    batch_size = min(cfg.tokenizer.batch_size, len(dataset))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.data.num_workers,
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )
    optimizer = torch.optim.AdamW(
        tokenizer.parameters(), lr=cfg.tokenizer.lr, betas=(0.9, 0.99), weight_decay=0.0
    )
    steps = cfg.tokenizer.steps
    log = []
    start = time.perf_counter()
    batches = _endless(loader)
    bar = tqdm(range(steps), desc="tokenizer", disable=not progress, dynamic_ncols=True)
    tokenizer.train()
    for step in bar:
        images = next(batches)[0].to(device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, cfg.tokenizer.lr, cfg.tokenizer.warmup_steps)
        loss = (tokenizer.reconstruct(images) - images).pow(2).mean()
        if not torch.isfinite(loss):
            raise RuntimeError(
                f"tokenizer loss is {float(loss)} at step {step}; lower tokenizer.lr"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tokenizer.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            mse01 = loss.item() / 4
            log.append({"step": step + 1, "mse": mse01, "psnr": psnr_from_mse(mse01)})
            bar.set_postfix(psnr=f"{log[-1]['psnr']:.2f}dB")
    bar.close()
    seconds = time.perf_counter() - start
    tokenizer.eval()
    info: dict = {
        "train_seconds": seconds,
        "steps": steps,
        "batch_size": batch_size,
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
                if video
                else {}
            ),
        },
    }
    with _staged(out_dir) as stage:
        _write_outputs(cfg, tokenizer, info, log, stage, video, progress)
    return json.loads((out_dir / "tokenizer.json").read_text())


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
