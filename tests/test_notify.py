"""Run notifications and reset e-mails, delivered to a real SMTP server and a real HTTP receiver.

The SMTP server is aiosmtpd on a free port; the webhook receiver is ``http.server`` in a thread.
The last test runs real scripts on a real ``rq worker`` and checks what the job runner sends.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from aiosmtpd.controller import Controller
from rq import Worker

from app import accounts, catalog, jobs, notify, runs, settings
from app.redis_server import free_port
from app.runs import COMPLETED, ERROR, EXECUTING, Run
from tests.conftest import ROOT

BASE = "https://regio.example"
SMTP_PASSWORD = "smtp-secret-do-not-log"
HOOK_SECRET = "T000/B000/hook-secret-do-not-log"
DEADLINE = 30.0


def wait_for(condition: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


# ------------------------------------------------------------------------------- receivers


class Mailbox:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"

    def bodies(self) -> list[str]:
        return [m.get_content() for m in self.messages]

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


class Hooks:
    """What the webhook receiver got, and how it answers (by path)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.url = ""


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    received = Hooks()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.requests.append(
                {"path": self.path, "headers": dict(self.headers), "json": json.loads(body)}
            )
            status = {"/fail": 500, "/redirect": 302}.get(self.path.split("?")[0], 204)
            if self.path == "/slow":
                time.sleep(1.5)
            try:
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", f"{received.url}/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:  # the client gave up (the timeout test)
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received
    server.shutdown()
    server.server_close()
    thread.join()


# ------------------------------------------------------------------------------ fixtures


def make_settings(smtp_port: int, **overrides: Any) -> dict[str, Any]:
    values = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": smtp_port, "BASE_URL": BASE,
              "WEBHOOK_ALLOW_PRIVATE": True, "MAIL_FROM": "regio@regio.example"}  # fmt: skip
    values.update(overrides)
    return settings.load(values, environ={})


@pytest.fixture
def db(tmp_path) -> Path:
    return accounts.db_path(tmp_path / "sessions")


@pytest.fixture
def owner(db, hooks) -> accounts.User:
    user = accounts.create_user(db, "marie@lab.example", "Marie Curie", "radium and polonium")
    return accounts.update_profile(db, user.id, webhook_url=f"{hooks.url}/hook/{HOOK_SECRET}")


def a_run(owner_id: str, **changes: Any) -> Run:
    run = Run(
        id="run000000001", session_id="sessionAAAA1", owner=owner_id, script="spectra",
        script_version="1.2", params={}, run_dir="/nowhere", phase=EXECUTING,
        created="2025-01-31T12:00:00.000Z", started="2025-01-31T12:00:01.000Z",
    )  # fmt: skip
    for name, value in changes.items():
        setattr(run, name, value)
    return run


LINKS = {
    "session": f"{BASE}/sessions/sessionAAAA1?run=run000000001",
    "run": f"{BASE}/api/runs/run000000001",
    "products": f"{BASE}/api/runs/run000000001/products",
}


# ---------------------------------------------------------------------------- notify_run


def test_start_and_successful_end_arrive_by_mail_and_webhook(db, owner, smtp, hooks):
    mailbox, port = smtp
    values = make_settings(port)
    assert notify.notify_run(a_run(owner.id), "started", values, db) == {
        "email": True,
        "webhook": True,
    }
    done = a_run(owner.id, phase=COMPLETED, stage="plot", ended="2025-01-31T12:05:00.000Z")
    assert notify.notify_run(done, "ended", values, db) == {"email": True, "webhook": True}

    assert mailbox.subjects() == ["Run run000000001 of spectra started",
                                  "Run run000000001 of spectra completed"]  # fmt: skip
    assert mailbox.recipients == [["marie@lab.example"], ["marie@lab.example"]]
    first, second = mailbox.messages
    assert (first["To"], first["From"]) == ("marie@lab.example", "regio@regio.example")
    started, ended = mailbox.bodies()
    assert LINKS["session"] in started
    assert LINKS["session"] in ended and LINKS["products"] in ended

    assert [r["path"] for r in hooks.requests] == [f"/hook/{HOOK_SECRET}"] * 2
    assert hooks.requests[0]["headers"]["Content-Type"] == "application/json"
    start, end = (r["json"] for r in hooks.requests)
    assert start["event"] == "started" and end["event"] == "ended"
    assert end["links"] == LINKS
    assert end["run"] == {
        "id": "run000000001", "session_id": "sessionAAAA1", "script": "spectra",
        "script_version": "1.2", "phase": "COMPLETED", "stage": "plot", "error": None,
        "failing_stage": None, "started": "2025-01-31T12:00:01.000Z",
        "ended": "2025-01-31T12:05:00.000Z",
    }  # fmt: skip


