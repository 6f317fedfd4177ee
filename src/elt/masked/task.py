"""The masked paradigm's entry points for the registry: build the generator, prepare token data.

``prepare_data`` makes a run self-sufficient: it trains the FSQ tokenizer if ``tokenizer.path``
(default ``RUN/tokenizer``) holds none, loads it into the generator, and encodes the training images
once into a memory-mapped token cache keyed by the tokenizer's weight hash (so a retrained tokenizer
never meets a stale cache). Training then reads tokens, not pixels. Several runs can share one
tokenizer (and its cache) by pointing ``tokenizer.path`` at the same folder.

Video (``data.frames > 0``, ``tokenizer.kind = fsq3d``) goes through the same path: items are
C×T×H×W clips, the tokenizer maps them to t×h×w grids, and the cache stores the flattened t·h·w
tokens."""

from __future__ import annotations

import math
import random
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset, default_collate

from elt.config import PRETRAINED_TOKENIZER_KINDS
from elt.data.cache import CacheSpec, build_cache, state_dict_hash
from elt.data.datasets import build_dataset
from elt.data.folders import ImageFolder
from elt.masked.model import MaskedGenerator
from elt.runtime import autocast_context, uses_bf16
from elt.tokenizers.factory import build_tokenizer


def build_generator(cfg) -> MaskedGenerator:
    return MaskedGenerator(cfg, build_tokenizer(cfg))


def tokenizer_dir(cfg, run_dir: str | Path) -> Path:
    return Path(cfg.tokenizer.path) if cfg.tokenizer.path else Path(run_dir) / "tokenizer"


@contextmanager
def preserved_rng():
    """Tokenizer training and encoding must not shift the run's random streams: a run that finds its
    tokenizer already trained draws the same masks as one that trains it first."""
    torch_state, numpy_state, python_state = (
        torch.get_rng_state(),
        np.random.get_state(),
        random.getstate(),
    )
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def load_trained_tokenizer(
    cfg, generator: MaskedGenerator, run_dir: str | Path, progress: bool = True
) -> dict:
    """Put trained weights into ``generator.tokenizer`` (training the FSQ tokenizer first if none is
    saved)."""
    return load_tokenizer_weights(cfg, generator.tokenizer, run_dir, progress=progress)


def load_tokenizer_weights(
    cfg, tokenizer: torch.nn.Module, run_dir: str | Path, progress: bool = True
) -> dict:
    """Put trained weights into ``tokenizer`` (training the FSQ tokenizer first if none is
    saved)."""
    from elt.tokenizers import fsq

    if cfg.tokenizer.kind in PRETRAINED_TOKENIZER_KINDS:
        source = build_tokenizer(cfg, weights=True)
        tokenizer.load_state_dict(source.state_dict())
        return {"kind": cfg.tokenizer.kind, "path": cfg.tokenizer.pretrained_path}
    folder = tokenizer_dir(cfg, run_dir)
    if not fsq.is_saved(folder):
        from elt.data.cache import check_solo_build
        from elt.tokenizers.train import train_tokenizer

        check_solo_build(f"no trained tokenizer in {folder}")

        print(
            f"elt: no tokenizer in {folder}: training the {cfg.tokenizer.kind} tokenizer first "
            f"({cfg.tokenizer.steps} steps of batch {cfg.tokenizer.batch_size}; its time per step "
            "is measured and printed after the first steps, and elt train --dry-run estimates "
            "it without training). It is saved there and reused by every run whose "
            "tokenizer.path points at that folder; to skip this, set tokenizer.path=FOLDER of a "
            "trained one (elt tokenizer train CONFIG tokenizer.path=FOLDER).",
            file=sys.stderr,
            flush=True,
        )
        meta = train_tokenizer(cfg, folder, progress=progress)
        metrics = meta.get("metrics")
        if metrics:
            print(
                f"tokenizer {metrics['split']} PSNR {metrics['psnr']:.2f} dB, MSE "
                f"{metrics['mse']:.5f}"
            )
    return fsq.load_tokenizer(tokenizer, folder)


class _Loadable(Dataset):
    """Wraps an image (or video) dataset so that an unreadable file yields ``ok=False`` instead of a
    substitute."""

    def __init__(self, dataset: Dataset, shape: tuple[int, ...]):
        self.dataset, self.shape = dataset, shape

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if isinstance(self.dataset, ImageFolder):
            item = self.dataset.load(index)
            if item is None:
                return torch.zeros(self.shape), -1, False
            return item[0], item[1], True
        image, label = self.dataset[index]
        return image, int(label), True


