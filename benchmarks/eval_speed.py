"""How long the Fashion-MNIST domain metrics take for N samples (default 10k) on this machine.

Stages: loading the data and the shipped classifier, features and k-NN radii of the 10k reference
(test) images (once per sweep), then per evaluated point: features of the N samples, FD_cls, KID
(100 subsets of 1000), precision/recall/density/coverage (k=5), class accuracy; and the real-vs-real
floor at N (once per sweep). The "samples" are real training images with pixel noise (the metrics'
cost does not depend on where the images come from). Prints a table and writes JSON.

    python benchmarks/eval_speed.py \\
        [--num 10000 --threads 1 --out benchmarks/results/eval_speed.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from elt.fileio import write_json


def timed(results: dict, name: str, fn):
    start = time.perf_counter()
    value = fn()
    results[name] = time.perf_counter() - start
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "eval_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from elt.data.fashion_mnist import load_arrays
    from elt.eval.classifier import load_classifier
    from elt.eval.metrics import class_accuracy, kid, knn_radii, prdc
    from elt.eval.suites import DomainSuite

    seconds: dict[str, float] = {}
    suite = timed(
        seconds, "load data + classifier", lambda: DomainSuite.fashion_mnist(load_classifier())
    )
    timed(seconds, "reference features (10k test images, once)", suite.reference_features)
    train_images, train_labels = load_arrays(None, "train")
    rng = np.random.default_rng(0)
    pick = rng.choice(len(train_images), args.num, replace=args.num > len(train_images))
    noisy = train_images[pick].astype(np.int16) + rng.integers(-20, 21, (args.num, 28, 28))
    samples = np.pad(np.clip(noisy, 0, 255).astype(np.uint8), ((0, 0), (2, 2), (2, 2)))[
        ..., None
    ]  # as generated
    labels = train_labels[pick]
    real = suite.reference_features()
    radii = timed(
        seconds,
        "reference k-NN radii (once)",
        lambda: knn_radii(torch.as_tensor(real.features, dtype=torch.float64), 5),
    )
    per_point: dict[str, float] = {}
    fake = timed(per_point, f"sample features ({args.num})", lambda: suite.features(samples))
    fd = timed(per_point, "FD_cls", lambda: suite.frechet(fake.features))
    kid_value = timed(per_point, "KID (100 x 1000)", lambda: kid(real.features, fake.features))
    prdc_value = timed(
        per_point, "PRDC (k=5)", lambda: prdc(real.features, fake.features, k=5, real_radii=radii)
    )
    acc = timed(per_point, "class accuracy", lambda: class_accuracy(fake.logits, labels))
    whole: dict[str, float] = {}
    suite._real_radii = radii  # as after the first point of a sweep
    evaluated = timed(
        whole,
        "suite.evaluate (a further point, end to end)",
        lambda: suite.evaluate(samples, labels),
    )
    timed(whole, f"real-vs-real floor at N={args.num} (once)", lambda: suite.floor(args.num))
    assert (
        evaluated["fd_cls"] == fd and evaluated["precision"] == prdc_value["precision"]
    )  # same computation

    first_point = sum(seconds.values()) + sum(per_point.values())
    floor_key = f"real-vs-real floor at N={args.num} (once)"
    rows = [
        *seconds.items(),
        *per_point.items(),
        *whole.items(),
        ("TOTAL: setup + reference + one point", first_point),
        ("TOTAL with the floor (a cold 'elt eval' of one point)", first_point + whole[floor_key]),
    ]
    width = max(len(name) for name, _ in rows)
    print(
        f"domain metrics for N={args.num}, torch threads={args.threads}, "
        f"{platform.processor() or platform.machine()}"
        f", {os.cpu_count()} cores"
    )
    for name, value in rows:
        print(f"  {name.ljust(width)}  {value:8.2f} s")
    print(
        f"  values: FD_cls={fd:.3f} KID={kid_value[0]:.5f} precision={prdc_value['precision']:.3f} "
        f"recall={prdc_value['recall']:.3f} class_acc={acc:.3f}"
    )
    record = {
        "num": args.num,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "seconds": dict(rows),
        "total_seconds_first_point": first_point,
        "per_point_seconds": sum(per_point.values()),
        "values": {"fd_cls": fd, "kid": kid_value[0], **prdc_value, "class_acc": acc},
        "command": f"python benchmarks/eval_speed.py --num {args.num} --threads {args.threads}",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, record)  # atomic: no half-written file under its name
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
