"""``elt app`` driven in a real browser: headless Chromium (Debian's ``chromium`` package) through
Playwright.

The server runs as a subprocess (``python -m elt.cli app``) on a free loopback port. Locally these
tests skip when Gradio, Playwright or Chromium is missing; under CI (``CI`` set) a missing piece is
a failure. ``pytest -m browser -s`` prints the two timings (page served after start, image after
pressing Generate at L = 1); ``--app-screenshot docs/assets/app.png`` also writes the page's
screenshot there (default: a temporary dir)."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("ELT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVE_TIMEOUT_S = 180
WAIT_MS = 120_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"browser tests must run in CI: {reason}")
    pytest.skip(reason)


def _requirements():
    for module, extra in (
        ("gradio", "pip install 'elt-looped[app]'"),
        ("playwright.sync_api", "pip install playwright"),
    ):
        try:
            __import__(module)
        except ImportError:
            _missing(f"{module} is not installed ({extra})")
    if not Path(CHROMIUM).is_file():
        _missing(f"{CHROMIUM} not found (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu_seconds(pid: int) -> float | str:
    """User + system CPU seconds of a process so far (Linux); on a loaded machine a steadier figure
    than wall time."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return "n/a"


def _served(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def timings():
    record: dict = {}
    yield record
    lines = [
        f"  {key}: {value:.2f} s" if isinstance(value, float) else f"  {key}: {value}"
        for key, value in record.items()
    ]
    print(
        "\nelt app timings (wall clock, this machine, load average "
        f"{os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs):\n" + "\n".join(lines)
    )


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    """A tiny video diffusion checkpoint (4 frames of 16×16), trained just enough that its frames
    differ."""
    from elt.cli import main

    _requirements()
    run = tmp_path_factory.mktemp("video") / "run"
    assert (
        main(
            [
                "train",
                "fmnist_diffusion",
                "--no-progress",
                "data.name=moving_fmnist",
                "data.frames=4",
                "data.image_size=16",
                "data.sprite_size=8",
                "data.limit=32",
                "diffusion.patch_size=4",
                "diffusion.temporal_patch_size=2",
                "model.width=32",
                "model.heads=2",
                "model.unique_layers=2",
                "model.loops=3",
                "sampling.steps=3",
                "train.threads=1",
                "train.precision=fp32",
                "train.steps=30",
                "optimizer.lr=3e-3",
                "lr_schedule.warmup_steps=3",
                "train.batch_size=8",
                "logging.sample_every=0",
                "logging.every=10",
                f"train.out_dir={run}",
            ]
        )
        == 0
    )
    return run


@pytest.fixture(scope="module")
def server(tmp_path_factory, timings, video_run):
    _requirements()
    port = _free_port()
    log = tmp_path_factory.mktemp("app") / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    url = f"http://127.0.0.1:{port}/"
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "elt.cli",
                "app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--ckpt",
                "demo:masked",
                "--ckpt",
                "demo:diffusion",
                "--ckpt",
                str(video_run),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            while not _served(url):
                if proc.poll() is not None:
                    pytest.fail(f"elt app exited with {proc.returncode}:\n{log.read_text()}")
                if time.perf_counter() - start > SERVE_TIMEOUT_S:
                    pytest.fail(
                        f"elt app served nothing within {SERVE_TIMEOUT_S} s:\n{log.read_text()}"
                    )
                time.sleep(0.1)
            timings["page served after `elt app` start"] = time.perf_counter() - start
            timings["CPU time of `elt app` until served"] = _cpu_seconds(proc.pid)
            yield url, proc, log
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert f"127.0.0.1:{port}" in log.read_text()  # the URL was printed


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(server, browser):
    url = server[0]
    context = browser.new_context(viewport={"width": 1280, "height": 960})
    page = context.new_page()
    outside = []
    page.on(
        "request",
        lambda request: (
            None
            if request.url.startswith(("http://127.0.0.1", "data:", "blob:"))
            else outside.append(request.url)
        ),
    )
    page.goto(url)
    page.wait_for_selector("#elt-generate", timeout=WAIT_MS)
    yield page
    context.close()
    assert not outside, f"the page fetched from outside this machine: {outside}"


# -- page helpers ----------------------------------------------------------------------------------
def choose(page, elem_id: str, option: str) -> None:
    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=option, exact=True).click()
    page.wait_for_function(
        "([id, v]) => document.querySelector(`#${id} input`).value === v", arg=[elem_id, option]
    )


def fill(page, selector: str, value: str) -> None:
    box = page.locator(selector)
    box.fill(value)
    box.press("Tab")  # commit the value (number boxes apply it on change / blur)


def image_src(page) -> str | None:
    img = page.locator("#elt-image img")
    return img.get_attribute("src") if img.count() else None


