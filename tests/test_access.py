"""Accounts mode: who may do what. The access matrix over the API and pages, tokens, CSRF,
sign-in throttling (per client, never a lock-out of the account), the throttled current-password
check, password rules, and single-user mode staying open."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from app import accounts, auth, create_app, ratelimit, runs
from app.catalog import load_script
from tests.conftest import ROOT, app_settings

PASSWORD = "correct horse battery staple"
SCRIPTS = ROOT / "tests" / "scripts"


@pytest.fixture
def app(tmp_path, sample_index, redis_url):
    settings = app_settings(tmp_path, sample_index, redis_url, SCRIPTS)
    return create_app({**settings, "AUTH": "accounts", "SIGNUP": True})


@pytest.fixture
def world(app, sample_archive):
    """Users with tokens, a session of the owner shared with two collaborators, a run, a link."""
    import json

    db = accounts.db_path(app.extensions["regio.settings"]["SESSIONS"])
    people = {}
    for who in ("owner", "reader", "writer", "other", "staff"):
        user = accounts.create_user(
            db, f"{who}@example.org", who.title(), PASSWORD, staff=who == "staff"
        )
        people[who] = {"Authorization": f"Token {accounts.create_token(db, user.id, 'test')}"}
    client = app.test_client()
    truth = json.loads((sample_archive / "truth.json").read_text())
    src = next(s for s in truth["sources"] if s["kind"] == "point")
    response = client.post(
        "/api/sessions",
        json={"source": f'icrs;circle({src["ra"]},{src["dec"]},30")'},
        headers=people["owner"],
    )
    assert response.status_code == 201, response.get_json()
    sid = response.get_json()["id"]
    for who, role in (("reader", "read"), ("writer", "write")):
        response = client.post(
            f"/api/sessions/{sid}/collaborators",
            json={"email": f"{who}@example.org", "role": role},
            headers=people["owner"],
        )
        assert response.status_code == 201
    link = client.post(f"/api/sessions/{sid}/share-links", headers=people["owner"]).get_json()
    people["anonymous"] = {}
    people["link"] = {"X-Regio-Share": link["secret"]}
    settings = app.extensions["regio.settings"]
    run = runs.create(
        runs.db_path(settings["SESSIONS"]),
        settings["SESSIONS"] / sid / "runs" / "abcdefgh1234",
        run_id="abcdefgh1234",
        session_id=sid,
        script=load_script(SCRIPTS, "stages"),
        params={},
    )
    return {"client": client, "headers": people, "sid": sid, "rid": run.id, "link": link}


OK, FORBIDDEN, HIDDEN, LOGIN = "ok", 403, 404, 401
WHO = ("owner", "reader", "writer", "other", "anonymous", "link", "staff")
# expected outcome per identity, in the order of WHO
READ = (OK, OK, OK, HIDDEN, LOGIN, OK, OK)
WRITE = (OK, FORBIDDEN, OK, HIDDEN, LOGIN, LOGIN, OK)
OWNER = (OK, FORBIDDEN, FORBIDDEN, HIDDEN, LOGIN, FORBIDDEN, OK)
OWNER_WRITE = (OK, FORBIDDEN, FORBIDDEN, HIDDEN, LOGIN, LOGIN, OK)
PAGE = (OK, OK, OK, HIDDEN, 302, OK, OK)  # anonymous visitors of pages go to the login page

MATRIX = [
    ("get", "/sessions/{sid}", None, PAGE),
    ("get", "/runs/{rid}/plot/none.pha", None, (404, 404, 404, 404, 302, 404, 404)),
    ("get", "/api/sessions/{sid}", None, READ),
    ("get", "/api/sessions/{sid}/runs", None, READ),
    ("get", "/api/runs/{rid}", None, READ),
    ("get", "/api/runs/{rid}/log", None, READ),
    ("get", "/api/runs/{rid}/events?offset=0", None, READ),
    ("get", "/api/runs/{rid}/products", None, READ),
    ("get", "/api/runs/{rid}/bundle.zip", None, READ),
    ("put", "/api/sessions/{sid}/view", {"ra": 1, "dec": 2, "fov": 1}, WRITE),
    ("put", "/api/sessions/{sid}/selection", {"exposures": []}, WRITE),
    ("put", "/api/sessions/{sid}/regions", {"source": 'icrs;circle(1,2,3")'}, WRITE),
    ("post", "/api/sessions/{sid}/runs", {"script": "nonexistent"}, WRITE),
    ("get", "/api/sessions/{sid}/collaborators", None, OWNER),
    ("get", "/api/sessions/{sid}/share-links", None, OWNER),
    ("post", "/api/sessions/{sid}/share-links", None, OWNER_WRITE),
    (
        "post",
        "/api/sessions/{sid}/collaborators",
        {"email": "x@example.org", "role": "read"},
        OWNER_WRITE,
    ),
]


def outcome(status: int):
    if status in (200, 201, 202, 204, 400, 409):  # 400/409: allowed in, then a request problem
        return OK
    return status


@pytest.mark.parametrize(("method", "path", "body", "expected"), MATRIX)
def test_access_matrix(world, method, path, body, expected):
    client = world["client"]
    url = path.format(sid=world["sid"], rid=world["rid"])
    seen = {}
    for who in WHO:
        kwargs = {"headers": world["headers"][who]}
        if body is not None:
            kwargs["json"] = body
        with getattr(client, method)(url, **kwargs, buffered=False) as response:
            seen[who] = outcome(response.status_code)
    assert seen == dict(zip(WHO, expected, strict=True))


def test_cancel_follows_write_access(world):
    client, url = world["client"], f"/api/runs/{world['rid']}/cancel"
    for who, expected in (("reader", 403), ("other", 404), ("anonymous", 401), ("link", 401)):
        assert client.post(url, headers=world["headers"][who]).status_code == expected, who
    assert client.post(url, headers=world["headers"]["writer"]).status_code == 200
    assert (
        client.get(f"/api/runs/{world['rid']}", headers=world["headers"]["owner"]).get_json()[
            "phase"
        ]
        == "ABORTED"
    )


def test_session_lists_show_only_what_one_may_see(world):
    client, sid = world["client"], world["sid"]
    ids = {
        who: [
            s["id"] for s in client.get("/api/sessions", headers=world["headers"][who]).get_json()
        ]
        for who in ("owner", "reader", "other", "staff")
    }
    assert ids == {"owner": [sid], "reader": [sid], "other": [], "staff": [sid]}


def test_revoked_tokens_and_links_stop_working(world, app):
    client = world["client"]
    db = accounts.db_path(app.extensions["regio.settings"]["SESSIONS"])
    owner = accounts.get_user_by_email(db, "owner@example.org")
    secret = accounts.create_token(db, owner.id, "short-lived")
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/sessions", headers=headers).status_code == 200
    token = next(t for t in accounts.list_tokens(db, owner.id) if t.name == "short-lived")
    accounts.revoke_token(db, owner.id, token.id)
    response = client.get("/api/sessions", headers=headers)
    assert response.status_code == 401
    assert "not valid" in response.get_json()["message"]
    link = accounts.list_share_links(db, world["sid"])[0]
    accounts.revoke_share_link(db, world["sid"], link.id)
    response = client.get(f"/api/sessions/{world['sid']}", headers=world["headers"]["link"])
    assert response.status_code == 404


def _csrf(client, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_login_with_csrf_then_cookie_access(world):
    client = world["client"].application.test_client()
    token = _csrf(client, "/login")
    response = client.post(
        "/login", data={"email": "owner@example.org", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302
    assert client.get(f"/api/sessions/{world['sid']}").status_code == 200
    # a cookie-authenticated write needs the CSRF token
    view = {"ra": 1, "dec": 2, "fov": 1}
    assert client.put(f"/api/sessions/{world['sid']}/view", json=view).status_code == 403
    page_token = _csrf(client, "/account")
    response = client.put(
        f"/api/sessions/{world['sid']}/view", json=view, headers={"X-CSRF-Token": page_token}
    )
    assert response.status_code == 200
    # a cross-site form post is refused even with the token
    response = client.post(
        "/account",
        data={"action": "profile", "name": "x", "csrf_token": page_token},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403


def test_form_posts_without_csrf_are_refused(world):
    client = world["client"].application.test_client()
    client.get("/login")
    response = client.post("/login", data={"email": "owner@example.org", "password": PASSWORD})
    assert response.status_code == 403


def _client_at(world, address: str):
    """A fresh browser at ``address`` with the login page's CSRF token; ``login(email, pw)``."""
    client = world["client"].application.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    token = _csrf(client, "/login")

    def login(email: str, password: str):
        return client.post(
            "/login", data={"email": email, "password": password, "csrf_token": token}
        )

    return client, login