def test_a_failure_names_the_failing_stage_and_the_error(db, owner, smtp, hooks):
    mailbox, port = smtp
    error = "stage 'extract' failed: no events in the source region"
    failed = a_run(owner.id, phase=ERROR, stage="extract", failing_stage="extract", error=error,
                   ended="2025-01-31T12:05:00.000Z")  # fmt: skip
    assert notify.notify_run(failed, "ended", make_settings(port), db)["email"]
    assert mailbox.subjects() == ["Run run000000001 of spectra failed at stage 'extract'"]
    [body] = mailbox.bodies()
    assert f"Error: {error}" in body
    assert LINKS["session"] in body and LINKS["run"] in body
    [hook] = hooks.requests
    assert hook["json"]["run"]["failing_stage"] == "extract"
    assert hook["json"]["run"]["error"] == error
    assert hook["json"]["run"]["phase"] == "ERROR"


def test_opt_out_sends_no_mail(db, owner, smtp, hooks):
    mailbox, port = smtp
    accounts.update_profile(db, owner.id, notify_email=False)
    assert notify.notify_run(a_run(owner.id), "started", make_settings(port), db) == {
        "email": False,
        "webhook": True,
    }
    accounts.update_profile(db, owner.id, webhook_url="")
    assert notify.notify_run(a_run(owner.id), "started", make_settings(port), db) == {
        "email": False,
        "webhook": False,
    }
    assert mailbox.messages == []
    assert len(hooks.requests) == 1


def test_nothing_is_sent_without_a_known_active_owner(db, owner, smtp, hooks, tmp_path):
    mailbox, port = smtp
    values = make_settings(port)
    nothing = {"email": False, "webhook": False}
    assert notify.notify_run(a_run(""), "started", values, db) == nothing
    assert notify.notify_run(a_run("nobody"), "started", values, db) == nothing
    missing_db = tmp_path / "elsewhere" / accounts.DB_NAME
    assert notify.notify_run(a_run(owner.id), "started", values, missing_db) == nothing
    assert not missing_db.exists()  # a worker never creates an accounts database
    accounts.set_active(db, owner.id, False)
    assert notify.notify_run(a_run(owner.id), "started", values, db) == nothing
    # no mail server configured: no mail
    accounts.set_active(db, owner.id, True)
    accounts.update_profile(db, owner.id, webhook_url="")
    assert notify.notify_run(a_run(owner.id), "started", make_settings(port, SMTP_HOST=""), db) == (
        nothing
    )
    assert mailbox.messages == [] and hooks.requests == []
    with pytest.raises(ValueError, match="event must be one of"):
        notify.notify_run(a_run(owner.id), "finished", values, db)


def test_unreachable_mail_server_and_failing_webhooks_are_logged_not_raised(
    db, owner, hooks, caplog
):
    caplog.set_level(logging.WARNING, logger="regio.notify")
    dead_port = free_port()  # nothing listens there
    values = make_settings(dead_port, SMTP_USER="regio", SMTP_PASSWORD=SMTP_PASSWORD)
    for url in (f"{hooks.url}/fail?key={HOOK_SECRET}", f"http://127.0.0.1:{free_port()}/x"):
        accounts.update_profile(db, owner.id, webhook_url=url)
        assert notify.notify_run(a_run(owner.id), "started", values, db) == {
            "email": False,
            "webhook": False,
        }
    text = caplog.text
    assert f"through 127.0.0.1:{dead_port}: ConnectionRefusedError" in text
    assert f"webhook {hooks.url}/... answered HTTP 500" in text
    assert "ConnectionRefusedError" in text.split("webhook http://127.0.0.1:")[-1]
    assert SMTP_PASSWORD not in text and HOOK_SECRET not in text
    assert [r["path"] for r in hooks.requests] == [f"/fail?key={HOOK_SECRET}"]


