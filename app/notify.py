"""Notifications: e-mails and webhooks when a run starts and ends, and password-reset e-mails.

``notify_run(run, event, settings, accounts_db)`` tells the run's owner (a user of
``app.accounts``) that the run ``"started"`` or ``"ended"``:

- by e-mail, if the user has not turned e-mails off and ``REGIO_SMTP_HOST`` is set
  (``smtplib``; ``REGIO_SMTP_PORT`` 465 means TLS from the start, ``REGIO_SMTP_STARTTLS`` an
  upgraded connection; the server certificate is checked in both cases);
- by webhook, if the user set a ``webhook_url``: a JSON POST ``{"event", "run": {...}, "links"}``
  with a short timeout. Only http and https URLs are used, redirects are not followed, and unless
  ``REGIO_WEBHOOK_ALLOW_PRIVATE`` is on, the host must resolve to public addresses only (the
  connection goes to the address that was checked, so DNS cannot swap it afterwards): users
  cannot make the workers call services inside the network.

A notification that cannot be delivered (mail server down, webhook answering 500 or timing out)
is logged, without passwords, tokens or the webhook's path and query (which often hold a
secret), and never raises.

The run supervisor (``app.runner``) uses a ``RunNotifier``: ``started`` right after the script
process started, ``ended`` after the run's final phase was recorded. Both send from a background
thread, so a run is never delayed by a slow mail server; ``ended`` then waits (at most
``END_WAIT`` seconds) for the threads to finish, since rq's work horse exits as soon as the job
returns.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from app import accounts, plumbing, runs
from app.runs import ABORTED, COMPLETED, Run

log = logging.getLogger("regio.notify")

EVENTS = ("started", "ended")
SMTP_TIMEOUT = 10.0  # seconds per mail server operation
WEBHOOK_TIMEOUT = 5.0  # seconds per webhook connect / send / answer
END_WAIT = 20.0  # seconds the runner waits for the notifications of a run that ended
MAX_ERROR_CHARS = 2000


# ------------------------------------------------------------------------------------ content


def run_links(run: Run, base_url: str) -> dict[str, str]:
    """The links a notification gives: the run in its session page, its record and products."""
    base = base_url.rstrip("/")
    run_id, session_id = quote(run.id, safe=""), quote(run.session_id, safe="")
    return {
        "session": f"{base}/sessions/{session_id}?run={run_id}",
        "run": f"{base}/api/runs/{run_id}",
        "products": f"{base}/api/runs/{run_id}/products",
    }


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def run_email(run: Run, event: str, base_url: str) -> tuple[str, str]:
    """The subject and text of the e-mail for a run's ``event`` (an automatic run's says what
    started it)."""
    subject, body = _run_email(run, event, base_url)
    why = trigger_text(run)
    return subject, (f"{body}\n{why}.\n" if why else body)


def _run_email(run: Run, event: str, base_url: str) -> tuple[str, str]:
    links = run_links(run, base_url)
    what = f"Run {run.id} of {run.script}"
    if event == "started":
        return _one_line(f"{what} started"), (
            f"{what} {run.script_version} started at {run.started or plumbing.now()}.\n\n"
            f"Follow it: {links['session']}\n"
        )
    if run.phase == COMPLETED:
        return _one_line(f"{what} completed"), (
            f"{what} {run.script_version} completed at {run.ended}.\n\n"
            f"Its products: {links['session']}\n"
            f"Through the API: {links['products']}\n"
        )
    if run.phase == ABORTED:
        return _one_line(f"{what} was cancelled"), (
            f"{what} {run.script_version} was cancelled at {run.ended}"
            f"{f': {run.error}' if run.error else '.'}\n\n"
            f"The run: {links['session']}\n"
        )
    stage = f"at stage '{run.failing_stage}'" if run.failing_stage else "before any stage"
    error = (run.error or "no error message")[:MAX_ERROR_CHARS]
    return _one_line(f"{what} failed {stage}"), (
        f"{what} {run.script_version} failed {stage} at {run.ended}.\n\n"
        f"Error: {error}\n\n"
        f"Its log: {links['session']}\n"
        f"Through the API: {links['run']}\n"
    )


def trigger_json(run: Run) -> dict[str, Any]:
    """What started the run: ``{"kind": manual | standing | schedule, "id", "detail"}``."""
    kind, _, ident = (run.trigger or "manual").partition(":")
    return {"kind": kind, "id": ident or None, "detail": run.trigger_detail}


def trigger_text(run: Run) -> str:
    """One sentence saying what started an automatic run ('' for a manual one)."""
    trigger, detail = trigger_json(run), run.trigger_detail or {}
    if trigger["kind"] == "standing":
        new = detail.get("new_exposures") or []
        shown = ", ".join(map(str, new[:5])) + (f" and {len(new) - 5} more" if len(new) > 5 else "")
        return _one_line(
            f"Started by standing request {trigger['id']}"
            + (f" ({detail['title']})" if detail.get("title") else "")
            + (f": new data {shown}" if shown else "")
        )
    if trigger["kind"] == "schedule":
        return _one_line(
            f"Started by schedule {trigger['id']}"
            + (f" ({detail['title']})" if detail.get("title") else "")
            + (f" at its tick {detail['tick']}" if detail.get("tick") else "")
        )
    return ""


def webhook_payload(run: Run, event: str, base_url: str) -> dict[str, Any]:
    """The JSON a webhook receives for a run's ``event``; ``trigger`` says what started it."""
    keys = ("id", "session_id", "script", "phase", "stage", "error", "failing_stage")
    return {
        "event": event,
        "run": {
            **{key: getattr(run, key) for key in keys},
            "script_version": run.script_version,
            "started": run.started,
            "ended": run.ended,
        },
        "trigger": trigger_json(run),
        "links": run_links(run, base_url),
    }


