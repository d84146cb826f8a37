"""Keep a preemption signal that arrives while a training script is still importing and
composing its config (seconds, before ``common.Preemption`` is entered): stdlib only, imported
first by both scripts. ``common.Preemption`` takes the pending signals when training starts.

Only signals whose handler is still the default are caught here, so a handler installed by the
process that imports the script (submitit's, which requeues the job) is left in place.
"""

from __future__ import annotations

import signal

SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
_pending: list[int] = []


def _keep(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    _pending.append(signum)


def install() -> None:
    """Catch SIGUSR1, SIGUSR2 and SIGTERM where they still have their default action."""
    try:
        for s in SIGNALS:
            if signal.getsignal(s) == signal.SIG_DFL:
                signal.signal(s, _keep)
    except ValueError:  # not the main thread: nothing to do
        pass


def take() -> list[int]:
    """The signals received so far (each once, in order); puts back the default action."""
    try:
        for s in SIGNALS:
            if signal.getsignal(s) is _keep:
                signal.signal(s, signal.SIG_DFL)
    except ValueError:
        pass
    got = list(dict.fromkeys(_pending))
    _pending.clear()
    return got
