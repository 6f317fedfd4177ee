"""The files of a checkpoint folder, shared by the code that writes checkpoints (:mod:`elt.train`)
and the code that reads them (:mod:`elt.inference`).

    RUN/checkpoints/step_0001000/
        config.yaml         the full run config: the checkpoint knows its architecture
        model.safetensors   raw weights
        ema.safetensors     EMA weights (sampling uses these by default)
        state.pt            optimizer, schedules, step, data position, RNG states
                            (weights_only=True)
        manifest.json       byte size of every file above, written last
    RUN/checkpoints/latest  name of the newest complete checkpoint

An inference export (:mod:`elt.inference.export`) holds ``config.yaml`` and ``model.safetensors``
only."""

from __future__ import annotations

import os
import re
from pathlib import Path

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
CHECKPOINT_FILES = (CONFIG_FILE, MODEL_FILE, EMA_FILE, STATE_FILE, MANIFEST_FILE)
STEP_NAME = re.compile(r"step_\d{7,}")


def ordinary_mode(path: str | Path) -> None:
    """Give a file the mode ``open()`` would (0666 less the umask): safetensors writes 0600, which
    hides checkpoints from the other users of a shared run directory."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