# Back-off rules of the tests: the real free counts, but a first block of a minute, so that a
# slow (shared) machine never sees a block end before the test's next request.
SLOW = {"base_s": 60, "cap_s": 900, "memory_s": 3600}


def test_wrong_passwords_from_one_client_never_lock_the_user_out_elsewhere(world, monkeypatch):
    free = auth.LOGIN_PAIR_BACKOFF.free
    monkeypatch.setattr(auth, "LOGIN_PAIR_BACKOFF", ratelimit.BackOff(free, **SLOW))
    _attacker, guess = _client_at(world, "203.0.113.7")
    codes = [guess("owner@example.org", f"guess {i}").status_code for i in range(free + 3)]
    # the free failures, one more that starts the back-off, then refused without a check
    assert codes == [401] * (free + 1) + [429, 429]
    response = guess("owner@example.org", PASSWORD)  # the attacker's client waits, even if right
    assert response.status_code == 429 and 1 <= int(response.headers["Retry-After"]) <= 60
    assert "try again in" in response.get_data(as_text=True)
    # the owner, from another address, signs in at once, and a typo does not hurt either
    owner, login = _client_at(world, "198.51.100.20")
    assert login("owner@example.org", "a typo").status_code == 401
    assert login("owner@example.org", PASSWORD).status_code == 302
    assert owner.get(f"/api/sessions/{world['sid']}").status_code == 200
    # the back-off is per (client, account): the attacker's client may still sign in elsewhere
    assert guess("writer@example.org", PASSWORD).status_code == 302


