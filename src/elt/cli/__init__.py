"""``elt`` command line: a thin layer over the Python API, the top layer (nothing in elt imports
it).

One module per command group, each with ``add_parsers(subparsers)``:

    train.py      elt train | sample | info | export
    eval.py       elt eval [train-classifier | floor | merge | video]
    calibrate.py  elt calibrate
    tokenizer.py  elt tokenizer train
    bench.py      elt bench
    demo.py       elt demo
    app.py        elt app
    prepare.py    elt prepare
    args.py       argument types (loop lists, positive integers)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from elt.cli import app, bench, calibrate, demo, eval, prepare, tokenizer, train
from elt.cli.args import bounded_int, out_dir, parse_loops, positive_int
from elt.errors import UserError
from elt.signals import TrainingInterrupted
from elt.version import __version__

EPILOG = (
    "Run 'elt COMMAND --help' for a command's options. "
    "Configs: YAML path or a shipped name (fmnist_masked)."
)

COMMAND_GROUPS = (train, eval, calibrate, tokenizer, bench, demo, app, prepare)

__all__ = ["UserError", "build_parser", "main", "parse_loops", "positive_int"]


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes as one line (``elt sample: error: ...``), exit status 2, like every other bad
    input."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


THREADS = bounded_int(1, 4096)
THREADS_HELP = (
    "CPU threads for PyTorch (default: $ELT_THREADS, else the config's train.threads, else half "
    "the "
    "CPUs, at least 1: full cores collapse when another job runs)"
)


def _add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` on every (sub)command that has none of its own; one destination, never
    defaulted by a subcommand, so ``elt --threads 1 demo`` and ``elt demo --threads 1`` mean the
    same."""
    if "--threads" not in parser._option_string_actions:
        parser.add_argument(
            "--threads",
            dest="global_threads",
            type=THREADS,
            default=argparse.SUPPRESS,
            metavar="N",
            help=THREADS_HELP,
        )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_threads_option(child)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="elt",
        description="Elastic Looped Transformers for visual "
        "generation: train once, sample at any loop count.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"elt {__version__}")
    parser.add_argument(
        "--threads",
        dest="global_threads",
        type=THREADS,
        default=None,
        metavar="N",
        help=THREADS_HELP,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_parsers(sub)
    _add_threads_option(parser)
    return parser


def apply_threads(args: argparse.Namespace) -> int:
    """``--threads`` becomes ``ELT_THREADS`` (so workers and subprocesses inherit it), then is
    applied."""
    import os

    from elt.runtime import THREADS_ENV, set_threads

    threads = getattr(args, "global_threads", None)
    if threads:
        os.environ[THREADS_ENV] = str(threads)
    return set_threads()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may follow options (elt train CFG --resume auto model.loops=6)
        if getattr(args, "command", None) in ("train", "sample") and all(
            "=" in item and not item.startswith("-") for item in extra
        ):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if isinstance(
        getattr(args, "out", None), str
    ):  # every command's --out: one check (elt.cli.args.out_dir)
        try:
            out_dir(args.out)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"argument --out: {exc}")
    if hasattr(args, "no_progress") and not sys.stderr.isatty():
        args.no_progress = (
            True  # progress bars only on a terminal: in a log file they are carriage-return noise
        )
    try:
        apply_threads(args)
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"elt: error: {exc}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:  # a training stopped on a signal, its state saved
        if stop.announce:
            print(f"elt: {stop}", file=sys.stderr)
        return 128 + stop.signum
    except (
        BrokenPipeError
    ):  # the reader went away (elt info RUN | head): stop quietly, as a shell tool would
        import os

        os.dup2(
            os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno()
        )  # no second error at exit's flush
        return 128 + 13  # killed by SIGPIPE, by the shell's convention
    except (
        OSError
    ) as exc:  # disk full, read-only, a file where a folder belongs: one line, nothing half-written
        from elt.fileio import user_fixable

        if (line := user_fixable(exc)) is None:
            raise
        print(f"elt: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("elt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
