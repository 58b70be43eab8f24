"""Secrets stay out of uvicorn's access log: a key sent in a query string (``?api_key=``, which the
server refuses) is written as ``***``."""

from __future__ import annotations

import logging
import re

#: Query parameters whose values are secrets, whatever their case.
SECRET_PARAMETERS = ("api_key", "api-key", "apikey", "key", "access_token", "token", "password", "secret")
_SECRET = re.compile(r"(?i)([?&](?:%s)=)[^&#\s]*" % "|".join(re.escape(p) for p in SECRET_PARAMETERS))


def redact(target: str) -> str:
    """``target`` (a path with its query string) with each secret parameter's value replaced by ``***``."""
    return _SECRET.sub(r"\1***", target)


class RedactQuerySecrets(logging.Filter):
    """Rewrites the request line of uvicorn's access records (``client, method, path?query, version, status``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], redact(args[2]), *args[3:])
        return True


def redact_access_log(logger_name: str = "uvicorn.access") -> None:
    """Install the filter on uvicorn's access logger (once, however often the app is built)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactQuerySecrets) for f in logger.filters):
        logger.addFilter(RedactQuerySecrets())
