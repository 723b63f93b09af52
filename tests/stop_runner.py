"""`fvc train` that sends itself a real signal during a chosen forward pass, so that a test can place a stop
at a known batch: `python tests/stop_runner.py SIGNAL train|eval|none N DELAY_S FVC_ARGS...` sends SIGNAL
(e.g. SIGUSR1) during the Nth training (or validation) forward pass of this process; every forward pass
first sleeps DELAY_S (room for a signal sent from outside at a random moment)."""

from __future__ import annotations

import os
import signal
import sys
import time

from fvc.cli import main
from fvc.train import training


def install(sig: signal.Signals, mode: str, nth: int, delay_s: float) -> None:
    forward = training._forward
    calls = {"train": 0, "eval": 0}

    def counted(model, clips, precision, device):
        kind = "train" if model.training else "eval"
        calls[kind] += 1
        if kind == mode and calls[kind] == nth:
            os.kill(os.getpid(), sig)
        time.sleep(delay_s)
        return forward(model, clips, precision, device)

    training._forward = counted


if __name__ == "__main__":
    name, mode, nth, delay_s, *args = sys.argv[1:]
    install(signal.Signals[name], mode, int(nth), float(delay_s))
    sys.exit(main(args))