def token_cache_spec(
    cfg, tokenizer: torch.nn.Module, cache_dir: str | Path, precision: str = "auto"
) -> CacheSpec:
    """The token cache of the training split: int array N × variants × (T + 1), T = tokens per item.

    ``variants`` is 2 with ``data.hflip`` (the image and its mirror image; for video every frame
    mirrored), else 1. The last column is the label, −1 for an item that could not be read (dropped
    by :class:`TokenDataset`). Video items (C×T×H×W) are encoded to t×h×w grids, stored flattened.
    Ranges are encoded in any order (``elt prepare`` gives each process its own shards). Items are
    decoded in ``data.num_workers`` DataLoader workers; the tokenizer encodes on its device, in bf16
    autocast where ``precision`` asks for it (``auto``: on CUDA), its rounding / nearest-code search
    in fp32."""
    dataset = build_dataset(cfg.data, "train")
    tokenizer.eval()
    seq_len = math.prod(tokenizer.token_grid)
    variants = 2 if cfg.data.hflip else 1
    dtype = np.int16 if tokenizer.codebook_size < 2**15 else np.int32
    frames = cfg.data.frames
    shape = (
        cfg.data.channels,
        *((frames,) if frames else ()),
        cfg.data.image_size,
        cfg.data.image_size,
    )
    batch_size = cfg.tokenizer.encode_batch_size
    key = {
        "tokenizer": state_dict_hash(tokenizer),
        "kind": cfg.tokenizer.kind,
        "data": cfg.data.name,
        "root": str(Path(cfg.data.root).resolve()) if cfg.data.root else None,
        "image_size": cfg.data.image_size,
        "channels": cfg.data.channels,
        "limit": cfg.data.limit,
        "hflip": bool(cfg.data.hflip),
    }
    if frames:  # every data setting that changes the clips (image caches keep their old key)
        video = OmegaConf.to_container(cfg.data, resolve=True)
        key["video"] = {
            k: v for k, v in sorted(video.items()) if k not in key and k not in ("num_workers",)
        }
    loadable = _Loadable(dataset, shape)
    device = next(tokenizer.parameters()).device
    bf16 = uses_bf16(device, precision)

    def encode_batch(collated) -> np.ndarray:
        images, labels, ok = collated
        out = np.full((len(labels), variants, seq_len + 1), -1, dtype=dtype)
        if ok.any():
            good = images[ok].to(device)
            views = [good, good.flip(-1)][:variants]
            with torch.no_grad(), autocast_context(device, "bf16" if bf16 else "fp32"):
                for v, view in enumerate(
                    views
                ):  # the tokenizers round/argmin in fp32 under autocast
                    out[ok.numpy(), v, :seq_len] = tokenizer.encode(view).flatten(1).cpu().numpy()
            out[ok.numpy(), :, seq_len] = labels[ok].numpy()[:, None]
        return out

    def encode(
        start: int, stop: int
    ) -> np.ndarray:  # one range, decoded here (encode_blocks uses workers)
        return encode_batch(default_collate([loadable[i] for i in range(start, stop)]))

    clip = f"{frames}f_" if frames else ""
    name = f"{cfg.data.name}_train_{clip}{cfg.data.image_size}px{'_hflip' if variants == 2 else ''}"
    return CacheSpec(
        Path(cache_dir) / name,
        key,
        len(dataset),
        (variants, seq_len + 1),
        dtype,
        encode,
        batch_size=batch_size,
        skipped=lambda block: int((block[:, 0, -1] < 0).sum()),
        items=loadable,
        encode_batch=encode_batch,
        num_workers=cfg.data.num_workers,
        info={"encode_precision": "bf16" if bf16 else "fp32"},
    )


def encode_dataset(
    cfg, tokenizer: torch.nn.Module, cache_dir: str | Path, progress: bool = True
) -> np.ndarray:
    """The token cache (:func:`token_cache_spec`), read if its manifest matches, else encoded
    here."""
    with torch.no_grad():
        return build_cache(token_cache_spec(cfg, tokenizer, cache_dir), progress=progress)


