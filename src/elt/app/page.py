"""The Gradio page of ``elt app``. Imported only by ``elt app`` (Gradio is the optional ``app`` extra).

Offline by construction: the page uses system fonts (no web-font theme), analytics are off, and Gradio
serves its own bundled scripts and styles from the local server (checked with Gradio 6.31: the browser test
fails if the page requests anything from outside 127.0.0.1).
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import traceback
import uuid
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no telemetry, no version check

import gradio as gr  # noqa: E402

from elt.app.models import (  # noqa: E402
    MAX_COMPARE_SAMPLES,
    InputError,
    Model,
    Request,
    check_request,
    encode,
    generate,
    parse_int,
    strip,
    write_media,
)

SYSTEM_FONTS = [gr.themes.Font("system-ui"), gr.themes.Font("-apple-system"), gr.themes.Font("Segoe UI"),
                gr.themes.Font("Helvetica"), gr.themes.Font("Arial"), "sans-serif"]
MONO_FONTS = [gr.themes.Font("ui-monospace"), gr.themes.Font("Menlo"), gr.themes.Font("Consolas"), "monospace"]

# Gradio fills these in per request: a progress bar fed by the samplers' tqdm bars, and one fed by hand
TRACK_TQDM = gr.Progress(track_tqdm=True)
PROGRESS = gr.Progress()

CSS = """
#elt-image img, #elt-compare img { image-rendering: pixelated; }
#elt-image img { height: 256px !important; width: auto !important; max-width: 100%; object-fit: contain; }
#elt-compare img { height: 112px; width: auto; display: block; }
#elt-compare figure { margin: 0 0 12px 0; }
#elt-compare figcaption { font-size: 0.9em; }
#elt-status { min-height: 1.5em; }
#elt-status .elt-error { color: #b00020; font-weight: 600; }
"""

INTRO = """# ELT — one checkpoint, any compute
An Elastic Looped Transformer applies its few unique layers **L times**. Trained with intra-loop self
distillation, the same checkpoint samples at every loop count: move the **loops** slider and watch the image
and its cost change. *Compare loop counts* shows one row per L for the same seed."""


def theme() -> gr.themes.Base:
    return gr.themes.Default(primary_hue="indigo", font=SYSTEM_FONTS, font_mono=MONO_FONTS)


def error_html(message: str) -> str:
    import html

    return f'<p class="elt-error">⚠ {html.escape(message)}</p>'


def build(models: dict[str, Model], media_dir: str | Path) -> gr.Blocks:
    """The page for already loaded ``models`` (name → :class:`Model`); generated files go to ``media_dir``."""
    media = Path(media_dir)
    first = next(iter(models.values()))

    def controls_for(name):
        model = models[name]
        return (model.describe(),
                gr.update(choices=model.class_names, value=model.class_names[0]),
                gr.update(maximum=model.max_loops, value=min(model.trained_loops, model.max_loops),
                          label=f"loops L (trained at L_max = {model.trained_loops})"),
                gr.update(placeholder=f"model default: {model.default_steps}"),
                gr.update(placeholder=f"model default: {model.default_guidance}"))

    def run_one(request: Request):
        result = generate(request, progress=True)  # tqdm steps → the page's progress bar
        return result, str(write_media(result.samples[0], media, uuid.uuid4().hex))

    def on_generate(name, class_choice, seed, loops, steps, guidance, progress=TRACK_TQDM):
        try:
            request = check_request(models, name, class_choice, seed, loops, steps, guidance)
            progress(0, desc=f"sampling at L = {request.loops}")
            result, path = run_one(request)
        except InputError as exc:
            return None, "", error_html(str(exc))
        except Exception as exc:  # the page keeps serving; the terminal gets the traceback
            traceback.print_exc()
            return None, "", error_html(f"generation failed: {type(exc).__name__}: {exc}")
        kind = "video" if result.is_video else "image"
        return path, f"{result.caption()}  \n{kind} {_shape(result.samples[0])}, seed {request.seed}", ""

    def on_compare(name, class_choice, seed, loops, steps, guidance, count,
                   progress=PROGRESS):
        try:
            request = check_request(models, name, class_choice, seed, loops, steps, guidance)
            count = parse_int(count, "samples per row", 1, MAX_COMPARE_SAMPLES, default=1)
            rows = []
            loop_counts = list(range(1, request.model.max_loops + 1))
            for i, k in enumerate(loop_counts):
                progress((i, len(loop_counts)), desc=f"L = {k}", unit="loop counts")
                result = generate(request, count=count, loops=k)
                trained = " (trained L_max)" if k == request.model.trained_loops else ""
                rows.append((strip(result.samples), result.caption() + trained))
        except InputError as exc:
            return "", error_html(str(exc))
        except Exception as exc:
            traceback.print_exc()
            return "", error_html(f"generation failed: {type(exc).__name__}: {exc}")
        return rows_html(rows, f"{request.model.class_names[request.label]}, seed {request.seed}"), ""

    # Gradio copies each result into its cache; files older than an hour are deleted every half hour
    with gr.Blocks(title="elt app — one checkpoint, any compute", analytics_enabled=False,
                   delete_cache=(1800, 3600)) as page:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                model_box = gr.Dropdown(list(models), value=first.name, label="model", elem_id="elt-model")
                info = gr.Markdown(first.describe(), elem_id="elt-model-info")
                class_box = gr.Dropdown(first.class_names, value=first.class_names[0], label="class",
                                        elem_id="elt-class")
                seed_box = gr.Textbox("0", label="seed (a whole number)", elem_id="elt-seed", max_lines=1)
                loops_box = gr.Slider(1, first.max_loops, value=first.trained_loops, step=1,
                                      label=f"loops L (trained at L_max = {first.trained_loops})",
                                      elem_id="elt-loops")
                steps_box = gr.Textbox("", label="sampling steps", elem_id="elt-steps", max_lines=1,
                                       placeholder=f"model default: {first.default_steps}")
                guidance_box = gr.Textbox("", label="guidance", elem_id="elt-guidance", max_lines=1,
                                          placeholder=f"model default: {first.default_guidance}")
                # -- any-time inference: per-step loop schedules and adaptive exit go here, once generate()
                # -- accepts them; they join `inputs` below and `check_request`.
            with gr.Column(scale=2):
                status = gr.HTML("", elem_id="elt-status")
                with gr.Tab("Generate"):
                    go = gr.Button("Generate", variant="primary", elem_id="elt-generate")
                    image = gr.Image(label="sample", type="filepath", format="png", height=320, interactive=False,
                                     elem_id="elt-image")
                    cost = gr.Markdown("", elem_id="elt-cost")
                with gr.Tab("Compare loop counts"):
                    count_box = gr.Slider(1, MAX_COMPARE_SAMPLES, value=4, step=1, label="samples per row",
                                          elem_id="elt-count")
                    compare = gr.Button("Compare loop counts", variant="primary", elem_id="elt-compare-go")
                    table = gr.HTML("", elem_id="elt-compare")
        inputs = [model_box, class_box, seed_box, loops_box, steps_box, guidance_box]
        model_box.change(controls_for, model_box, [info, class_box, loops_box, steps_box, guidance_box],
                         queue=False)
        go.click(on_generate, inputs, [image, cost, status], concurrency_id="generate")
        compare.click(on_compare, [*inputs, count_box], [table, status], concurrency_id="generate")
    return page


def rows_html(rows, title: str) -> str:
    """One row per loop count: the samples side by side (inline PNG, or GIF for video) with the cost under them."""
    import base64
    import html

    parts = [f'<p class="elt-rows-title">{html.escape(title)}, the same seed in every row</p>',
             '<div class="elt-rows">']
    for array, caption in rows:
        data, suffix = encode(array)
        mime = "image/gif" if suffix == ".gif" else "image/png"
        parts.append(f'<figure class="elt-row"><img alt="{html.escape(caption)}" '
                     f'src="data:{mime};base64,{base64.b64encode(data).decode()}">'
                     f'<figcaption>{html.escape(caption)}</figcaption></figure>')
    parts.append("</div>")
    return "".join(parts)


def _shape(sample) -> str:
    dims = sample.shape
    if len(dims) == 4:
        return f"{dims[0]} frames × {dims[1]}×{dims[2]}"
    return f"{dims[0]}×{dims[1]}"


def warm_up(models: dict[str, Model]) -> None:
    """Pay the one-off costs before the first click: the imports Gradio makes on its first event (matplotlib)
    and each model's first small generation."""
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
        _, url, _ = page.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                                show_error=True, ssr_mode=False, mcp_server=False, pwa=False, theme=theme(), css=CSS)
        print(f"elt app: serving {len(models)} model(s) at {url}  (Ctrl+C stops)", flush=True)
        threading.Thread(target=warm_up, args=(models,), daemon=True).start()
        try:
            page.block_thread()
        finally:
            page.close()
