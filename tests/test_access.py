"""Accounts mode: who may do what. The access matrix over the API and pages, tokens, CSRF,
login rate limit, password rules, and single-user mode staying open."""

from __future__ import annotations

import re

import pytest

from app import accounts, create_app, runs
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


def test_login_rate_limit_holds(world):
    client = world["client"].application.test_client()
    token = _csrf(client, "/login")
    codes = [
        client.post(
            "/login", data={"email": "owner@example.org", "password": "wrong", "csrf_token": token}
        ).status_code
        for _ in range(12)
    ]
    assert codes[:10] == [401] * 10
    assert codes[10:] == [429, 429]
    # the right password is refused too while the limit holds
    response = client.post(
        "/login", data={"email": "owner@example.org", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0


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