def test_tls_and_login_are_never_skipped(db, owner, smtp, caplog):
    """A server without STARTTLS or AUTH gets nothing rather than a password in clear text."""
    caplog.set_level(logging.WARNING, logger="regio.notify")
    mailbox, port = smtp
    accounts.update_profile(db, owner.id, webhook_url="")
    for values in (
        make_settings(port, SMTP_STARTTLS=True),
        make_settings(port, SMTP_USER="regio", SMTP_PASSWORD=SMTP_PASSWORD),
    ):
        assert notify.notify_run(a_run(owner.id), "started", values, db)["email"] is False
    assert mailbox.messages == []
    assert caplog.text.count("could not send the e-mail") == 2
    assert SMTP_PASSWORD not in caplog.text


def test_webhooks_do_not_follow_redirects_or_wait_long(hooks, caplog):
    caplog.set_level(logging.WARNING, logger="regio.notify")
    assert not notify.post_webhook(f"{hooks.url}/redirect", {"a": 1}, allow_private=True)
    assert [r["path"] for r in hooks.requests] == ["/redirect"]  # /elsewhere never asked
    assert "answered HTTP 302" in caplog.text
    assert not notify.post_webhook(f"{hooks.url}/slow", {"a": 1}, allow_private=True, timeout=0.3)
    assert "TimeoutError" in caplog.text


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://localhost:9/x",
        "http://[::1]:9/x",
        "http://[::ffff:127.0.0.1]:9/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0:9/x",
    ],
)
def test_webhooks_to_private_addresses_are_refused_by_default(url, caplog):
    caplog.set_level(logging.WARNING, logger="regio.notify")
    assert not notify.post_webhook(url, {"a": 1})
    assert "resolves to a non-public address" in caplog.text


def test_webhook_urls_other_than_http_are_refused(caplog):
    caplog.set_level(logging.WARNING, logger="regio.notify")
    for url in ("file:///etc/passwd", "gopher://x.example/", "http://[::1"):
        assert not notify.post_webhook(url, {}, allow_private=True)
    assert caplog.text.count("failed: AccountError") == 3


def test_reset_email_carries_the_link(smtp):
    mailbox, port = smtp
    link = f"{BASE}/account/reset/abcdefgh"
    assert notify.send_reset_email(make_settings(port), "marie@lab.example", link)
    [message] = mailbox.messages
    assert message["Subject"] == "Reset your Regio password"
    assert link in message.get_content()
    assert not notify.send_reset_email(make_settings(port, SMTP_HOST=""), "marie@lab.example", link)


def test_the_notifier_does_not_wait_past_its_limit(db, owner, hooks, caplog, tmp_path):
    caplog.set_level(logging.WARNING, logger="regio.notify")
    accounts.update_profile(db, owner.id, webhook_url=f"{hooks.url}/slow", notify_email=False)
    notifier = notify.RunNotifier(db.parent / runs.DB_NAME, make_settings(free_port()))
    started = time.monotonic()
    notifier.started(a_run(owner.id))
    assert time.monotonic() - started < 1.0  # sent in the background (the receiver takes 1.5 s)
    assert not notifier.wait(0.1)
    assert "1 notification(s) still under way" in caplog.text
    assert notifier.wait(DEADLINE)
    assert len(hooks.requests) == 1


# ------------------------------------------------------------------------ the job runner