# ----------------------------------------------------------------------------------- delivery


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def send_email(settings: Mapping[str, Any], to: str, subject: str, body: str) -> bool:
    """Send a text e-mail through the configured mail server; False (logged) if it failed.

    Does nothing and returns False when ``REGIO_SMTP_HOST`` is empty.
    """
    host, port = settings["SMTP_HOST"], int(settings["SMTP_PORT"])
    if not host:
        return False
    try:
        message = EmailMessage()
        message["From"] = settings["MAIL_FROM"]
        message["To"] = to
        message["Subject"] = _one_line(subject)
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=str(settings["MAIL_FROM"]).rpartition("@")[2])
        message.set_content(body)
        context = ssl.create_default_context()
        if port == 465:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=SMTP_TIMEOUT, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT)
        with smtp:
            if settings["SMTP_STARTTLS"] and port != 465:
                smtp.starttls(context=context)
            if settings["SMTP_USER"]:
                smtp.login(settings["SMTP_USER"], settings["SMTP_PASSWORD"])
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        log.warning(
            "could not send the e-mail %r to %s through %s:%s: %s",
            subject, to, host, port, _describe(exc),
        )  # fmt: skip
        return False
    return True


def send_reset_email(settings: Mapping[str, Any], to: str, reset_url: str) -> bool:
    """Send a password-reset link (made from ``accounts.start_reset``'s secret); False if not sent.

    Put the secret in the link's path, not its query string, so it stays out of access logs'
    referrers as far as possible; the caller answers the same way whether or not it was sent.
    """
    hours = accounts.RESET_TTL.total_seconds() / 3600
    body = (
        f"Someone, probably you, asked to reset the password of the Regio account {to}.\n\n"
        f"To choose a new password, open this link within {hours:g} hour(s); it works once:\n"
        f"{reset_url}\n\n"
        "If you did not ask for it, ignore this message: your password stays as it is.\n"
    )
    return send_email(settings, to, "Reset your Regio password", body)


class WebhookError(Exception):
    """A webhook URL the service refuses to call (e.g. one resolving to a private address)."""


def _redacted(url: str) -> str:
    """Scheme, host and port of a URL: its path and query may hold a secret."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(malformed URL)"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/..."


def _addresses(host: str, port: int, allow_private: bool) -> list[str]:
    """The addresses ``host`` resolves to; ``WebhookError`` if one of them is not public."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            if not ip.is_global:
                raise WebhookError(f"{host} resolves to a non-public address ({address})")
    return addresses


