"""Preemption: SIGTERM (cluster schedulers, torchrun shutting down) and SIGINT (Ctrl-C) become a
request to stop that the training loop honours at the next step boundary, after writing a
checkpoint.

The handler only sets a flag, so a signal never interrupts a checkpoint being written. A second
SIGINT restores the default behaviour and re-raises it: pressing Ctrl-C twice aborts at once.
Repeated SIGTERMs keep the one request (torchrun's agent sends its workers SIGTERM more than once
while shutting down; it kills them with SIGKILL only after its grace period)."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class TrainingInterrupted(Exception):
    """Training stopped early on a signal, after writing a checkpoint at ``step``; resume with
    ``--resume auto``. The CLI turns it into exit status 128 + signal number (143 for SIGTERM)."""

    def __init__(
        self, signum: int, step: int, checkpoint, announce: bool = True, message: str | None = None
    ):
        """``message``: the stop line, when the default (a model checkpoint) does not fit (the
        tokenizer trainer names its saved state)."""
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.announce = (
            announce  # False on ranks other than 0: one stop message per run, not per process
        )
        name = signal.Signals(signum).name
        super().__init__(
            message
            or f"stopped by {name} at step {step}; checkpoint {checkpoint} "
            "(continue with --resume auto)"
        )


class GracefulStop:
    """Context manager that records the first SIGTERM/SIGINT instead of dying on it.

    Only the main thread may install handlers; elsewhere (and with ``enabled=False``) it records
    nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signum and signum == signal.SIGINT:  # Ctrl-C twice: the user insists
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.signum = signum

    def __enter__(self) -> GracefulStop:
        if self.enabled:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
