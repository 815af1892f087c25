"""Who is asking and what they may do, for every request.

- Identity: an API token (``Authorization: Token <t>`` or ``Bearer <t>``), else the login cookie
  (Flask's signed session). ``g.user`` is the ``accounts.User`` or None.
- Modes (REGIO_AUTH): ``none`` (single user, the laptop default: everyone may do everything,
  nothing is owned) or ``accounts`` (everything needs a login, except the sign-in pages, the API
  description, the health check and what a read-only share link opens).
- Sessions: ``session_level(record)`` is "none" / "read" / "write" / "owner" (``accounts.access``);
  ``require(record, needed)`` answers 404 when the user may not even see the session, so another
  user's sessions are indistinguishable from absent ones, and 403 for a reader who tries to write.
- Share links: opening ``/share/<secret>`` keeps the secret in the cookie; API clients may send it
  as ``X-Regio-Share``. It gives read access to that one session and what its page needs.
- CSRF: state-changing requests that a browser marks as cross-site (``Sec-Fetch-Site``, or an
  ``Origin`` of another host) are refused. With accounts, a request authenticated by the cookie
  must also carry the session's token, in the ``X-CSRF-Token`` header (the page's fetch calls)
  or a ``csrf_token`` form field. Requests with an API token need none (a browser never sends it
  by itself), nor do curl or scripts in single-user mode.
- Throttling (``app.ratelimit``, in Redis so every web process and host counts together) is
  keyed by the client, never by the account alone, so a guesser elsewhere cannot lock a user out:
  wrong passwords at sign-in back off exponentially per (client, account) and, with more free
  tries, per client (``LOGIN_PAIR_BACKOFF``, ``LOGIN_CLIENT_BACKOFF``); every sign-in attempt
  also counts in a per-client window (``LOGIN_ATTEMPTS``: hashing costs CPU). The current-password
  check before a password change backs off per user (``PASSWORD_CHECK_BACKOFF``); failed API
  tokens count per client. A client is its address, an IPv6 client its /64 network (one host
  owns a whole /64). Behind a reverse proxy every client has the proxy's address: the proxy must
  be trusted to pass the client's address on (e.g. werkzeug's ``ProxyFix``) or the per-client
  limits become one limit for everybody.
- Secrets stay out of logs: ``init_app`` puts ``app.redaction``'s filter on the app's logger.
- Security headers on every response, with a content security policy that lets Aladin Lite's
  WebAssembly run (``'wasm-unsafe-eval'``) and nothing load from other origins.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, abort, current_app, g, jsonify, redirect, request, session, url_for

from app import accounts, ratelimit, redaction

#: Endpoints anyone may reach in accounts mode (sign-in, the API description, static files).
PUBLIC_ENDPOINTS = frozenset(
    {
        "static",
        "auth.login",
        "auth.signup",
        "auth.reset_request",
        "auth.reset_finish",
        "auth.open_share",
        "api.health",
        "api.openapi_document",
        "pages.favicon",
    }
)
#: Read-only endpoints a share-link visitor needs besides the session's own (the sky view).
SHARE_ENDPOINTS = frozenset(
    {
        "api.coverage",
        "api.exposure_moc",
        "api.list_instruments",
        "hips.hips_file",
        "names.resolve",
        "runs_api.list_scripts",
    }
)
#: Endpoints a share-link viewer may POST to: they compute an answer and store nothing.
SHARE_STATELESS_POSTS = frozenset({"frames.convert"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self' data: blob:; worker-src 'self' blob:; font-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
#: (requests, seconds) allowed per client: failed API tokens, sign-in and sign-up attempts.
TOKEN_FAILURES = (30, 60)
LOGIN_ATTEMPTS = (30, 300)
SIGNUP_ATTEMPTS = (10, 300)
#: Wrong passwords at sign-in from one client for one account: 5 free, then 1 s, 2 s, 4 s... up to
#: 15 min; forgotten a day after the last one, or at the pair's next successful sign-in.
LOGIN_PAIR_BACKOFF = ratelimit.BackOff(free=5, base_s=1, cap_s=900, memory_s=24 * 3600)
#: Wrong passwords at sign-in from one client, whatever the account (guessing across accounts):
#: 30 free, then the same doubling; forgotten an hour after the last one (a busy shared address
#: with a few typos stays free).
LOGIN_CLIENT_BACKOFF = ratelimit.BackOff(free=30, base_s=1, cap_s=900, memory_s=3600)
#: Wrong current passwords on /account, per user (only a holder of the user's login can try).
PASSWORD_CHECK_BACKOFF = ratelimit.BackOff(free=5, base_s=1, cap_s=900, memory_s=24 * 3600)


def settings() -> Mapping[str, Any]:
    return current_app.extensions["regio.settings"]


def accounts_enabled() -> bool:
    return settings()["AUTH"] == "accounts"


def accounts_db():
    return accounts.db_path(settings()["SESSIONS"])


def current_user() -> accounts.User | None:
    return g.get("user")


def client_address() -> str:
    """The client as rate limits count it: its IP address; for IPv6 its /64 network."""
    address = request.remote_addr or "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def redis_conn():
    return current_app.extensions["regio.redis"]


def limit(name: str, key: str, rule: tuple[int, int]) -> None:
    """Count one attempt; answer 429 with Retry-After when the limit is reached."""
    allowed, retry_after = ratelimit.hit(redis_conn(), f"regio:rate:{name}:{key}", *rule)
    if not allowed:
        response = jsonify(
            error="Too Many Requests",
            message=f"too many attempts; try again in {retry_after} s",
            status=429,
        )
        response.status_code = 429
        response.headers["Retry-After"] = str(retry_after)
        abort(response)


def _account_key(email: str) -> str:
    """The account part of a throttling key: a digest of the address as typed (trimmed, lower
    case; malformed or unknown addresses too, so the answer does not tell which exist), which also
    keeps addresses out of Redis."""
    typed = email.strip().lower() if isinstance(email, str) else ""
    return hashlib.sha256(typed.encode()).hexdigest()[:32]


def _login_backoffs(email: str) -> list[tuple[ratelimit.BackOff, str]]:
    client = client_address()
    return [
        (LOGIN_CLIENT_BACKOFF, f"login:client:{client}"),
        (LOGIN_PAIR_BACKOFF, f"login:pair:{client}:{_account_key(email)}"),
    ]


def login_wait(email: str) -> int:
    """Seconds this client must wait before trying a password for ``email`` (0: now)."""
    return max(rule.wait(redis_conn(), key) for rule, key in _login_backoffs(email))


def login_failed(email: str) -> int:
    """Count a wrong password from this client for ``email``; seconds it must now wait."""
    return max(rule.failure(redis_conn(), key) for rule, key in _login_backoffs(email))


def login_succeeded(email: str) -> None:
    """Forget this client's wrong passwords for ``email`` (not those for other accounts)."""
    rule, key = _login_backoffs(email)[1]
    rule.reset(redis_conn(), key)