def _connect(addresses: list[str], port: int, timeout: float) -> socket.socket:
    error: OSError = OSError("no address")
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            error = exc
    raise error


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to addresses resolved (and checked) beforehand."""

    def __init__(self, host: str, port: int, addresses: list[str], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.addresses = addresses

    def connect(self) -> None:
        self.sock = _connect(self.addresses, self.port, self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """An HTTPS connection to addresses resolved beforehand; the certificate names the host."""

    def __init__(self, host: str, port: int, addresses: list[str], timeout: float) -> None:
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.addresses = addresses

    def connect(self) -> None:
        sock = _connect(self.addresses, self.port, self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


def post_webhook(
    url: str, payload: Mapping[str, Any], *, allow_private: bool = False,
    timeout: float = WEBHOOK_TIMEOUT,
) -> bool:  # fmt: skip
    """POST ``payload`` as JSON to ``url``; True on a 2xx answer, else False (logged).

    Redirects are not followed (a 3xx answer is a failure).
    """
    try:
        url = accounts.check_webhook_url(url)
        parts = urlsplit(url)
        https = parts.scheme == "https"
        host, port = parts.hostname or "", parts.port or (443 if https else 80)
        addresses = _addresses(host, port, allow_private)
        connection_class = _PinnedHTTPS if https else _PinnedHTTP
        connection = connection_class(host, port, addresses, timeout)
        try:
            from app import __version__

            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            headers = {"Content-Type": "application/json", "User-Agent": f"Regio/{__version__}"}
            connection.request("POST", path, body=json.dumps(payload).encode(), headers=headers)
            response = connection.getresponse()
            response.read(64 * 1024)
            status = response.status
        finally:
            connection.close()
    except (OSError, http.client.HTTPException, WebhookError, ValueError) as exc:
        log.warning("webhook %s failed: %s", _redacted(url), _describe(exc))
        return False
    if not 200 <= status < 300:
        log.warning("webhook %s answered HTTP %s", _redacted(url), status)
        return False
    return True


# ------------------------------------------------------------------------------ notifications


def notify_run(
    run: Run,
    event: str,
    settings: Mapping[str, Any],
    accounts_db: Path | str,
    base_url: str | None = None,
) -> dict[str, bool]:
    """Tell the run's owner that it ``"started"`` or ``"ended"``; returns what was delivered.

    Nothing is sent for a run without an owner (single-user mode), an owner without an account or
    a disabled one. Never raises on a delivery failure (it is logged); ``ValueError`` for an
    unknown ``event``.
    """
    if event not in EVENTS:
        raise ValueError(f"event must be one of {EVENTS}, not {event!r}")
    sent = {"email": False, "webhook": False}
    try:
        if not run.owner or not Path(accounts_db).is_file():
            return sent
        try:
            user = accounts.get_user(accounts_db, run.owner)
        except accounts.UserNotFound:
            return sent
        if not user.is_active:
            return sent
        base = base_url or settings["BASE_URL"]
        if user.notify_email and settings["SMTP_HOST"]:
            subject, body = run_email(run, event, base)
            sent["email"] = send_email(settings, user.email, subject, body)
        if user.webhook_url:
            sent["webhook"] = post_webhook(
                user.webhook_url,
                webhook_payload(run, event, base),
                allow_private=bool(settings["WEBHOOK_ALLOW_PRIVATE"]),
            )
    except Exception:  # e.g. the accounts database is locked or damaged
        log.exception("notifying run %s %s failed", run.id, event)
    return sent


class RunNotifier:
    """A run's notifications from the job runner, sent from background threads.

    ``db_path`` is the run database; the accounts database is the one beside it (both live in
    ``REGIO_SESSIONS``). ``settings`` None: the worker's own, loaded in the background thread.
    No method raises: failures are logged.
    """

    def __init__(
        self, db_path: Path | str, settings: Mapping[str, Any] | None = None,
        end_wait: float = END_WAIT,
    ) -> None:  # fmt: skip
        self.db_path = Path(db_path)
        self.accounts_db = self.db_path.parent / accounts.DB_NAME
        self.settings = settings
        self.end_wait = end_wait
        self.threads: list[threading.Thread] = []

    def started(self, run: Run) -> None:
        """Notify that ``run`` started (returns at once)."""
        self._spawn(run, "started")

    def ended(self, run: Run) -> None:
        """Notify that ``run`` ended, if its record is final; waits up to ``end_wait`` seconds.

        ``run`` is the record as the caller last saw it: the final one is read again, unless the
        run has no owner (then this returns at once).
        """
        if not run.owner:
            return
        try:
            final = runs.get(self.db_path, run.id)
            if final.terminal:
                self._spawn(final, "ended")
        except Exception:
            log.exception("notifying the end of run %s failed", run.id)
        self.wait(self.end_wait)

    def wait(self, timeout: float) -> bool:
        """Wait for the notifications under way; False if some are still going after ``timeout``."""
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.threads = [t for t in self.threads if t.is_alive()]
        if self.threads:
            log.warning("%d notification(s) still under way after %g s", len(self.threads), timeout)
        return not self.threads

    def _spawn(self, run: Run, event: str) -> None:
        if not run.owner:  # single-user mode: nobody to tell, no thread
            return
        try:
            thread = threading.Thread(
                target=self._send, args=(run, event), name=f"regio-notify-{run.id}", daemon=True
            )
            thread.start()
            self.threads.append(thread)
        except Exception:
            log.exception("notifying run %s %s failed", run.id, event)

    def _send(self, run: Run, event: str) -> None:
        try:
            if self.settings is None:
                from app import settings as settings_mod

                self.settings = settings_mod.load()
            notify_run(run, event, self.settings, self.accounts_db)
        except Exception:
            log.exception("notifying run %s %s failed", run.id, event)
