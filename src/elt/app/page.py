"""The Gradio page of ``elt app``. Imported only by ``elt app`` (Gradio is the optional ``app``
extra).

Offline by construction: the page uses system fonts (no web-font theme), analytics are off, and
Gradio serves its own bundled scripts and styles from the local server (checked with Gradio 6.31:
the browser test fails if the page requests anything from outside 127.0.0.1)."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import traceback
import uuid
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = (
    "False"  # before gradio is imported: no telemetry, no version check
)

import gradio as gr  # noqa: E402

from elt.app.models import (  # noqa: E402
    LOOP_MODES,
    MAX_COMPARE_SAMPLES,
    Model,
    Request,
    check_request,
    encode,
    generate,
    parse_int,
    point_label,
    strip,
    write_media,
)
from elt.errors import UserError  # noqa: E402

SYSTEM_FONTS = [
    gr.themes.Font("system-ui"),
    gr.themes.Font("-apple-system"),
    gr.themes.Font("Segoe UI"),
    gr.themes.Font("Helvetica"),
    gr.themes.Font("Arial"),
    "sans-serif",
]
MONO_FONTS = [
    gr.themes.Font("ui-monospace"),
    gr.themes.Font("Menlo"),
    gr.themes.Font("Consolas"),
    "monospace",
]

# Gradio fills these in per request: a progress bar fed by the samplers' tqdm bars, and one fed by
# hand
TRACK_TQDM = gr.Progress(track_tqdm=True)
PROGRESS = gr.Progress()

CSS = """
#elt-image img, #elt-compare img { image-rendering: pixelated; }
#elt-image img {
  height: 256px !important; width: auto !important; max-width: 100%; object-fit: contain;
}
#elt-compare img { height: 112px; width: auto; display: block; }
#elt-compare figure { margin: 0 0 12px 0; }
#elt-compare figcaption { font-size: 0.9em; }
#elt-status { min-height: 1.5em; }
#elt-status .elt-error { color: #b00020; font-weight: 600; }
"""

INTRO = """# ELT — one checkpoint, any compute
An Elastic Looped Transformer applies its few unique layers **L times**. Trained with intra-loop
self distillation, the same checkpoint samples at every loop count: move the **loops** slider and
watch the image and its cost change, or give each sampling step its own loop count (*schedule*,
e.g. `4:1` or `3x6+2x6`) or let every sample stop looping once its prediction settles (*adaptive
exit*). *Compare loop counts* shows one row per L for the same seed, and one for the schedule or
adaptive exit when that is chosen."""


def theme() -> gr.themes.Base:
    return gr.themes.Default(primary_hue="indigo", font=SYSTEM_FONTS, font_mono=MONO_FONTS)


def error_html(message: str) -> str:
    import html

    return f'<p class="elt-error">⚠ {html.escape(message)}</p>'


def build(models: dict[str, Model], media_dir: str | Path) -> gr.Blocks:
    """The page for already loaded ``models`` (name → :class:`Model`); generated files go to
    ``media_dir``."""
    media = Path(media_dir)
    first = next(iter(models.values()))

    def controls_for(name):
        model = models[name]
        return (
            model.describe(),
            gr.update(choices=model.class_names, value=model.class_names[0]),
            gr.update(
                maximum=model.max_loops,
                value=min(model.trained_loops, model.max_loops),
                label=f"loops L (trained at L_max = {model.trained_loops})",
            ),
            gr.update(placeholder=f"model default: {model.default_steps}"),
            gr.update(placeholder=f"model default: {model.default_guidance}"),
            gr.update(value=f"{model.default_exit:g}"),
            gr.update(maximum=model.max_loops, value=2),
            gr.update(maximum=model.max_loops, value=min(model.trained_loops, model.max_loops)),
        )

    def show_mode(mode):
        return (
            gr.update(visible=mode == "fixed L"),
            gr.update(visible=mode == "schedule"),
            gr.update(visible=mode == "adaptive exit"),
        )

    def run_one(request: Request):
        result = generate(request, progress=True)  # tqdm steps → the page's progress bar
        return result, str(write_media(result.samples[0], media, uuid.uuid4().hex))

    def on_generate(
        name, class_choice, seed, loops, steps, guidance, *loop_controls, progress=TRACK_TQDM
    ):
        try:
            request = check_request(
                models, name, class_choice, seed, loops, steps, guidance, *loop_controls
            )
            progress(0, desc=f"sampling at loops {point_label(request.loops)}")
            result, path = run_one(request)
        except (
            UserError
        ) as exc:  # a typed value, or a schedule the sampler refuses: its one-line message
            return None, "", error_html(str(exc))
        except Exception as exc:  # the page keeps serving; the terminal gets the traceback
            traceback.print_exc()
            return None, "", error_html(f"generation failed: {type(exc).__name__}: {exc}")
        kind = "video" if result.is_video else "image"
        return (
            path,
            f"{result.caption()}  \n{kind} {_shape(result.samples[0])}, seed {request.seed}",
            "",
        )

    def on_compare(
        name, class_choice, seed, loops, steps, guidance, *loop_controls, progress=PROGRESS
    ):
        *loop_controls, count = loop_controls
        try:
            request = check_request(
                models, name, class_choice, seed, loops, steps, guidance, *loop_controls
            )
            count = parse_int(count, "samples per row", 1, MAX_COMPARE_SAMPLES, default=1)
            rows = []
            # one row per loop count, then the chosen schedule or adaptive exit (if that is the
            # mode)
            points = list(range(1, request.model.max_loops + 1))
            if not isinstance(request.loops, int):
                points.append(request.loops)
            for i, k in enumerate(points):
                progress((i, len(points)), desc=f"L = {point_label(k)}", unit="loop counts")
                result = generate(request, count=count, loops=k)
                trained = " (trained L_max)" if k == request.model.trained_loops else ""
                rows.append((strip(result.samples), result.caption() + trained))
        except UserError as exc:
            return "", error_html(str(exc))
        except Exception as exc:
            traceback.print_exc()
            return "", error_html(f"generation failed: {type(exc).__name__}: {exc}")
        return rows_html(
            rows, f"{request.model.class_names[request.label]}, seed {request.seed}"
        ), ""

    # Gradio copies each result into its cache; files older than an hour are deleted every half hour
    with gr.Blocks(
        title="elt app — one checkpoint, any compute",
        analytics_enabled=False,
        delete_cache=(1800, 3600),
    ) as page:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                model_box = gr.Dropdown(
                    list(models), value=first.name, label="model", elem_id="elt-model"
                )
                info = gr.Markdown(first.describe(), elem_id="elt-model-info")
                class_box = gr.Dropdown(
                    first.class_names,
                    value=first.class_names[0],
                    label="class",
                    elem_id="elt-class",
                )
                seed_box = gr.Textbox(
                    "0", label="seed (a whole number)", elem_id="elt-seed", max_lines=1
                )
                loops_box = gr.Slider(
                    1,
                    first.max_loops,
                    value=first.trained_loops,
                    step=1,
                    label=f"loops L (trained at L_max = {first.trained_loops})",
                    elem_id="elt-loops",
                )
                steps_box = gr.Textbox(
                    "",
                    label="sampling steps",
                    elem_id="elt-steps",
                    max_lines=1,
                    placeholder=f"model default: {first.default_steps}",
                )
                guidance_box = gr.Textbox(
                    "",
                    label="guidance",
                    elem_id="elt-guidance",
                    max_lines=1,
                    placeholder=f"model default: {first.default_guidance}",
                )
                # any-time inference: the loops of each sampling step, fixed, scheduled or adaptive
                mode_box = gr.Radio(
                    list(LOOP_MODES),
                    value=LOOP_MODES[0],
                    label="loops per sampling step",
                    elem_id="elt-loops-mode",
                )
                with gr.Group(visible=False) as schedule_group:
                    schedule_box = gr.Textbox(
                        "",
                        label="loop schedule",
                        elem_id="elt-schedule",
                        max_lines=1,
                        placeholder="4:1 (ramp) · 3x6+2x6 (segments) · exit:0.1:2-4",
                        info="A:B ramps from A loops at the first step to B at the last; "
                        "AxN+BxM runs A loops for N steps, then B for M",
                    )
                with gr.Group(visible=False) as exit_group:
                    threshold_box = gr.Textbox(
                        f"{first.default_exit:g}",
                        label="exit threshold T",
                        elem_id="elt-exit-threshold",
                        max_lines=1,
                        info="a sample stops looping at a step once its prediction changed "
                        "by less than T between two loops",
                    )
                    min_box = gr.Slider(
                        2,
                        first.max_loops,
                        value=2,
                        step=1,
                        label="min loops",
                        elem_id="elt-exit-min",
                    )
                    max_box = gr.Slider(
                        2,
                        first.max_loops,
                        value=min(first.trained_loops, first.max_loops),
                        step=1,
                        label="max loops",
                        elem_id="elt-exit-max",
                    )
            with gr.Column(scale=2):
                status = gr.HTML("", elem_id="elt-status")
                with gr.Tab("Generate"):
                    go = gr.Button("Generate", variant="primary", elem_id="elt-generate")
                    image = gr.Image(
                        label="sample",
                        type="filepath",
                        format="png",
                        height=320,
                        interactive=False,
                        elem_id="elt-image",
                    )
                    cost = gr.Markdown("", elem_id="elt-cost")
                with gr.Tab("Compare loop counts"):
                    count_box = gr.Slider(
                        1,
                        MAX_COMPARE_SAMPLES,
                        value=4,
                        step=1,
                        label="samples per row",
                        elem_id="elt-count",
                    )
                    compare = gr.Button(
                        "Compare loop counts", variant="primary", elem_id="elt-compare-go"
                    )
                    table = gr.HTML("", elem_id="elt-compare")
        inputs = [
            model_box,
            class_box,
            seed_box,
            loops_box,
            steps_box,
            guidance_box,
            mode_box,
            schedule_box,
            threshold_box,
            min_box,
            max_box,
        ]
        model_box.change(
            controls_for,
            model_box,
            [info, class_box, loops_box, steps_box, guidance_box, threshold_box, min_box, max_box],
            queue=False,
        )
        mode_box.change(show_mode, mode_box, [loops_box, schedule_group, exit_group], queue=False)
        go.click(on_generate, inputs, [image, cost, status], concurrency_id="generate")
        compare.click(on_compare, [*inputs, count_box], [table, status], concurrency_id="generate")
    return page


def rows_html(rows, title: str) -> str:
    """One row per loop count: the samples side by side (inline PNG, or GIF for video) with the cost
    under them."""
    import base64
    import html

    parts = [
        f'<p class="elt-rows-title">{html.escape(title)}, the same seed in every row</p>',
        '<div class="elt-rows">',
    ]
    for array, caption in rows:
        data, suffix = encode(array)
        mime = "image/gif" if suffix == ".gif" else "image/png"
        parts.append(
            f'<figure class="elt-row"><img alt="{html.escape(caption)}" '
            f'src="data:{mime};base64,{base64.b64encode(data).decode()}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append("</div>")
    return "".join(parts)


def _shape(sample) -> str:
    dims = sample.shape
    if len(dims) == 4:
        return f"{dims[0]} frames × {dims[1]}×{dims[2]}"
    return f"{dims[0]}×{dims[1]}"


def warm_up(models: dict[str, Model]) -> None:
    """Pay the one-off costs before the first click: the imports Gradio makes on its first event
    (matplotlib) and each model's first small generation."""
    try:
        import matplotlib.pyplot  # noqa: F401
    except ImportError:
        pass
    for name in models:
        try:
            generate(check_request(models, name, None, 0, 1, None, None))
        except Exception:  # a warm-up never stops the server; a real request reports the problem
            traceback.print_exc()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def serve(models: dict[str, Model], host: str, port: int | None, concurrency: int = 2) -> None:
    """Build the page, serve it until interrupted; prints the local URL."""
    signal.signal(signal.SIGTERM, _interrupt)  # a terminated server cleans up as on Ctrl+C
    with tempfile.TemporaryDirectory(prefix="elt-app-") as media:
        page = build(models, media)
        page.queue(default_concurrency_limit=concurrency)
        _, url, _ = page.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=True,
            quiet=True,
            show_error=True,
            ssr_mode=False,
            mcp_server=False,
            pwa=False,
            theme=theme(),
            css=CSS,
        )
        print(f"elt app: serving {len(models)} model(s) at {url}  (Ctrl+C stops)", flush=True)
        threading.Thread(target=warm_up, args=(models,), daemon=True).start()
        try:
            page.block_thread()
        finally:
            page.close()