def password_check_wait(user: accounts.User) -> int:
    """Seconds the user must wait before the current-password check may be tried again."""
    return PASSWORD_CHECK_BACKOFF.wait(redis_conn(), f"password-check:{user.id}")


def check_current_password(user: accounts.User, password: str) -> bool:
    """The (throttled: see ``password_check_wait``) check of the user's current password."""
    key = f"password-check:{user.id}"
    if accounts.check_user_password(accounts_db(), user.id, password):
        PASSWORD_CHECK_BACKOFF.reset(redis_conn(), key)
        return True
    PASSWORD_CHECK_BACKOFF.failure(redis_conn(), key)
    return False


def _token_from_header() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip()
    return None


def identify() -> None:
    """Set ``g.user`` (and ``g.via_token``) from the request."""
    g.user, g.via_token = None, False
    secret = _token_from_header()
    if secret is not None:
        user = accounts.verify_token(accounts_db(), secret)
        if user is None:
            limit("token", client_address(), TOKEN_FAILURES)
            abort(401, description="the API token is not valid (revoked, mistyped or expired)")
        g.user, g.via_token = user, True
        return
    user_id = session.get("uid")
    if user_id:
        try:
            user = accounts.get_user(accounts_db(), user_id)
        except accounts.UserNotFound:
            user = None
        if user is None or not user.is_active:
            session.clear()
        else:
            g.user = user


