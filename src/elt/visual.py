"""Pictures for people: image grids with one labelled row per loop count, and their video versions.

Video rows (each n×T×H×W×C) become an animated GIF (and an MP4 when PyAV is installed) whose frame t
is the image grid of every sample's frame t, plus a still PNG with the first, middle and last frame
of each row stacked as sub-rows, so a grid can be judged where animations don't play (papers,
terminals, diffs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from elt.fileio import write_via


def grid_image(
    rows: Sequence[np.ndarray],
    row_labels: Sequence[str] | None = None,
    scale: int = 0,
    pad: int = 2,
    title: str | None = None,
    col_labels: Sequence[str] | None = None,
) -> Image.Image:
    """Tile uint8 batches (each n×H×W×C) into one picture, one batch per row, labels on the left
    and ``col_labels`` (e.g. class names) above the columns, each cut to its column's width.

    ``scale`` upsamples small images (nearest) so 28-px samples stay legible; 0 picks it
    automatically."""
    if not rows:
        raise ValueError("grid_image needs at least one row")
    h, w, c = rows[0].shape[1:4]
    if scale <= 0:
        scale = max(1, 64 // max(h, w))
    cols = max(len(r) for r in rows)
    font = ImageFont.load_default()
    label_w = 0
    if row_labels:
        label_w = max(
            int(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(t, font=font)) for t in row_labels
        )
        label_w += 8
    cell_h, cell_w = h * scale + pad, w * scale + pad
    col_h = 12 if col_labels else 0
    title_h = (14 if title else 0) + col_h
    canvas = Image.new(
        "RGB", (label_w + cols * cell_w + pad, title_h + len(rows) * cell_h + pad), "white"
    )
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 1), title, fill="black", font=font)
    for j, text in enumerate(list(col_labels or [])[:cols]):
        text = fit_text(draw, str(text), cell_w - pad, font)
        draw.text((label_w + pad + j * cell_w, title_h - col_h), text, fill="black", font=font)
    for i, row in enumerate(rows):
        y = title_h + pad + i * cell_h
        if row_labels:
            draw.text((2, y + cell_h // 2 - 6), row_labels[i], fill="black", font=font)
        for j, img in enumerate(row):
            tile = Image.fromarray(
                img[..., 0] if c == 1 else img, mode="L" if c == 1 else "RGB"
            ).convert("RGB")
            if scale > 1:
                tile = tile.resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_w + pad + j * cell_w, y))
    return canvas


def fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    """``text``, cut (ending in ``.``) to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + ".", font=font) > width:
        text = text[:-1]
    return text + "." if text else ""


def is_video_rows(rows: Sequence[np.ndarray]) -> bool:
    """True for rows of clips (n×T×H×W×C), False for rows of images (n×H×W×C)."""
    if not rows:
        raise ValueError("a grid needs at least one row")
    dims = {r.ndim for r in rows}
    if dims - {4, 5} or len(dims) > 1:
        raise ValueError(
            "grid rows must all be n×H×W×C images or all n×T×H×W×C videos, got ndims "
            f"{sorted(dims)}"
        )
    return dims == {5}


def key_frames(frames: int) -> list[int]:
    """First, middle and last frame indices (fewer, without repeats, for very short clips)."""
    return sorted({0, frames // 2, frames - 1})


def video_still(
    rows: Sequence[np.ndarray],
    row_labels: Sequence[str] | None = None,
    scale: int = 0,
    title: str | None = None,
) -> Image.Image:
    """One picture of video rows: per row, sub-rows of its first / middle / last frames, labelled
    with t."""
    frames = rows[0].shape[1]
    picks = key_frames(frames)
    still_rows, labels = [], []
    for i, row in enumerate(rows):
        for t in picks:
            still_rows.append(row[:, t])
            labels.append(f"{row_labels[i] if row_labels else ''} t={t}".strip())
    return grid_image(still_rows, labels, scale=scale, title=title)


def video_grid_frames(
    rows: Sequence[np.ndarray],
    row_labels: Sequence[str] | None = None,
    scale: int = 0,
    title: str | None = None,
) -> list[Image.Image]:
    """Frame t of the animation = the image grid of every sample's frame t (rows keep their
    labels)."""
    frames = rows[0].shape[1]
    if any(r.shape[1] != frames for r in rows):
        raise ValueError("all video rows must have the same number of frames")
    return [
        grid_image([r[:, t] for r in rows], row_labels, scale=scale, title=title)
        for t in range(frames)
    ]


def save_gif(path: str | Path, frames: Sequence[Image.Image], fps: float = 8.0) -> Path:
    """Looping animated GIF."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first, *rest = [f.convert("RGB") for f in frames]
    return write_via(
        path,
        lambda tmp: first.save(
            tmp,
            save_all=True,
            append_images=rest,
            duration=int(round(1000 / fps)),
            loop=0,
            optimize=False,
        ),
    )


def mp4_available() -> bool:
    """MP4 needs PyAV (the optional ``video`` extra)."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def save_mp4(path: str | Path, frames: Sequence[Image.Image], fps: int = 8) -> Path:
    """H.264 (or MPEG-4 part 2 where libx264 is missing) MP4 via PyAV; frames are padded to even
    sizes because 4:2:0 chroma subsampling needs them."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = frames[0].size
    even_w, even_h = width + width % 2, height + height % 2
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    return write_via(path, lambda tmp: _encode_mp4(tmp, frames, codec, even_w, even_h, fps))


def _encode_mp4(
    path: Path, frames: Sequence[Image.Image], codec: str, even_w: int, even_h: int, fps: int
) -> None:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = even_w, even_h, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18"}
        for frame in frames:
            canvas = Image.new("RGB", (even_w, even_h), "white")
            canvas.paste(frame.convert("RGB"), (0, 0))
            for packet in stream.encode(av.VideoFrame.from_image(canvas)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def save_video_grid(
    path: str | Path,
    rows: Sequence[np.ndarray],
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    scale: int = 0,
    fps: float = 8.0,
    mp4: bool = True,
) -> list[Path]:
    """Write ``path`` (the still PNG), ``path.gif`` and, with PyAV, ``path.mp4`` (same stem);
    returns them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    still = video_still(rows, row_labels, scale=scale, title=title)
    write_via(path, still.save)
    frames = video_grid_frames(rows, row_labels, scale=scale, title=title)
    written = [path, save_gif(path.with_suffix(".gif"), frames, fps=fps)]
    if mp4 and mp4_available():
        written.append(save_mp4(path.with_suffix(".mp4"), frames, fps=int(round(fps))))
    return written


def save_grid(
    path: str | Path,
    rows: Sequence[np.ndarray],
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    scale: int = 0,
    col_labels: Sequence[str] | None = None,
) -> Path:
    """Save an image grid as ``path``; for video rows also the animation next to it
    (``save_video_grid``), so the trainer's periodic grids work for both without knowing which it
    has."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_video_rows(rows):
        return save_video_grid(path, rows, row_labels, title=title, scale=scale)[0]
    return write_via(
        path, grid_image(rows, row_labels, scale=scale, title=title, col_labels=col_labels).save
    )
