"""Secrets out of logs.

Share links and password-reset links carry their secret in the URL path (``/share/<secret>``,
``/password-reset/<secret>``), and access logs print request paths and referrers; API tokens
(``regio_...``) travel in headers, and a Redis or SMTP URL may hold a password. Nothing of them
may reach a log:

- ``redact(text)`` replaces each secret in a text by ``[redacted]``: the secret part of those
  paths (also when percent-encoded), the values of query parameters named like secrets
  (``token``, ``secret``, ``password``...), API tokens, and the password of a URL
  (``scheme://user:password@host``).
- ``RedactingFilter`` applies it to log records (message, arguments and traceback);
  ``install(logger)`` puts it on a logger and its handlers (``app.auth.init_app`` does it for
  the Flask app's logger).
- ``GunicornLogger``: gunicorn's logger with every access-log atom redacted (request line, path,
  query, referrer, headers and environment; authorization and cookie headers dropped whole) and
  the filter on its error and access logs. gunicorn uses it with
  ``--logger-class app.redaction.GunicornLogger``.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote, unquote

from gunicorn.glogging import Logger as _GunicornLogger

REDACTED = "[redacted]"

_PATH_SECRET = re.compile(r"(?i)(/(?:share|password-reset)/)[^/?#\s\"'&%]+")
_QUERY_SECRET = re.compile(
    r"(?i)((?:^|[?&;])(?:token|secret|share|password|passwd|key|api_key|access_token|code)=)"
    r"[^&;#\s\"']+"
)
_API_TOKEN = re.compile(r"regio_[A-Za-z0-9_\-]{16,}")
_WORD = re.compile(r"\S+")
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^:@/\s]*:)[^@/\s]+@")
# characters left as they are when a decoded text is encoded again (see ``redact``)
_SAFE = "/:?&=#;,+@!$'()*[]~"

#: Request headers (and their WSGI environment names) whose whole value is a credential.
SECRET_HEADERS = frozenset({"authorization", "cookie", "x-regio-share", "x-csrf-token"})
_SECRET_ATOMS = frozenset(
    {f"{{{h}}}i" for h in SECRET_HEADERS}
    | {f"{{http_{h.replace('-', '_')}}}e" for h in SECRET_HEADERS}
    | {"{set-cookie}o"}
)


def _redact_plain(text: str) -> str:
    text = _PATH_SECRET.sub(rf"\g<1>{REDACTED}", text)
    text = _QUERY_SECRET.sub(rf"\g<1>{REDACTED}", text)
    text = _API_TOKEN.sub(f"regio_{REDACTED}", text)
    return _URL_PASSWORD.sub(rf"\g<1>{REDACTED}@", text)


def redact(text: str) -> str:
    """``text`` with every secret it holds replaced by ``[redacted]``.

    Each word (a run of non-space characters: a URL, a header value...) is redacted on its own.
    A secret hidden by percent-encoding (``/%73hare/<secret>``, which the server decodes and
    routes to the share link) is found in the decoded word; the word is then replaced by the
    decoded word, redacted and encoded again (so control characters stay encoded).
    """
    return _WORD.sub(lambda match: _redact_word(match.group(0)), text)


def _redact_word(word: str) -> str:
    cleaned = _redact_plain(word)
    decoded = unquote(cleaned)
    if decoded != cleaned:
        decoded_clean = _redact_plain(decoded)
        if decoded_clean != decoded:
            return quote(decoded_clean, safe=_SAFE + "%")
    return cleaned


class RedactingFilter(logging.Filter):
    """Redacts each record's message (formatted with its arguments) and traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's error reporting
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def install(logger: logging.Logger) -> None:
    """Put the redacting filter on ``logger`` and on its handlers (once)."""
    for target in (logger, *logger.handlers):
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)


class GunicornLogger(_GunicornLogger):
    """gunicorn's logger, redacting secrets from the access log and the error log."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        install(self.error_log)
        install(self.access_log)

    def atoms(self, resp: Any, req: Any, environ: dict, request_time: Any) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        for name, value in atoms.items():
            if name in _SECRET_ATOMS:
                atoms[name] = REDACTED
            elif isinstance(value, str):
                atoms[name] = redact(value)
        return atoms
