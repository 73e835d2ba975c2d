"""Secrets stay secret: the one helper through which every URI passes before it is
printed, logged, tagged, written to a file or put in an error message.

It hides the password of ``scheme://user:password@host`` and the values of query
parameters that carry credentials (``?password=...``, ``&token=...``), in URIs and in
any text or config that contains them.
"""

from __future__ import annotations

import logging
import re
from typing import Any

HIDDEN = "***"
_USERINFO = re.compile(r"(?P<prefix>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s'\"]*):[^/?#\s'\"]*@")
_SECRET_PARAMS = "password|passwd|pwd|pass|sslpassword|token|access_token|auth_token|secret|api_key|apikey"
_QUERY = re.compile(rf"(?i)(?P<prefix>[?&;](?:{_SECRET_PARAMS})=)[^&#\s'\"]*")


def redact(text: Any) -> Any:
    """``text`` with every credential in it replaced by ``***`` (non-strings unchanged)."""
    if not isinstance(text, str):
        return text
    text = _USERINFO.sub(rf"\g<prefix>:{HIDDEN}@", text)
    return _QUERY.sub(rf"\g<prefix>{HIDDEN}", text)


def redact_all(obj: Any) -> Any:
    """A copy of a config (nested dicts, lists, strings) with every string redacted."""
    if isinstance(obj, dict):
        return {k: redact_all(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_all(v) for v in obj]
    return redact(obj)


def has_secret(text: str) -> bool:
    return redact(text) != text


def redact_logs() -> None:
    """Every log record of this process, from any library (Hydra's launcher logs each
    job's overrides), is redacted when it is made. Installing it twice is harmless."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacting", False):
        return

    def make(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        message = record.getMessage()
        if redact(message) != message:
            record.msg, record.args = redact(message), ()
        return record

    make.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make)
