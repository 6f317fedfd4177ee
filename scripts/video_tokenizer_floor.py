"""Video metrics of tokenizer reconstructions of real test clips: what a perfect token model would score.

    python scripts/video_tokenizer_floor.py RUN OUT.json

RUN is a video run (its fsq3d tokenizer is used); the reference is moving Fashion-MNIST test clips 0..999
(what `elt eval video --real-data moving_fmnist` uses), the reconstructed clips are test clips 1000..1499,
which are also scored as they are (the real-data floor at the same N).
"""

import json
import sys

import torch

import elt
from elt.core.generator import to_uint8
from elt.eval.classifier import load_classifier
from elt.eval.video import VideoSuite, moving_fmnist_reference


def main(run: str, out: str) -> dict:
    torch.set_num_threads(1)
    generator = elt.load(run)
    real, _ = moving_fmnist_reference(1000, 16, 64)
    held, labels = moving_fmnist_reference(1500, 16, 64)
    held, labels = held[1000:], labels[1000:]
    suite = VideoSuite(real, load_classifier(None))
    clips = torch.from_numpy(held).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    tokenizer = generator.tokenizer
    with torch.no_grad():
        recon = torch.cat([tokenizer.decode(tokenizer.encode(clips[i:i + 50])) for i in range(0, len(clips), 50)])
    result = {"tokenizer_reconstructions": suite.evaluate(to_uint8(recon), labels),
              "real_held_out": suite.evaluate(held, labels)}
    with open(out, "w") as handle:
        json.dump(result, handle, indent=1)
    return result


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(json.dumps(main(sys.argv[1], sys.argv[2]), indent=1))
