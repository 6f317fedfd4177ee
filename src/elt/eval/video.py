"""Video metrics for moving-sprite generation: per-frame domain metrics, class consistency, a motion
check, and FVD for users with I3D weights. Everything works on uint8 videos N×T×H×W×C as ``elt
sample`` writes them.

Per-frame domain metrics. The Fashion-MNIST classifier (:mod:`elt.eval.classifier`) sees 32×32
images of a garment centred with a 2-px margin; a frame of a moving sprite is a 64×64 canvas with
the garment anywhere. So every frame is cropped to 32×32 around the sprite's centre of mass (pixels
above a small threshold, so that faint noise does not pull the centre), the same way for real and
generated clips, which keeps the real-vs-real floor comparable. From the crops: FD_cls over all
frames (pooled), frame accuracy, video accuracy (the video's class = argmax of its frames' mean
logits) and class consistency (the share of a video's frames whose own class is the video's class: a
garment that morphs into another scores low).

Motion check. The centre of mass per frame is the sprite's trajectory. Each video becomes a small
descriptor (mean and spread of its speed, median and mean acceleration magnitude, path straightness,
mean horizontal and vertical speed), standardised by the real set's spread, and ``motion_fd`` is the
Fréchet distance between generated and real descriptors. Real bouncing sprites move at constant
speed with rare accelerations; a static clip has zero speed and a clip with shuffled frames jumps
about with large accelerations, so both score far above real clips (tests check this), while
per-frame metrics cannot tell them apart from real ones.

FVD (I3D logits, :mod:`elt.eval.i3d`) is added when I3D weights are given; it is the standard video
metric but needs the user's weights file, and on 64-px grey sprites it is out of domain, which is
why the checks above exist."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elt.errors import UserError
from elt.eval.classifier import ImageFormatError
from elt.eval.frechet import frechet_distance_features
from elt.fileio import check_output_dir, load_npz, write_json

CROP_SIZE = 32
MASS_THRESHOLD = 0.1  # intensity (0..1) below which a pixel is background for the centre of mass
DESCRIPTOR_NAMES = (
    "mean_speed",
    "speed_std",
    "median_accel",
    "mean_accel",
    "straightness",
    "mean_abs_vy",
    "mean_abs_vx",
)


class VideoFormatError(UserError, ValueError):
    """Arrays that are not uint8 videos N×T×H×W×C."""


def check_videos(videos: np.ndarray, name: str = "videos", min_frames: int = 1) -> np.ndarray:
    videos = np.asarray(videos)
    if videos.dtype != np.uint8 or videos.ndim != 5:
        raise VideoFormatError(
            f"{name}: expected uint8 videos N×T×H×W×C, got {videos.dtype} with shape {videos.shape}"
        )
    if videos.shape[1] < min_frames:
        raise VideoFormatError(
            f"{name}: need at least {min_frames} frames per video, got {videos.shape[1]}"
        )
    return videos


# -- where the sprite is ---------------------------------------------------------------------------
def sprite_centres(
    videos: np.ndarray, threshold: float = MASS_THRESHOLD, chunk: int = 64
) -> np.ndarray:
    """Centre of mass (y, x) of every frame, float N×T×2 in pixel coordinates.

    Mass is the grey intensity above ``threshold`` (channels averaged); a frame with no mass gets
    the canvas centre, so an empty clip reads as "not moving"."""
    videos = check_videos(videos)
    h, w = videos.shape[2:4]
    centres = np.empty((*videos.shape[:2], 2), np.float64)
    for start in range(
        0, len(videos), chunk
    ):  # float64 (exact half-pixel centres), a chunk at a time
        grey = videos[start : start + chunk].mean(axis=-1, dtype=np.float64) / 255.0
        mass = np.clip(grey - threshold, 0.0, None)
        total = mass.sum(axis=(2, 3))
        ys = (mass.sum(axis=3) * np.arange(h)).sum(axis=2)
        xs = (mass.sum(axis=2) * np.arange(w)).sum(axis=2)
        empty = total <= 1e-9
        safe = np.where(empty, 1.0, total)
        part = np.stack([ys / safe, xs / safe], axis=-1)
        part[empty] = ((h - 1) / 2, (w - 1) / 2)
        centres[start : start + chunk] = part
    return centres


def crop_frames(
    videos: np.ndarray, centres: np.ndarray | None = None, size: int = CROP_SIZE
) -> np.ndarray:
    """Grey ``size``×``size`` crops centred on each frame's sprite: uint8 N×T×size×size (outside =
    0).

    A 28-px sprite whose centre of mass is its box centre comes out exactly as Fashion-MNIST's 28→32
    zero-padding (2 px each side), the input the classifier was trained on.
    """
    videos = check_videos(videos)
    if videos.shape[-1] != 1:
        raise ImageFormatError(
            f"the Fashion-MNIST classifier takes grey videos (C=1), got C={videos.shape[-1]}"
        )
    if centres is None:
        centres = sprite_centres(videos)
    n, t, h, w = videos.shape[:4]
    frames = np.pad(videos[..., 0].reshape(n * t, h, w), ((0, 0), (size, size), (size, size)))
    # the window's centre is top + (size-1)/2; for the usual half-pixel centres of even sprites this
    # is an integer, so rounding is immune to float noise in the centre of mass
    top = np.rint(centres.reshape(n * t, 2) - (size - 1) / 2).astype(np.int64) + size
    top[:, 0] = np.clip(top[:, 0], 0, h + size)
    top[:, 1] = np.clip(top[:, 1], 0, w + size)
    offsets = np.arange(size)
    rows = (top[:, 0, None] + offsets)[:, :, None]
    cols = (top[:, 1, None] + offsets)[:, None, :]
    crops = frames[np.arange(n * t)[:, None, None], rows, cols]
    return crops.reshape(n, t, size, size)


def classify_frames(
    videos: np.ndarray,
    extractor,
    centres: np.ndarray | None = None,
    frame_stride: int = 1,
    progress: bool = False,
):
    """The classifier on every ``frame_stride``-th frame's sprite crop: (its ``Features`` over all
    those frames, their logits N×T'×K). A video's class is the argmax of its frames' mean logits."""
    if centres is None:
        centres = sprite_centres(check_videos(videos))
    crops = crop_frames(videos[:, ::frame_stride], centres[:, ::frame_stride])
    n, t = crops.shape[:2]
    result = extractor(crops.reshape(-1, CROP_SIZE, CROP_SIZE), progress=progress)
    return result, result.logits.reshape(n, t, -1)