def test_a_client_guessing_across_accounts_backs_off_alone(world, monkeypatch):
    monkeypatch.setattr(auth, "LOGIN_CLIENT_BACKOFF", ratelimit.BackOff(2, **SLOW))
    _attacker, guess = _client_at(world, "2001:db8:1:2::7")
    codes = [guess(f"{who}@example.org", "guess").status_code for who in WHO[:4]]
    assert codes == [401, 401, 401, 429]  # blocked for every account, one failure each
    # the same /64 is the same client (one host owns it), another /64 is not
    _same, same = _client_at(world, "2001:db8:1:2:ffff::1")
    assert same("owner@example.org", PASSWORD).status_code == 429
    _other, other = _client_at(world, "2001:db8:1:3::7")
    assert other("owner@example.org", PASSWORD).status_code == 302


def test_a_successful_sign_in_forgets_the_failures_of_its_client_and_account(world):
    free = auth.LOGIN_PAIR_BACKOFF.free
    _client, login = _client_at(world, "192.0.2.1")
    for _ in range(free):
        assert login("owner@example.org", "typo").status_code == 401
    assert login("owner@example.org", PASSWORD).status_code == 302
    _client, login = _client_at(world, "192.0.2.1")
    for _ in range(free):  # free again: no back-off yet
        assert login("owner@example.org", "typo").status_code == 401


def test_a_malformed_address_at_sign_in_is_a_400_and_no_failure(world, app):
    _client, login = _client_at(world, "192.0.2.77")
    bad = ["not-an-address", "", "a@b", "owner@example.org\x00", "x" * 400 + "@example.org"]
    for _ in range(2):
        for email in bad:
            response = login(email, PASSWORD)
            assert response.status_code == 400, email
            assert "not an e-mail address" in response.get_data(as_text=True)
    conn = app.extensions["regio.redis"]
    assert auth.LOGIN_CLIENT_BACKOFF.failures(conn, "login:client:192.0.2.77") == 0
    assert login("owner@example.org", PASSWORD).status_code == 302  # nothing held against it


