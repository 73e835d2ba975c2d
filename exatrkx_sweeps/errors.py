"""How an error reaches the user: one line, never a traceback from inside a library."""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager


class ConfigError(ValueError):
    """A config key has a wrong type or an impossible value; the message names the key
    and what it accepts, e.g. ``gnn.iterations=0: must be an integer >= 1.``"""


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be used; the message says why and what to do."""


class Terminated(BaseException):  # noqa: N818  (a signal, like KeyboardInterrupt)
    """The process was asked to stop (SIGTERM: a SLURM time limit, a kill; or SIGINT);
    raised by the handler the app installs, so that runs end KILLED with the reason."""


class JobTerminated(RuntimeError):
    """A sweep's job that runs in a process of its own (a SLURM job) was stopped: a time
    limit or ``scancel``. It comes back to the sweeper as the job's error (a
    :class:`Terminated` would end the process without a result), and the sweeper fails
    the trial and queues it again."""


def raise_terminated(signum, frame) -> None:
    """Signal handler: SIGTERM (or another signal) as :class:`Terminated`."""
    raise Terminated(f"terminated by {signal.Signals(signum).name}")


@contextmanager
def signals_held(signums=(signal.SIGTERM, signal.SIGINT)):
    """Run the block with SIGTERM and SIGINT held back; one that arrives meanwhile is
    handed to its handler when the block ends. For calls that run worker threads of
    their own and wait for them (scipy's KD-tree query with ``workers``): a handler that
    raised during that wait would unwind the call and free its output arrays while the
    workers still write into them, and the process would die of a segmentation fault
    instead of ending the run KILLED. Outside the main thread (where no handler runs)
    the block runs as it is."""
    previous = {s: signal.getsignal(s) for s in signums}
    previous = {s: h for s, h in previous.items() if h is not None}  # None: set outside Python
    if threading.current_thread() is not threading.main_thread() or not previous:
        yield
        return
    caught: list[tuple[int, object]] = []
    for s in previous:
        signal.signal(s, lambda signum, frame: caught.append((signum, frame)))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if caught:
            signum, frame = caught[0]
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


def launched_job() -> str | None:
    """The launcher that started this process as one job (``slurm``: submitit on SLURM),
    or None when the job runs in the sweeper's or the user's own process."""
    return os.environ.get("SUBMITIT_EXECUTOR") or None


def for_sweeper(exc: Terminated) -> BaseException:
    """What a stopped sweep job raises: :class:`JobTerminated` in a process of its own
    (its result goes back to the sweeper, which runs the trial again), else ``exc`` (the
    sweeper's own process is stopping: it queues its running trials again)."""
    return JobTerminated(str(exc)) if launched_job() else exc


def stop_on_job_signals() -> None:
    """In a SLURM job: SIGTERM (``scancel``, the time limit) and submitit's warning signal
    (SIGUSR2, ``signal_delay_s`` before the limit) end the job as :class:`Terminated`, so
    that its MLflow run ends KILLED with the reason. submitit would ignore SIGTERM, and
    on SIGUSR2 leave a job that is not checkpointable to be killed at the limit."""
    if launched_job() != "slurm":
        return
    warning = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))

    def near_limit(signum, frame):
        raise Terminated(f"terminated by {signal.Signals(signum).name} (SLURM time limit near)")

    signal.signal(signal.SIGTERM, raise_terminated)
    signal.signal(warning, near_limit)


def one_line(exc: BaseException, with_type: bool = False) -> str:
    """The first line of the exception's message (the type's name when the message is
    empty); ``with_type`` prefixes the type's name, for records that outlive the context
    (a trial's ``fail_reason``)."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return f"{type(exc).__name__}: {lines[0]}" if with_type else lines[0]