# -- motion ----------------------------------------------------------------------------------------
def trajectory_descriptors(centres: np.ndarray) -> np.ndarray:
    """Per-video motion descriptor N×7 from centres N×T×2 (names in ``DESCRIPTOR_NAMES``), in
    pixels/frame."""
    centres = np.asarray(centres, dtype=np.float64)
    if centres.ndim != 3 or centres.shape[-1] != 2 or centres.shape[1] < 3:
        raise VideoFormatError(
            f"the motion check needs centres N×T×2 with T >= 3, got shape {centres.shape}"
        )
    velocity = np.diff(centres, axis=1)
    speed = np.linalg.norm(velocity, axis=-1)
    accel = np.linalg.norm(np.diff(velocity, axis=1), axis=-1)
    path = speed.sum(axis=1)
    straightness = np.linalg.norm(centres[:, -1] - centres[:, 0], axis=-1) / (path + 1.0)
    return np.stack(
        [
            speed.mean(1),
            speed.std(1),
            np.median(accel, axis=1),
            accel.mean(1),
            straightness,
            np.abs(velocity[..., 0]).mean(1),
            np.abs(velocity[..., 1]).mean(1),
        ],
        axis=1,
    )


def standardise(descriptors: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (descriptors - mean) / scale


def descriptor_scale(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of the real descriptors (a constant dimension keeps scale 1 rather than
    dividing by 0)."""
    mean, std = real.mean(axis=0), real.std(axis=0)
    return mean, np.where(std > 1e-6, std, 1.0)


def motion_summary(descriptors: np.ndarray) -> dict[str, float]:
    return {name: float(descriptors[:, i].mean()) for i, name in enumerate(DESCRIPTOR_NAMES[:4])}


# -- the suite -------------------------------------------------------------------------------------
@dataclass
class _RealFeatures:
    features: np.ndarray | None  # (N·T)×D crop features
    descriptors: np.ndarray  # N×7 motion descriptors


class VideoSuite:
    """Real clips + (optional) classifier + (optional) I3D; ``evaluate(fake, labels)`` → metrics
    dict.

    Real features and descriptors are computed once and reused for every loop count. ``extractor``
    is a :class:`~elt.eval.classifier.ClassifierFeatures` (or anything returning ``Features`` with
    logits for uint8 N×32×32 images); None skips the per-frame metrics (e.g. colour video). ``i3d``
    is an :class:`~elt.eval.i3d.I3DFeatures`; None skips FVD. ``frame_stride`` classifies every k-th
    frame only."""

    def __init__(
        self,
        real: np.ndarray,
        extractor=None,
        i3d=None,
        frame_stride: int = 1,
        progress: bool = False,
    ):
        self.real = check_videos(real, "real videos", min_frames=3)
        if len(self.real) < 4:
            raise VideoFormatError(
                f"need at least 4 real videos for the reference statistics, got {len(self.real)}"
            )
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
        self.extractor, self.i3d = extractor, i3d
        self.frame_stride, self.progress = frame_stride, progress
        if extractor is not None and self.real.shape[-1] != 1:
            raise ImageFormatError(
                "per-frame metrics use the grey Fashion-MNIST classifier; these videos have "
                f"C={self.real.shape[-1]} (evaluate without the classifier)"
            )
        self._real = self._describe(self.real)
        self.motion_mean, self.motion_scale = descriptor_scale(self._real.descriptors)
        self._real_i3d = i3d(self.real, progress=progress).features if i3d is not None else None

    def _describe(self, videos: np.ndarray) -> _RealFeatures:
        centres = sprite_centres(videos)
        features = None
        if self.extractor is not None:
            features = classify_frames(
                videos, self.extractor, centres, self.frame_stride, self.progress
            )[0].features
        return _RealFeatures(features, trajectory_descriptors(centres))

    def check_shape(self, fake: np.ndarray) -> np.ndarray:
        fake = check_videos(fake, "generated videos", min_frames=3)
        if fake.shape[1:] != self.real.shape[1:]:
            raise VideoFormatError(
                f"generated videos are {fake.shape[1:]} (T×H×W×C) but the real ones "
                f"{self.real.shape[1:]}"
            )
        if len(fake) < 2:
            raise VideoFormatError("need at least 2 generated videos")
        return fake

    def evaluate(
        self, fake: np.ndarray, labels: np.ndarray | None = None
    ) -> dict[str, float | None]:
        fake = self.check_shape(fake)
        centres = sprite_centres(fake)
        descriptors = trajectory_descriptors(centres)
        out: dict[str, float | None] = {"n": len(fake)}
        out["motion_fd"] = frechet_distance_features(
            standardise(descriptors, self.motion_mean, self.motion_scale),
            standardise(self._real.descriptors, self.motion_mean, self.motion_scale),
        )
        out.update(motion_summary(descriptors))
        if self.extractor is not None:
            out.update(self._frame_metrics(fake, centres, labels))
        if self.i3d is not None:
            out["fvd"] = frechet_distance_features(
                self.i3d(fake, progress=self.progress).features, self._real_i3d
            )
        return out

    def _frame_metrics(
        self, fake: np.ndarray, centres: np.ndarray, labels: np.ndarray | None
    ) -> dict:
        result, logits = classify_frames(
            fake, self.extractor, centres, self.frame_stride, self.progress
        )
        n = len(fake)
        frame_class = logits.argmax(-1)
        video_class = logits.mean(axis=1).argmax(-1)
        out = {
            "fd_cls": frechet_distance_features(result.features, self._real.features),
            "consistency": float((frame_class == video_class[:, None]).mean()),
            "video_acc": None,
            "frame_acc": None,
        }
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            if len(labels) != n:
                raise VideoFormatError(f"{len(labels)} labels for {n} videos")
            out["video_acc"] = float((video_class == labels).mean())
            out["frame_acc"] = float((frame_class == labels[:, None]).mean())
        return out

    def floor(
        self, labels: np.ndarray | None = None, seed: int = 0, controls: bool = False
    ) -> dict:
        """Real vs real: a random half of the real clips evaluated against a suite built on the
        other half (FD values of N/2 vs N/2 sets: slightly pessimistic against the full reference).
        With ``controls``, the same half made static and frame-shuffled is scored too
        (``result["controls"]``): what no motion and wrong motion score, with genuine frames (so
        per-frame metrics stay near the floor)."""
        order = np.random.default_rng(seed).permutation(len(self.real))
        a, b = order[: len(order) // 2], order[len(order) // 2 :]
        half = VideoSuite(self.real[b], self.extractor, self.i3d, self.frame_stride, self.progress)
        half.motion_mean, half.motion_scale = (
            self.motion_mean,
            self.motion_scale,
        )  # the same units as evaluate
        held_out, held_labels = self.real[a], None if labels is None else np.asarray(labels)[a]
        result = {
            **half.evaluate(held_out, held_labels),
            "description": f"{len(a)} real clips vs {len(b)} other real clips",
        }
        if controls:
            result["controls"] = {
                "static": half.evaluate(static_videos(held_out), held_labels),
                "shuffled": half.evaluate(shuffled_videos(held_out, seed), held_labels),
            }
        return result


# -- static / shuffled corruptions (references for the motion check, used by the tests and `--contro
def static_videos(videos: np.ndarray, frame: int = 0) -> np.ndarray:
    """Every frame replaced by frame ``frame``: right content, no motion."""
    videos = check_videos(videos)
    return np.repeat(videos[:, frame : frame + 1], videos.shape[1], axis=1)


def shuffled_videos(videos: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each video's frames in a random order (a derangement of the time axis is not required; the
    order is redrawn until it differs from the original)."""
    videos = check_videos(videos)
    rng = np.random.default_rng(seed)
    t = videos.shape[1]
    out = np.empty_like(videos)
    for i in range(len(videos)):
        order = rng.permutation(t)
        while t > 1 and np.array_equal(order, np.arange(t)):
            order = rng.permutation(t)
        out[i] = videos[i, order]
    return out


# -- sample folders, real references, outputs ------------------------------------------------------
def load_videos(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``arr_0`` uint8 N×T×H×W×C (and ``arr_1`` labels if present) from an ``.npz``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    data = load_npz(path, "videos file", keys=("arr_0", "arr_1"))
    if "arr_0" not in data:
        raise VideoFormatError(f"{path} has no arr_0 (uint8 videos N×T×H×W×C)")
    videos = check_videos(data["arr_0"], str(path))
    labels = data.get("arr_1")
    return videos, labels


def sample_files(folder: str | Path, loops: list[int] | None = None) -> dict[int, Path]:
    """``{L: samples_L{L}.npz}`` of an ``elt sample`` folder (all of them, or the requested loop
    counts)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"samples folder {folder} not found")
    found = {
        int(p.stem.split("_L")[-1]): p
        for p in folder.glob("samples_L*.npz")
        if p.stem.split("_L")[-1].isdigit()
    }
    if loops:
        missing = [L for L in loops if L not in found]
        if missing:
            raise FileNotFoundError(
                f"{folder} has no samples_L{missing[0]}.npz (has loop counts "
                f"{sorted(found) or 'none'})"
            )
        found = {L: found[L] for L in loops}
    if not found:
        raise FileNotFoundError(f"no samples_L<L>.npz in {folder}; write them with 'elt sample'")
    return dict(sorted(found.items()))


def moving_fmnist_reference(
    num: int,
    frames: int,
    image_size: int,
    motion: str = "bounce",
    sprite_size: int = 28,
    seed: int = 0,
    root: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``num`` real clips of the moving Fashion-MNIST test split as uint8 N×T×H×W×1, with their
    labels."""
    from elt.data.moving_fmnist import MovingFashionMNIST

    dataset = MovingFashionMNIST(
        root,
        "test",
        frames=frames,
        image_size=image_size,
        sprite_size=sprite_size,
        motion=motion,
        seed=seed,
        limit=num,
    )
    videos, labels = [], []
    for i in range(len(dataset)):
        clip, label = dataset[i]
        videos.append(
            ((np.asarray(clip, dtype=np.float32) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        )
        labels.append(int(label))
    return np.stack(videos).transpose(0, 2, 3, 4, 1), np.asarray(labels, np.int64)


def evaluate_folder(
    suite: VideoSuite,
    folder: str | Path,
    loops: list[int] | None = None,
    real_labels: np.ndarray | None = None,
    controls: bool = False,
    progress: bool = False,
) -> dict:
    """Metrics of every ``samples_L{L}.npz`` in ``folder``: rows per loop count, the real floor, and
    with ``controls`` static and shuffled versions of held-out real clips (what "no motion" and
    "wrong motion" score; see :meth:`VideoSuite.floor`)."""
    from tqdm.auto import tqdm

    rows = []
    for loops_k, path in tqdm(
        sample_files(folder, loops).items(), desc="loop counts", disable=not progress
    ):
        videos, labels = load_videos(path)
        rows.append({"loops": loops_k, "file": path.name, **suite.evaluate(videos, labels)})
    floor = suite.floor(real_labels, controls=controls)
    result = {"samples": str(folder), "rows": rows, "floor": floor}
    if controls:
        result["controls"] = floor.pop("controls")
    return result


PLOT_METRICS = [
    ("fd_cls", "per-frame FD_cls ↓"),
    ("video_acc", "video class accuracy ↑"),
    ("consistency", "class consistency ↑"),
    ("motion_fd", "motion FD ↓"),
    ("fvd", "FVD ↓"),
]


def plot_video_eval(result: dict, path: str | Path) -> Path:
    """One panel per metric against the loop count; the real floor dashed, the motion controls in
    red."""
    from elt.eval.plots import plt, save_figure  # pyplot on the Agg backend

    rows = result["rows"]
    metrics = [(k, label) for k, label in PLOT_METRICS if any(r.get(k) is not None for r in rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    loops = [r["loops"] for r in rows]
    for ax, (key, label) in zip(axes[0], metrics, strict=True):
        ax.plot(loops, [r.get(key) for r in rows], "o-", label="generated")
        floor = (result.get("floor") or {}).get(key)
        if floor is not None:
            ax.axhline(floor, ls="--", color="grey", label="real")
        for name, style in (("static", ":"), ("shuffled", "-.")):
            value = (result.get("controls") or {}).get(name, {}).get(key)
            if value is not None and key == "motion_fd":
                ax.axhline(value, ls=style, color="tab:red", label=f"real, {name}")
        if key == "motion_fd":  # shuffled clips score orders of magnitude above the rest
            ax.set_yscale("symlog", linthresh=1.0)
            ax.legend(fontsize=7)
        ax.set_xlabel("loops")
        ax.set_title(label)
        ax.set_xticks(loops)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, path)


def video_output_paths(out_dir: str | Path) -> dict[str, Path]:
    """The files :func:`write_video_eval` writes into ``out_dir``."""
    return {kind: Path(out_dir) / f"video_eval.{kind}" for kind in ("json", "png")}


def write_video_eval(result: dict, out_dir: str | Path) -> dict[str, Path]:
    paths = video_output_paths(out_dir)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    write_json(paths["json"], result, ensure_ascii=False)
    plot_video_eval(result, paths["png"])
    return paths


def real_data_geometry(
    samples: str | Path, motion: str | None = None, sprite_size: int | None = None
) -> tuple[str, int]:
    """(motion, sprite size) of real moving Fashion-MNIST clips to compare ``samples`` with: the
    values given, else what ``elt sample`` recorded of the samples' training data in
    ``samples.json``, else bounce / 28 px."""
    recorded: dict = {}
    meta = Path(samples) / "samples.json"
    if meta.is_file():
        data = json.loads(meta.read_text()).get("data") or {}
        if data.get("name") == "moving_fmnist":
            recorded = data
    motion = motion or recorded.get("motion") or "bounce"
    sprite_size = sprite_size or recorded.get("sprite_size") or 28
    return motion, int(sprite_size)


def evaluate_videos(
    samples: str | Path,
    real: str | Path | None = None,
    real_data: str | None = None,
    out: str | Path | None = None,
    loops: list[int] | None = None,
    real_num: int = 1000,
    motion: str | None = None,
    sprite_size: int | None = None,
    data_root: str | None = None,
    classifier: str | Path | None = None,
    use_classifier: bool = True,
    i3d: str | Path | None = None,
    frame_stride: int = 1,
    controls: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """``elt eval video`` as a call: the ``samples_L<L>.npz`` videos in ``samples`` against real
    clips, either an ``.npz`` (``real``) or made here (``real_data="moving_fmnist"``, at the
    samples' shape and recorded geometry); FVD when ``i3d`` (or ``$ELT_I3D_WEIGHTS``) names I3D
    weights. Returns the record (rows per loop count, real floor, provenance), written to ``out``
    as ``video_eval.json`` and ``video_eval.png`` when given."""
    import os

    from elt.eval.inputs import load_classifier, user_errors

    if out is not None:
        check_output_dir(out, "--out")
    if (real is None) == (real_data is None):
        raise UserError(
            "give exactly one real reference: --real FILE.npz or --real-data moving_fmnist"
        )
    with user_errors():  # a missing file: one line
        files = sample_files(samples, loops)
        shape = load_videos(next(iter(files.values())))[0].shape
        if real:
            real_videos, real_labels = load_videos(real)
        else:
            try:
                motion, sprite_size = real_data_geometry(samples, motion, sprite_size)
                real_videos, real_labels = moving_fmnist_reference(
                    real_num, shape[1], shape[2], motion, sprite_size, root=data_root
                )
            except ImportError as exc:
                raise UserError(
                    f"--real-data moving_fmnist needs elt.data.moving_fmnist ({exc})"
                ) from exc
        extractor = load_classifier(classifier, device=device) if use_classifier else None
        features = None
        if i3d or os.environ.get("ELT_I3D_WEIGHTS"):
            from elt.eval.i3d import I3DFeatures

            features = I3DFeatures(i3d, device=device)
        suite = VideoSuite(
            real_videos, extractor, features, frame_stride=frame_stride, progress=progress
        )
        result = evaluate_folder(
            suite, samples, list(files), real_labels, controls=controls, progress=progress
        )
    result["real"] = (
        str(real)
        if real
        else (
            f"moving_fmnist test split, {len(real_videos)} clips ({motion}, {sprite_size}-px "
            "garments)"
        )
    )
    result["provenance"] = {
        "classifier": extractor.provenance() if extractor else None,
        "i3d": features.provenance() if features else None,
        "frame_stride": frame_stride,
        "crop": CROP_SIZE,
        "mass_threshold": MASS_THRESHOLD,
    }
    if out is not None:
        write_video_eval(result, out)
    return result


TABLE_KEYS = ["loops", "fd_cls", "video_acc", "consistency", "motion_fd", "fvd", "mean_speed"]


def format_table(result: dict) -> str:
    """The rows, the real floor and the controls of :func:`evaluate_videos` as a text table."""
    rows = [
        *result["rows"],
        {"loops": "real", **result["floor"]},
        *({"loops": name, **vals} for name, vals in result.get("controls", {}).items()),
    ]
    keys = [k for k in TABLE_KEYS if any(r.get(k) is not None for r in rows)]
    lines = ["  ".join(f"{k:>11}" for k in keys)]
    for row in rows:
        lines.append(
            "  ".join(
                f"{row.get(k):>11.4g}"
                if isinstance(row.get(k), float)
                else f"{row.get(k, '-')!s:>11}"
                for k in keys
            )
        )
    return "\n".join(lines)
