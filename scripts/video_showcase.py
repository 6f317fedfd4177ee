"""The README's video picture: real clips on the first row, then one row per loop count, one column
per class.

    python scripts/video_showcase.py SAMPLES_DIR OUT.png [--loops 1,2,4,5] [--per-class 1]

SAMPLES_DIR is what `elt sample` wrote (samples_L<L>.npz and samples.json, whose recorded training
data gives the real clips' geometry). Writes OUT.png (a still), OUT.gif and, with PyAV, OUT.mp4. The
generated clips of a column are the first ones of that class in each file, so every row shows the
same labels and seeds; the real clips are the first test clips of each class."""

import argparse
from pathlib import Path

import numpy as np

from elt.eval.video import load_videos, moving_fmnist_reference, real_data_geometry, sample_files
from elt.visual import save_video_grid


def first_of_each_class(
    videos: np.ndarray, labels: np.ndarray, classes: int, per_class: int
) -> np.ndarray:
    picks = [np.flatnonzero(labels == c)[:per_class] for c in range(classes)]
    missing = [c for c, p in enumerate(picks) if len(p) < per_class]
    if missing:
        raise SystemExit(f"classes {missing} have fewer than {per_class} clips")
    return videos[np.concatenate(picks)]


def main(argv=None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("samples")
    parser.add_argument("out")
    parser.add_argument(
        "--loops", default=None, help="loop counts to show, e.g. 1,2,4,5 (default: every file)"
    )
    parser.add_argument("--per-class", type=int, default=1)
    parser.add_argument("--fps", type=float, default=8.0)
    args = parser.parse_args(argv)
    loops = [int(v) for v in args.loops.split(",")] if args.loops else None
    files = sample_files(args.samples, loops)
    first, labels = load_videos(next(iter(files.values())))
    classes = int(labels.max()) + 1
    frames, size = first.shape[1], first.shape[2]
    real, real_labels = moving_fmnist_reference(
        50 * classes, frames, size, *real_data_geometry(args.samples)
    )
    rows = [first_of_each_class(real, real_labels, classes, args.per_class)]
    for path in files.values():
        videos, labels = load_videos(path)
        rows.append(first_of_each_class(videos, labels, classes, args.per_class))
    row_labels = ["real", *(f"L={k}" for k in files)]
    written = save_video_grid(
        args.out,
        rows,
        row_labels,
        title="rows: real, then loop counts; columns: classes",
        fps=args.fps,
    )
    print("wrote", ", ".join(str(p) for p in written))
    return written


if __name__ == "__main__":
    main()
