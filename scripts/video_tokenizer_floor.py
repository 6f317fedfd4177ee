"""Video metrics of tokenizer reconstructions of real test clips: what a perfect token model would
score.

    python scripts/video_tokenizer_floor.py RUN_OR_TOKENIZER OUT.json

RUN_OR_TOKENIZER is a video run (its fsq3d tokenizer is used) or a folder written by `elt tokenizer
train` (tokenizer.json + tokenizer.safetensors). The clips have the geometry the tokenizer was
trained on (frames, canvas, sprite size, motion). The reference is moving Fashion-MNIST test clips
0..999 (what `elt eval video --real-data moving_fmnist` uses); the reconstructed clips are test
clips 1000..1499, which are also scored as they are (the real-data floor at the same N)."""

import json
import sys
from pathlib import Path

import torch

from elt.core.generator import to_uint8
from elt.eval.classifier import load_classifier
from elt.eval.video import VideoSuite, moving_fmnist_reference


def load_video_tokenizer(path: str) -> tuple[torch.nn.Module, dict]:
    """(tokenizer, data fields) of a run folder or a bare tokenizer folder."""
    folder = Path(path)
    if (folder / "tokenizer.json").is_file() and (folder / "tokenizer.safetensors").is_file():
        from elt.tokenizers.fsq import load_tokenizer
        from elt.tokenizers.video_fsq import VideoFSQTokenizer

        meta = json.loads((folder / "tokenizer.json").read_text())
        arch = dict(meta["architecture"])
        if arch.pop("kind") != "fsq3d":
            sys.exit(
                f"{folder} holds an image tokenizer; this script measures video (fsq3d) tokenizers"
            )
        tokenizer = VideoFSQTokenizer(**arch)
        load_tokenizer(tokenizer, folder)
        data = {"frames": arch["frames"], "image_size": arch["image_size"], **meta.get("data", {})}
        return tokenizer.eval(), data
    import elt

    generator = elt.load(path)
    data = generator.config.data
    return generator.tokenizer, {
        "frames": data.frames,
        "image_size": data.image_size,
        "sprite_size": data.sprite_size,
        "motion": data.motion,
    }


def main(path: str, out: str) -> dict:
    torch.set_num_threads(1)
    tokenizer, data = load_video_tokenizer(path)
    geometry = (
        data["frames"],
        data["image_size"],
        data.get("motion", "bounce"),
        data.get("sprite_size", 28),
    )
    real, _ = moving_fmnist_reference(1000, *geometry)
    held, labels = moving_fmnist_reference(1500, *geometry)
    held, labels = held[1000:], labels[1000:]
    suite = VideoSuite(real, load_classifier(None))
    clips = torch.from_numpy(held).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    with torch.no_grad():
        recon = torch.cat(
            [
                tokenizer.decode(tokenizer.encode(clips[i : i + 50]))
                for i in range(0, len(clips), 50)
            ]
        )
    result = {
        "tokenizer": str(path),
        "geometry": dict(
            zip(("frames", "image_size", "motion", "sprite_size"), geometry, strict=True)
        ),
        "tokenizer_reconstructions": suite.evaluate(to_uint8(recon), labels),
        "real_held_out": suite.evaluate(held, labels),
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as handle:
        json.dump(result, handle, indent=1)
    return result


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(json.dumps(main(sys.argv[1], sys.argv[2]), indent=1))