def share_secret() -> str | None:
    return request.headers.get("X-Regio-Share") or session.get("share")


def csrf_token() -> str:
    """The session's CSRF token (made on first use)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def cross_site() -> bool:
    """Whether a browser says the request comes from another site (Fetch metadata, Origin)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    return origin is not None and urlsplit(origin).netloc != request.host


def check_csrf() -> None:
    """Refuse state-changing requests another site could make a browser send."""
    if request.method in SAFE_METHODS or g.via_token:
        return
    if cross_site():
        abort(403, description="cross-site request refused")
    if not accounts_enabled():
        return  # no login cookie to abuse; browsers announce cross-site requests (above)
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
    expected = session.get("csrf") or ""
    if not expected or not hmac.compare_digest(sent, expected):
        abort(403, description="missing or wrong CSRF token: reload the page and try again")


def before_request():
    identify()
    gate = login_gate()
    check_csrf()
    return gate


def login_gate():
    """In accounts mode: None when the request may go on, else a redirect to the login page (or
    a 401 for the API)."""
    if not accounts_enabled() or g.user is not None:
        return None
    endpoint = request.endpoint or ""
    if endpoint in PUBLIC_ENDPOINTS:
        return None
    view_args = request.view_args or {}
    scoped = "session_id" in view_args or "run_id" in view_args
    if (
        share_secret()
        and request.method in SAFE_METHODS
        and (scoped or endpoint in SHARE_ENDPOINTS)
    ) or (share_secret() and endpoint in SHARE_STATELESS_POSTS):
        return None  # a session-scoped view checks the share link against its session
    if request.path.startswith("/api/") or request.method not in SAFE_METHODS:
        abort(401, description="log in first, or send an API token (Authorization: Token ...)")
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def after_request(response):
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    return response


def session_level(record: Mapping[str, Any]) -> str:
    """What the current request may do with a session record."""
    if not accounts_enabled():
        return "owner"
    return accounts.access(
        accounts_db(), record.get("owner"), record["id"], current_user(), share_secret()
    )


def require(record: Mapping[str, Any], needed: str = "read") -> str:
    """Abort 404 when the session is not visible at all, 403 when visible but not enough."""
    level = session_level(record)
    if level == "none":
        abort(404, description=f"no session {record['id']}")
    if not accounts.at_least(level, needed):
        abort(403, description=f"you may only {level} this session")
    return level


def owner_id() -> str | None:
    """The owner to record on what the current request creates (None in single-user mode)."""
    user = current_user()
    return user.id if (user is not None and accounts_enabled()) else None


def visible_sessions(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The session records the current user may see (all in single-user mode)."""
    if not accounts_enabled():
        return records
    user = current_user()
    if user is None:
        return []
    if user.is_staff:
        return records
    shared = accounts.sessions_shared_with(accounts_db(), user.id)
    return [r for r in records if r.get("owner") == user.id or r["id"] in shared]


def safe_next(target: str | None) -> str:
    """A local path to go to after login (never another site)."""
    if not target:
        return url_for("pages.home")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("pages.home")
    return target


def init_app(app: Flask) -> None:
    https = str(app.extensions["regio.settings"]["BASE_URL"]).startswith("https://")
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=https,
        SESSION_COOKIE_NAME="regio_session",
    )
    redaction.install(app.logger)
    app.before_request(before_request)
    app.after_request(after_request)

    @app.context_processor
    def auth_context() -> dict[str, Any]:
        return {
            "current_user": current_user(),
            "csrf_token": csrf_token,
            "auth_mode": app.extensions["regio.settings"]["AUTH"],
            "signup_open": app.extensions["regio.settings"]["SIGNUP"],
        }
