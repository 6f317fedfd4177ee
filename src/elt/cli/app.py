"""``elt app``: the options; the page is :mod:`elt.app`."""

from __future__ import annotations

import argparse
import sys
import time

from elt.cli.args import bounded_int
from elt.errors import UserError


def cmd_app(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    from elt.app.models import load_models

    models = load_models(
        args.ckpt, device=args.device
    )  # a missing or broken checkpoint fails here, before serving
    try:
        from elt.app import page
    except ImportError as exc:
        if getattr(exc, "name", None) in (None, "gradio") or "gradio" in str(exc):
            raise UserError("elt app needs Gradio: pip install 'elt-looped[app]'") from None
        raise
    print(
        f"elt app: loaded {', '.join(models)} in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    try:
        page.serve(models, args.host, args.port, concurrency=args.concurrency)
    except OSError as exc:
        raise UserError(
            f"cannot serve on {args.host}:{args.port or 'a port from 7860'}: {exc}"
        ) from None
    return 0


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not in 1..65535")
    return value


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "app",
        help="a local page: any checkpoint, any loop count, with its cost",
        description="A local page to feel the compute dial: pick a model, a class, a seed and a "
        "loop "
        "count, and see the sample with what it cost (loops, GFLOPs, measured time); "
        "compare loop counts side by side. Prints the page's URL. Needs the 'app' "
        "extra: pip install 'elt-looped[app]'.",
    )
    p.add_argument(
        "--ckpt",
        action="append",
        default=None,
        metavar="RUN",
        help="checkpoint or run directory, or demo:masked / demo:diffusion (repeatable; default: "
        "the "
        "shipped demo models)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to serve on (default 127.0.0.1: this machine only)",
    )
    p.add_argument(
        "--port",
        type=port_number,
        default=None,
        help="port (default: the first free one from 7860)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument(
        "--concurrency",
        type=bounded_int(1, 64),
        default=2,
        help="generations run at once; more requests wait in a queue (default 2)",
    )
    p.set_defaults(func=cmd_app)
