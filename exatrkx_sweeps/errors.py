"""How an error reaches the user: one line, never a traceback from inside a library."""

from __future__ import annotations

import signal


class ConfigError(ValueError):
    """A config key has a wrong type or an impossible value; the message names the key
    and what it accepts, e.g. ``gnn.iterations=0: must be an integer >= 1.``"""


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be used; the message says why and what to do."""


class Terminated(BaseException):  # noqa: N818  (a signal, like KeyboardInterrupt)
    """The process was asked to stop (SIGTERM: a SLURM time limit, a kill; or SIGINT);
    raised by the handler the app installs, so that runs end KILLED with the reason."""


def raise_terminated(signum, frame) -> None:
    """Signal handler: SIGTERM (or another signal) as :class:`Terminated`."""
    raise Terminated(f"terminated by {signal.Signals(signum).name}")


def one_line(exc: BaseException, with_type: bool = False) -> str:
    """The first line of the exception's message (the type's name when the message is
    empty); ``with_type`` prefixes the type's name, for records that outlive the context
    (a trial's ``fail_reason``)."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return f"{type(exc).__name__}: {lines[0]}" if with_type else lines[0]