def test_login_attempts_per_client_are_capped(world, monkeypatch):
    monkeypatch.setattr(auth, "LOGIN_ATTEMPTS", (3, 300))
    logins = [_client_at(world, "192.0.2.9")[1] for _ in range(4)]  # one browser each
    codes = [login("owner@example.org", PASSWORD).status_code for login in logins]
    assert codes == [302, 302, 302, 429]  # hashing costs CPU: successes count too
    _client, login = _client_at(world, "192.0.2.10")
    assert login("owner@example.org", PASSWORD).status_code == 302


def _logged_in(world, email: str = "owner@example.org", address: str = "192.0.2.50"):
    client, login = _client_at(world, address)
    assert login(email, PASSWORD).status_code == 302
    return client, _csrf(client, "/account")


def test_the_current_password_check_is_throttled(world, app, monkeypatch):
    free = auth.PASSWORD_CHECK_BACKOFF.free
    monkeypatch.setattr(auth, "PASSWORD_CHECK_BACKOFF", ratelimit.BackOff(free, **SLOW))
    db = accounts.db_path(app.extensions["regio.settings"]["SESSIONS"])
    client, token = _logged_in(world)
    new = "a brand new long password"

    def change(current: str):
        data = {"action": "password", "current": current, "password": new, "csrf_token": token}
        return client.post("/account", data=data)

    for _ in range(free + 1):
        response = change("not my password")
        assert response.status_code == 200
        assert "the current password is wrong" in response.get_data(as_text=True)
    response = change(PASSWORD)  # blocked: not even checked
    assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
    assert "too many wrong current passwords" in response.get_data(as_text=True)
    assert accounts.authenticate(db, "owner@example.org", PASSWORD) is not None
    assert accounts.authenticate(db, "owner@example.org", new) is None
    # another user is not affected; a right password resets the count
    other, other_token = _logged_in(world, "writer@example.org", "192.0.2.51")
    data = {"action": "password", "current": PASSWORD, "password": new, "csrf_token": other_token}
    response = other.post("/account", data=data)
    assert response.status_code == 200 and "Password changed." in response.get_data(as_text=True)
    assert accounts.authenticate(db, "writer@example.org", new) is not None
    # once the block has passed, the right current password works
    auth_key = f"password-check:{accounts.get_user_by_email(db, 'owner@example.org').id}"
    conn = app.extensions["regio.redis"]
    conn.delete(ratelimit.KEY_PREFIX + f"backoff:{auth_key}:blocked")
    response = change(PASSWORD)
    assert response.status_code == 200 and "Password changed." in response.get_data(as_text=True)
    assert auth.PASSWORD_CHECK_BACKOFF.failures(conn, auth_key) == 0


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "at least 8 characters"),
        ("1234567890", "entirely numeric"),
        ("password123", "too common"),
        ("newcomer@example.org", "too similar"),
    ],
)
def test_signup_enforces_password_rules(world, password, message):
    client = world["client"].application.test_client()
    token = _csrf(client, "/signup")
    response = client.post(
        "/signup",
        data={"name": "Newcomer", "email": "newcomer@example.org", "password": password,
              "password2": password, "csrf_token": token},
    )  # fmt: skip
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


def test_pages_need_login_and_admin_is_staff_only(world):
    client = world["client"]
    response = client.get("/account")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert client.get("/admin/", headers=world["headers"]["owner"]).status_code == 404
    response = client.get("/admin/", headers=world["headers"]["staff"])
    assert response.status_code == 200
    assert "owner@example.org" in response.get_data(as_text=True)
    assert client.get("/api/openapi.json").status_code == 200
    assert client.get("/api/observations").status_code == 401