def generate(page, timeout_ms: int = WAIT_MS) -> tuple[bytes, float]:
    """Press Generate, wait for a new image; returns its bytes and the seconds from the press."""
    before = image_src(page)
    start = time.perf_counter()
    page.click("#elt-generate")
    page.wait_for_function(
        "(old) => { const i = document.querySelector('#elt-image img'); "
        "return i && i.complete && i.naturalWidth > 0 && i.getAttribute('src') !== old; }",
        arg=before,
        timeout=timeout_ms,
        polling=50,
    )
    seconds = time.perf_counter() - start
    response = page.request.get(image_src(page))
    assert response.ok
    return response.body(), seconds


def set_request(page, class_name: str, loops: int, seed: str = "0", steps: str = "") -> None:
    choose(page, "elt-class", class_name)
    fill(page, "#elt-seed input", seed)
    fill(page, "#elt-steps input", steps)
    fill(page, "#elt-loops input[type=number]", str(loops))


def decode_png(data: bytes):
    from PIL import Image

    assert data[:8] == PNG_MAGIC, "not a PNG"
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture(scope="module")
def shipped_size():
    """The shipped masked model's sample size, from the public API."""
    import elt
    from elt.app.models import shipped_checkpoints

    sample = elt.load(str(shipped_checkpoints()["demo:masked"])).generate([0], loops=1, seed=0)
    return sample.shape[2], sample.shape[1]  # PIL's (width, height)


# -- tests -----------------------------------------------------------------------------------------
def test_generate_at_two_loop_counts(page, shipped_size, timings):
    assert page.locator("#elt-model input").input_value() == "demo:masked"
    set_request(page, "7: Sneaker", loops=1, seed="3")
    first, seconds = generate(page)
    timings["image after pressing Generate at L = 1 (first request)"] = seconds
    again, seconds = generate(page)
    timings["image after pressing Generate at L = 1 (again)"] = seconds
    image = decode_png(first)
    assert image.size == shipped_size
    assert first == again, "same seed, same settings: the same image"
    cost = page.locator("#elt-cost").inner_text()
    assert "L = 1 loops" in cost and "GFLOPs" in cost and "ms measured" in cost

    fill(page, "#elt-loops input[type=number]", "4")
    fourth, _ = generate(page)
    assert decode_png(fourth).size == shipped_size
    assert fourth != first, "another loop count: another image"
    cost_l4 = page.locator("#elt-cost").inner_text()
    assert "L = 4 loops" in cost_l4
    gflops = [
        float(text.split("L = ")[1].split("· ")[1].split(" GFLOPs")[0]) for text in (cost, cost_l4)
    ]
    assert gflops[1] > 2 * gflops[0]


def test_adaptive_exit_and_schedules_show_the_loops_they_ran(page, server, shipped_size):
    choose(page, "elt-class", "7: Sneaker")
    fill(page, "#elt-seed input", "3")
    page.locator("#elt-loops-mode label", has_text="adaptive exit").click()
    page.locator("#elt-exit-threshold input, #elt-exit-threshold textarea").wait_for(
        timeout=WAIT_MS
    )
    assert not page.locator("#elt-loops").is_visible()  # the fixed slider makes way
    fill(page, "#elt-exit-threshold input, #elt-exit-threshold textarea", "0.2")
    fill(page, "#elt-exit-min input[type=number]", "2")
    fill(page, "#elt-exit-max input[type=number]", "4")
    data, _ = generate(page)
    assert decode_png(data).size == shipped_size
    cost = page.locator("#elt-cost").inner_text()
    assert "loops exit:0.2:2-4: mean " in cost and "GFLOPs" in cost and "ms measured" in cost
    mean = float(cost.split(": mean ")[1].split(" loops per step")[0])
    per_step = cost.split("(per step: ")[1].split(")")[0].split()
    assert (
        2 <= mean <= 4 and sum(int(p.split("×")[1]) if "×" in p else 1 for p in per_step) == 12
    )  # 12 steps

    page.locator("#elt-loops-mode label", has_text="schedule").click()
    fill(page, "#elt-schedule input, #elt-schedule textarea", "1x5")
    page.click("#elt-generate")
    page.wait_for_function(
        "() => (document.querySelector('#elt-status')?.innerText || '')"
        ".includes(\"loop schedule '1x5' covers 5 steps but sampling uses 12 steps\")",
        timeout=WAIT_MS,
    )
    fill(page, "#elt-schedule input, #elt-schedule textarea", "4:1")
    data, _ = generate(page)
    assert decode_png(data).size == shipped_size
    assert (
        "loops 4:1: mean 2.50 loops per step (per step: 4×2 3×4 2×4 1×2)"
        in page.locator("#elt-cost").inner_text()
    )
    assert page.locator("#elt-status").inner_text().strip() == ""
    assert server[1].poll() is None