class TokenDataset(Dataset):
    """(tokens LongTensor T, label) items read from a token cache; with two variants (hflip) each
    access picks one at random."""

    def __init__(self, cache: np.ndarray):
        if cache.ndim != 3:
            raise ValueError(f"token cache must be N × variants × (T + 1), got shape {cache.shape}")
        self.cache = cache
        labels = np.asarray(cache[:, 0, -1])
        self.index = np.nonzero(labels >= 0)[0]
        self.skipped = int(len(labels) - len(self.index))
        if self.skipped:
            warnings.warn(
                f"{self.skipped} unreadable images were skipped when encoding the training set",
                stacklevel=2,
            )
        if len(self.index) == 0:
            raise ValueError("the token cache holds no readable images")
        self.labels = torch.from_numpy(labels[self.index].astype(np.int64))

    @property
    def variants(self) -> int:
        return self.cache.shape[1]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.cache[self.index[i]]
        v = int(torch.randint(self.variants, (1,))) if self.variants > 1 else 0
        return torch.from_numpy(row[v, :-1].astype(np.int64)), self.labels[i]


def cache_spec(
    cfg, generator: MaskedGenerator, run_dir: str | Path, progress: bool = True
) -> CacheSpec:
    """The trained tokenizer in the generator and the spec of the token cache."""
    with preserved_rng():
        load_trained_tokenizer(cfg, generator, run_dir, progress=progress)
    generator.tokenizer.eval()
    return token_cache_spec(cfg, generator.tokenizer, tokenizer_dir(cfg, run_dir) / "cache")


def prepare_builds_first(cfg, run_dir: str | Path) -> bool:
    """For ``elt prepare``: whether one process must build something before the others can read it
    (a missing FSQ tokenizer is trained once); otherwise every process builds its spec at the same
    time."""
    from elt.tokenizers import fsq

    return cfg.tokenizer.kind not in PRETRAINED_TOKENIZER_KINDS and not fsq.is_saved(
        tokenizer_dir(cfg, run_dir)
    )


def prepare_spec(
    cfg, run_dir: str | Path, device: torch.device, precision: str = "auto", progress: bool = True
) -> CacheSpec:
    """For ``elt prepare``: the token cache's spec with only the tokenizer built (trained first if
    none is saved; no transformer), moved to ``device``."""
    tokenizer = build_tokenizer(cfg)
    with preserved_rng():
        load_tokenizer_weights(cfg, tokenizer, run_dir, progress=progress)
    tokenizer.eval().requires_grad_(False).to(device)
    return token_cache_spec(
        cfg, tokenizer, tokenizer_dir(cfg, run_dir) / "cache", precision=precision
    )


def prepare_data(
    cfg, generator: MaskedGenerator, run_dir: str | Path, progress: bool = True
) -> TokenDataset:
    """Trained tokenizer in the generator, training set encoded (or read from the cache) as
    tokens."""
    with preserved_rng():
        load_trained_tokenizer(cfg, generator, run_dir, progress=progress)
        generator.tokenizer.eval()
        cache = encode_dataset(
            cfg, generator.tokenizer, tokenizer_dir(cfg, run_dir) / "cache", progress=progress
        )
    return TokenDataset(cache)


# -- dry run (elt train --dry-run): what a run would train, timed without writing anything --------
def tokenizer_to_train(cfg, run_dir: str | Path) -> Path | None:
    """The folder a run would train its FSQ tokenizer into first (None: it has one, or loads a
    pretrained one)."""
    from elt.tokenizers import fsq

    if cfg.tokenizer.kind in PRETRAINED_TOKENIZER_KINDS:
        return None
    folder = tokenizer_dir(cfg, run_dir)
    return None if fsq.is_saved(folder) else folder


class RandomTokens(Dataset):
    """``size`` items of random token ids and labels, shaped like the token cache's: the model
    phase of a dry run is timed on them (the time of a step does not depend on the ids)."""

    def __init__(self, size: int, seq_len: int, codebook_size: int, num_classes: int):
        self.size, self.seq_len = size, seq_len
        self.codebook_size, self.num_classes = codebook_size, num_classes

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        tokens = torch.randint(self.codebook_size, (self.seq_len,), generator=g)
        return tokens, torch.tensor(i % self.num_classes)


def dry_run_data(cfg, generator: MaskedGenerator, run_dir: str | Path) -> Dataset:
    """The dataset a dry run times the model on: random token ids, as many items as the training
    split has (the real tokens need a trained tokenizer and an encoding pass, which write files)."""
    items = len(build_dataset(cfg.data, "train"))
    return RandomTokens(
        items, generator.seq_len, generator.tokenizer.codebook_size, cfg.data.num_classes
    )