def test_security_headers(world):
    response = world["client"].get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "'wasm-unsafe-eval'" in csp and "default-src 'self'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    cookie = response.headers.get("Set-Cookie", "")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_single_user_mode_needs_no_login(tmp_path, sample_index, redis_url):
    app = create_app(
        {
            "INDEX": sample_index,
            "REDIS_URL": redis_url,
            "INSTANCE": tmp_path,
            "SESSIONS": tmp_path / "s",
        }
    )
    client = app.test_client()
    assert client.get("/api/sessions").status_code == 200
    assert client.get("/login").status_code == 404
    response = client.post(
        "/api/sessions",
        json={"source": 'icrs;circle(1,2,3")'},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert response.status_code == 403, "a cross-site browser request is refused"


def test_password_reset_by_e_mailed_link(tmp_path, sample_index, redis_url):
    from tests.test_notify import Controller, Mailbox, free_port

    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        app = create_app(
            {"INDEX": sample_index, "REDIS_URL": redis_url, "INSTANCE": tmp_path,
             "SESSIONS": tmp_path / "s", "AUTH": "accounts", "SMTP_HOST": "127.0.0.1",
             "SMTP_PORT": port, "BASE_URL": "http://regio.example"}
        )  # fmt: skip
        db = accounts.db_path(tmp_path / "s")
        accounts.create_user(db, "ana@example.org", "Ana", PASSWORD)
        client = app.test_client()
        for email in ("ana@example.org", "nobody@example.org"):
            token = _csrf(client, "/password-reset")
            response = client.post("/password-reset", data={"email": email, "csrf_token": token})
            assert response.status_code == 302  # the same answer for both: no address enumeration
        assert len(mailbox.messages) == 1 and mailbox.recipients == [["ana@example.org"]]
        link = re.search(r"http://regio\.example(/password-reset/\S+)", mailbox.bodies()[0]).group(
            1
        )
        token = _csrf(client, link)
        new = "a new and rather long password"
        response = client.post(link, data={"password": new, "password2": new, "csrf_token": token})
        assert response.status_code == 302
        assert accounts.authenticate(db, "ana@example.org", new) is not None
        assert accounts.authenticate(db, "ana@example.org", PASSWORD) is None
        token = _csrf(client, link)
        response = client.post(link, data={"password": new, "password2": new, "csrf_token": token})
        assert response.status_code == 400, "a reset link works once"
    finally:
        controller.stop()


def test_staff_cancel_any_run_from_the_admin_page(world, app):
    client, rid = world["client"], world["rid"]
    response = client.post(f"/admin/runs/{rid}/cancel", headers=world["headers"]["other"])
    assert response.status_code == 404
    response = client.post(f"/admin/runs/{rid}/cancel", headers=world["headers"]["staff"])
    assert response.status_code == 302
    run = client.get(f"/api/runs/{rid}", headers=world["headers"]["owner"]).get_json()
    assert run["phase"] == "ABORTED"


# ------------------------------------------------------------------------- secrets and logs

SHARE = "Qk3xY7mN0pR2sT4uV6wX8yZ1aB5cD9eF"  # the shape of a share or reset secret
TOKEN = "regio_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0U1v"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"GET /share/{SHARE} HTTP/1.1", "GET /share/[redacted] HTTP/1.1"),
        (
            f"GET /password-reset/{SHARE}?x=1 HTTP/1.1",
            "GET /password-reset/[redacted]?x=1 HTTP/1.1",
        ),
        (f"http://h:5000/password-reset/{SHARE}", "http://h:5000/password-reset/[redacted]"),
        (f"/%73hare/{SHARE}", "/share/[redacted]"),  # the server decodes it and opens the link
        (f"GET /%73hare/{SHARE} HTTP/1.1", "GET /share/[redacted] HTTP/1.1"),
        (f"/share/{SHARE[:8]}%41{SHARE[8:]}", "/share/[redacted]"),
        (f"/login?next=%2Fshare%2F{SHARE}", "/login?next=/share/[redacted]"),
        (f"/api/sessions?token={TOKEN}&x=1", "/api/sessions?token=[redacted]&x=1"),
        (f"/x?a=1&secret={SHARE}", "/x?a=1&secret=[redacted]"),
        (f"share={SHARE}&a=1", "share=[redacted]&a=1"),  # a query string alone (gunicorn's %(q)s)
        (f"Authorization: Token {TOKEN}", "Authorization: Token regio_[redacted]"),
        ("rediss://:hunter2-pw@redis.example:6379/0", "rediss://:[redacted]@redis.example:6379/0"),
        ("smtp://user:pw@mail.example", "smtp://user:[redacted]@mail.example"),
        # what is not a secret stays as it is
        ("DELETE /api/sessions/SID/share-links/abc123 HTTP/1.1", None),
        ("GET /password-reset HTTP/1.1", None),
        ("GET /sessions/ExjmwTZOYgXC?offset=3 HTTP/1.1", None),
        ("redis://redis.example:6379/0", None),
        ("100%25 done, a%zz b", None),
    ],
)
def test_redact_finds_the_secrets_and_only_them(text, expected):
    from app.redaction import redact

    assert redact(text) == (text if expected is None else expected)
    assert redact(redact(text)) == redact(text)  # the log filter may see it again