def test_bad_input_is_a_message_and_the_server_keeps_serving(page, server, shipped_size):
    set_request(page, "0: T-shirt/top", loops=2, seed="twelve")
    page.click("#elt-generate")
    status = page.locator("#elt-status .elt-error")
    status.wait_for(timeout=WAIT_MS)
    assert "seed must be a whole number, got 'twelve'" in status.inner_text()

    fill(page, "#elt-seed input", "1")
    fill(page, "#elt-steps input", "100000")
    page.click("#elt-generate")
    page.wait_for_function(
        "() => (document.querySelector('#elt-status')?.innerText || '')"
        ".includes('sampling steps must be between 1 and 1000, got 100000')",
        timeout=WAIT_MS,
    )

    fill(page, "#elt-steps input", "")
    data, _ = generate(page)
    assert decode_png(data).size == shipped_size
    assert page.locator("#elt-status").inner_text().strip() == ""
    assert server[1].poll() is None


def test_compare_loop_counts_shows_one_row_per_loop_count(page, timings, request, tmp_path):
    choose(page, "elt-model", "demo:diffusion")
    page.wait_for_function(
        "() => document.querySelector('#elt-model-info').innerText.includes('diffusion')"
    )
    choose(page, "elt-class", "1: Trouser")
    max_loops = int(page.locator("#elt-loops input[type=number]").get_attribute("max"))
    trained = int(page.locator("#elt-model-info").inner_text().split("L_max = ")[1].split(",")[0])
    assert max_loops == trained + 2  # the slider runs past L_max
    page.locator(
        "#elt-loops-mode label", has_text="adaptive exit"
    ).click()  # adds a row for the adaptive exit
    page.wait_for_function(
        "() => document.querySelector('#elt-exit-threshold input, #elt-exit-threshold "
        "textarea')?.value === '0.05'"
    )  # the diffusion model's starting threshold
    page.get_by_role("tab", name="Compare loop counts").click()
    fill(page, "#elt-count input[type=number]", "4")
    page.click("#elt-compare-go")
    page.wait_for_function(
        "(n) => document.querySelectorAll('#elt-compare img').length === n",
        arg=max_loops + 1,
        timeout=WAIT_MS,
    )
    text = page.locator("#elt-compare").inner_text()
    for k in range(1, max_loops + 1):
        assert f"L = {k} loops" in text
    assert "trained L_max" in text
    assert f"loops exit:0.05:2-{trained}: mean " in text
    first_row = page.locator("#elt-compare img").first.get_attribute("src")
    assert first_row.startswith("data:image/png;base64,")
    strip = decode_png(base64.b64decode(first_row.split(",", 1)[1]))
    assert strip.size[0] > 4 * strip.size[1]  # four samples side by side
    assert (
        len(set(page.locator("#elt-compare img").evaluate_all("(imgs) => imgs.map(i => i.src)")))
        > 1
    )

    shot = Path(request.config.getoption("--app-screenshot") or tmp_path / "app.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert decode_png(shot.read_bytes()).size[0] >= 1000
    timings["screenshot"] = str(shot)


def test_video_checkpoint_plays_as_an_animation(page, video_run):
    from PIL import Image

    choose(page, "elt-model", str(video_run))
    page.wait_for_function(
        "() => document.querySelector('#elt-loops input[type=number]').max === '5'"
    )
    fill(page, "#elt-loops input[type=number]", "2")
    data, _ = generate(page)
    assert data[:6] in (b"GIF87a", b"GIF89a")
    clip = Image.open(io.BytesIO(data))
    assert clip.is_animated and clip.n_frames == 4 and clip.size == (16, 16)
    assert "4 frames × 16×16" in page.locator("#elt-cost").inner_text()


def test_a_long_generation_does_not_block_the_page(page, browser, server):
    """A slow compare in one tab shows progress while another tab still gets its image."""
    choose(page, "elt-model", "demo:diffusion")
    page.get_by_role("tab", name="Compare loop counts").click()
    fill(page, "#elt-steps input", "400")
    fill(page, "#elt-count input[type=number]", "8")
    page.click("#elt-compare-go")
    page.wait_for_function(
        "() => /\\d+\\/\\d+ loop counts/.test(document.querySelector("
        "'#elt-compare [data-testid=status-tracker]')?.innerText || '')",
        timeout=WAIT_MS,
    )

    other = browser.new_context().new_page()
    other.goto(server[0])
    other.wait_for_selector("#elt-generate", timeout=WAIT_MS)
    fill(other, "#elt-loops input[type=number]", "1")
    data, _ = generate(other)
    decode_png(data)
    still_running = page.locator("#elt-compare img").count() < int(
        page.locator("#elt-loops input[type=number]").get_attribute("max")
    )
    other.context.close()
    assert still_running, "the quick image came only after the long comparison finished"
