"""``torchrun`` with a quiet stop: ``python -m elt.train.launch [torchrun options] -m elt.cli train
CONFIG ...``.

Exactly ``torch.distributed.run`` (same options, same environment for the workers), except for how a
stop
ends: when the launcher itself gets SIGTERM/SIGINT (a scheduler ending the job), it exits with 128 +
signal number after the workers stopped (rank 0 prints the one stop message), and when every failed
worker stopped on such a signal after writing its checkpoint (exit 128 + signal), it prints one
line; never torchrun's tracebacks for a stop. Any other failure is torchrun's own report."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def main(argv: Sequence[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    parser = get_args_parser()
    # the worker's own options follow the script (``-m elt.cli eval ... --num 8``): without this,
    # argparse reads ``--num`` as an abbreviation of torchrun's ``--numa-binding`` and fails before
    # starting anything
    parser.allow_abbrev = False
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        run(args)
    except (
        SignalException
    ) as exc:  # torchrun forwarded the signal and waited for the workers, whose rank 0
        return 128 + int(exc.sigval)  # printed the one stop message after checkpointing
    except ChildFailedError as exc:
        codes = {failure.exitcode for failure in exc.failures.values()}
        stops = {128 + int(s) for s in STOP_SIGNALS} | {-int(s) for s in STOP_SIGNALS}
        if codes and codes <= stops:
            code = max(codes)
            number = code - 128 if code > 0 else -code
            print(
                f"elt: workers stopped by {_signal_name(number)} after writing a checkpoint "
                "(continue with "
                "--resume auto)",
                file=sys.stderr,
            )
            return 128 + number
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