@pytest.fixture
def worker(redis_url, tmp_path, smtp) -> Iterator[subprocess.Popen]:
    """A real rq worker whose environment points notifications at the test receivers."""
    _mailbox, port = smtp
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIO_")}
    env.update(PYTHONPATH=str(ROOT), REGIO_SMTP_HOST="127.0.0.1", REGIO_SMTP_PORT=str(port),
               REGIO_BASE_URL=BASE, REGIO_WEBHOOK_ALLOW_PRIVATE="1")  # fmt: skip
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            jobs.worker_command(redis_url, name="notify-w1"),
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    with redis.Redis.from_url(redis_url) as conn:

        def registered() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the worker exited: {log_path.read_text()[-3000:]}")
            return "notify-w1" in {w.name for w in Worker.all(connection=conn)}

        wait_for(registered, "the worker to register")
    yield proc
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_the_job_runner_notifies_start_and_end(db, owner, smtp, hooks, redis_url, worker):
    mailbox, _port = smtp
    scripts = ROOT / "tests" / "scripts"
    cat = catalog.load_catalog(scripts)
    run_db = db.parent / runs.DB_NAME  # the accounts database is the one beside it
    launched = []
    with redis.Redis.from_url(redis_url) as conn:
        for name, params, owner_id in (
            ("stages", {"steps": 1}, owner.id),
            ("fails", {"how": "fail"}, owner.id),
            ("stages", {"steps": 1}, ""),  # no owner (single-user mode): no notification
        ):
            script = cat[name]
            run_id = runs.new_run_id()
            run = runs.create(
                run_db, run_db.parent / "sessionAAAA1" / run_id, run_id=run_id,
                session_id="sessionAAAA1", script=script, owner=owner_id,
                params=catalog.validate_params(script, params),
            )  # fmt: skip
            jobs.enqueue(run, script, conn, run_db, scripts_dir=scripts)
            launched.append(run)

    finished = wait_for(
        lambda: all(runs.get(run_db, r.id).terminal for r in launched) and launched,
        "the runs to end",
    )
    ok, failed, _anonymous = (runs.get(run_db, r.id) for r in finished)
    assert (ok.phase, failed.phase, failed.failing_stage) == (COMPLETED, ERROR, "extract")
    wait_for(lambda: len(mailbox.messages) >= 4 and len(hooks.requests) >= 4, "4 mails, 4 hooks")
    time.sleep(0.5)  # nothing else arrives (e.g. for the run without an owner)
    assert sorted(mailbox.subjects()) == sorted(
        [
            f"Run {ok.id} of stages started",
            f"Run {ok.id} of stages completed",
            f"Run {failed.id} of fails started",
            f"Run {failed.id} of fails failed at stage 'extract'",
        ]
    )
    events = sorted((r["json"]["run"]["id"], r["json"]["event"]) for r in hooks.requests)
    assert events == sorted(
        [(ok.id, "started"), (ok.id, "ended"), (failed.id, "started"), (failed.id, "ended")]
    )
    [failure] = [m for m in mailbox.messages if "failed" in str(m["Subject"])]
    assert "no events in the source region" in failure.get_content()
    assert f"{BASE}/sessions/sessionAAAA1?run={failed.id}" in failure.get_content()


@pytest.mark.parametrize(
    ("changes", "subject", "in_body"),
    [
        ({"phase": "ABORTED", "error": "cancelled"}, "Run run000000001 of spectra was cancelled",
         "was cancelled at 2025-01-31T12:05:00.000Z: cancelled"),
        ({"phase": ERROR, "error": "the script cannot start: no such file"},
         "Run run000000001 of spectra failed before any stage",
         "Error: the script cannot start: no such file"),
        ({"phase": ERROR, "error": "x" * 5000, "failing_stage": "fit"},
         "Run run000000001 of spectra failed at stage 'fit'", "Error: " + "x" * 2000 + "\n"),
        ({"phase": COMPLETED, "script": "evil\r\nBcc: someone@else.example"},
         "Run run000000001 of evil Bcc: someone@else.example completed", LINKS["products"]),
    ],
)  # fmt: skip
def test_end_messages_for_every_outcome(changes, subject, in_body):
    run = a_run("someone", ended="2025-01-31T12:05:00.000Z", **changes)
    got_subject, body = notify.run_email(run, "ended", BASE + "/")
    assert got_subject == subject  # one line: nothing can be smuggled into the headers
    assert in_body in body