def test_the_app_logger_redacts_secrets(app, caplog):
    caplog.set_level("INFO")
    app.logger.error("Exception on %s [%s]", f"/password-reset/{SHARE}", "POST")
    try:
        raise RuntimeError(f"while opening /share/{SHARE} with {TOKEN}")
    except RuntimeError:
        app.logger.exception("failed")
    text = caplog.text
    assert SHARE not in text and TOKEN not in text
    assert "Exception on /password-reset/[redacted] [POST]" in text
    assert "while opening /share/[redacted] with regio_[redacted]" in text


def test_pages_with_a_secret_in_their_url_send_no_referrer(world, app):
    client = world["client"].application.test_client()
    response = client.get(urlsplit(world["link"]["url"]).path)  # /share/<secret>
    assert response.status_code == 302
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert world["link"]["secret"] not in response.headers["Location"]
    assert client.get(response.headers["Location"]).status_code == 200  # the cookie opens it
    db = accounts.db_path(app.extensions["regio.settings"]["SESSIONS"])
    secret = accounts.start_reset(db, "reader@example.org")
    response = client.get(f"/password-reset/{secret}")
    assert response.status_code == 200
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"


def _fetch(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> int:
    """The status of one request (redirects not followed)."""
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with opener.open(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_no_secret_reaches_gunicorns_logs(tmp_path, sample_index, redis_url):
    """A real gunicorn with the redacting logger class: share-link, reset and token secrets in
    paths, queries, referrers and headers never reach its access or error log."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from app.redis_server import free_port
    from tests.conftest import ROOT

    sessions = tmp_path / "sessions"
    db = accounts.db_path(sessions)
    user = accounts.create_user(db, "ana@example.org", "Ana", PASSWORD)
    token = accounts.create_token(db, user.id, "logs")
    share = accounts.create_share_link(db, "session-0001", user.id)
    encoded_share = accounts.create_share_link(db, "session-0001", user.id)
    reset = accounts.start_reset(db, "ana@example.org")
    secrets = {"token": token, "share": share, "encoded share": encoded_share, "reset": reset}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIO_")}
    env.update(
        REGIO_AUTH="accounts", REGIO_INDEX=str(sample_index), REGIO_SESSIONS=str(sessions),
        REGIO_INSTANCE=str(tmp_path / "instance"), REGIO_REDIS_URL=redis_url,
        REGIO_BASE_URL=base, REGIO_SCRIPTS=str(SCRIPTS),
    )  # fmt: skip
    # gunicorn's default access format, plus every atom a site might add that can hold a secret
    log_format = (
        '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(U)s %(q)s '
        '"%({authorization}i)s" "%({cookie}i)s" "%({x-regio-share}i)s" "%({raw_uri}e)s"'
    )
    command = [
        sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
        "--worker-class", "gthread", "--workers", "1", "--threads", "4", "--no-control-socket",
        "--logger-class", "app.redaction.GunicornLogger", "--log-level", "debug",
        "--access-logfile", str(access), "--error-logfile", str(errors),
        "--access-logformat", log_format, "wsgi:app",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while _fetch_or_none(f"{base}/api/health") is None:
            assert proc.poll() is None, f"gunicorn exited:\n{errors.read_text()}"
            assert time.monotonic() < deadline, f"gunicorn did not answer:\n{errors.read_text()}"
            time.sleep(0.2)
        assert _fetch(f"{base}/share/{share}", {"Referer": f"{base}/?token={token}"}) == 302
        assert _fetch(f"{base}/%73hare/{encoded_share}") == 302
        assert _fetch(f"{base}/password-reset/{reset}") == 200
        assert (
            _fetch(f"{base}/static/regio.css", {"Referer": f"{base}/password-reset/{reset}"}) == 200
        )
        assert _fetch(f"{base}/password-reset/{reset}", data=b"password=x") == 403  # no CSRF
        headers = {"Authorization": f"Token {token}", "X-Regio-Share": share,
                   "Cookie": f"regio_session={share}"}  # fmt: skip
        assert _fetch(f"{base}/api/sessions", headers) == 200
        assert _fetch(f"{base}/api/sessions?token={token}") == 401
        assert _fetch(f"{base}/login?next=%2Fshare%2F{share}") == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    logged = access.read_text() + errors.read_text()
    assert len(access.read_text().splitlines()) >= 9, logged  # every request was logged
    lines = access.read_text().splitlines()
    assert sum('"GET /share/[redacted] HTTP/1.1" 302' in line for line in lines) == 2, logged
    assert sum('"GET /password-reset/[redacted] HTTP/1.1" 200' in line for line in lines) == 1
    assert '"http://127.0.0.1:' in logged and '/password-reset/[redacted]" "' in logged
    assert " token=[redacted] " in logged  # %(q)s
    for what, secret in secrets.items():
        assert secret not in logged, f"the {what} secret is in gunicorn's logs:\n{logged}"


def _fetch_or_none(url: str) -> int | None:
    try:
        return _fetch(url)
    except OSError:
        return None


def test_make_run_starts_gunicorn_with_the_redacting_logger(tmp_path):
    from app import service
    from app import settings as settings_mod

    values = settings_mod.load({"INSTANCE": tmp_path / "instance"})
    command = service.Service(values).gunicorn_command()
    assert command[command.index("--logger-class") + 1] == "app.redaction.GunicornLogger"
    assert "--access-logfile" in command  # the log the logger class writes


def test_a_share_link_viewer_resolves_names_and_converts_regions_but_stores_nothing(world):
    """The page of a share-link viewer uses the name box and exports DS9 in the chosen frame:
    GET /api/resolve and POST /api/regions/convert (which stores nothing) pass the login gate with
    the link's cookie and the page's CSRF token; a store (a new session) still needs an account."""
    import re

    viewer = world["client"].application.test_client()
    anonymous = world["client"].application.test_client()
    region = {"region": 'icrs;circle(149.6,-11.06,30")', "frame": "galactic"}
    response = anonymous.post("/api/regions/convert", json=region)
    assert response.status_code in (401, 403)
    assert anonymous.get("/api/resolve?name=x").status_code == 401
    opened = viewer.get(urlsplit(world["link"]["url"]).path)
    assert opened.status_code == 302
    page = viewer.get(opened.headers["Location"]).get_data(as_text=True)
    token = {"X-CSRF-Token": re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)}
    response = viewer.post("/api/regions/convert", json=region, headers=token)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["ds9"].splitlines()[1].strip() == "galactic"
    assert viewer.get("/api/resolve?name=nosuchobject123").status_code == 404
    before = viewer.get("/api/sessions", headers=world["headers"]["owner"]).get_json()
    assert (
        viewer.post("/api/sessions", json={"source": region["region"]}, headers=token).status_code
        == 401
    )
    assert viewer.get("/api/sessions", headers=world["headers"]["owner"]).get_json() == before
