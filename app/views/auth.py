"""Sign-in pages and the account page: log in and out, sign up (when allowed), password reset by
e-mailed link, profile, notification preferences, API tokens; and the share-link entry point.

The work is done by ``app.accounts`` and ``app.notify``; these views parse forms and render.
Throttling (``app.auth``) is keyed by the client: wrong passwords from one client never stop the
right one from another. Pages whose URL holds a secret (a share link, a reset link) are sent with
``Referrer-Policy: no-referrer`` so the secret is not repeated in the Referer of what they load.
"""

from __future__ import annotations

import re

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from app import accounts, auth, notify
from app.auth import (
    accounts_db,
    accounts_enabled,
    client_address,
    current_user,
    limit,
    safe_next,
    settings,
)

bp = Blueprint("auth", __name__)

RESET_REQUESTS = (5, 3600)


def _log_in(user: accounts.User) -> None:
    session.clear()  # a fresh session (and CSRF token) at each login: no fixation
    session["uid"] = user.id
    session.permanent = True


def _too_many(response, wait: int):
    """A rendered page as a 429 answer telling to come back in ``wait`` seconds."""
    response = current_app.make_response(response)
    response.status_code = 429
    response.headers["Retry-After"] = str(wait)
    return response


def _no_referrer(response):
    """A page whose URL holds a secret: not repeated in the Referer of what the page loads."""
    response = current_app.make_response(response)
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _well_formed_email(email: str) -> bool:
    """Whether a typed sign-in address is well formed (``accounts.normalize_email``); a malformed
    one is answered 400 at once, as it cannot belong to an account."""
    try:
        accounts.normalize_email(email)
    except accounts.AccountError:
        return False
    return True


def _need_accounts() -> None:
    if not accounts_enabled():
        abort(404, description="accounts are off (REGIO_AUTH=none): nothing to sign in to")


@bp.route("/login", methods=["GET", "POST"])
def login():
    _need_accounts()
    if request.method == "POST":
        email = request.form.get("email", "")[:300]
        limit("login-ip", client_address(), auth.LOGIN_ATTEMPTS)
        if not _well_formed_email(email):  # no account has it: say so, check nothing
            flash("That is not an e-mail address: check it and try again.", "error")
            typed = _CONTROL.sub("", email)
            return render_template("auth/login.html", email=typed), 400
        # back off per client (and per client and account), never per account alone: a guesser
        # elsewhere cannot lock the user out; a blocked attempt is not checked, nor counted
        wait = auth.login_wait(email)
        if wait:
            flash(f"Too many wrong passwords from your address: try again in {wait} s.", "error")
            return _too_many(render_template("auth/login.html", email=email), wait)
        user = accounts.authenticate(accounts_db(), email, request.form.get("password", ""))
        if user is not None:
            auth.login_succeeded(email)
            _log_in(user)
            return redirect(safe_next(request.args.get("next")))
        auth.login_failed(email)
        flash("Wrong e-mail address or password.", "error")
        return render_template("auth/login.html", email=email), 401
    return render_template("auth/login.html", email="")


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("auth.login") if accounts_enabled() else url_for("pages.home"))


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    _need_accounts()
    if not settings()["SIGNUP"]:
        abort(404, description="sign-up is closed: ask a staff member for an account")
    if request.method == "POST":
        limit("signup-ip", client_address(), auth.SIGNUP_ATTEMPTS)
        form = request.form
        if form.get("password") != form.get("password2"):
            flash("The two passwords differ.", "error")
            return render_template("auth/signup.html", form=form), 400
        try:
            user = accounts.create_user(
                accounts_db(), form.get("email", ""), form.get("name", ""), form.get("password", "")
            )
        except accounts.AccountError as exc:
            # "already exists" is told as a generic problem: no address enumeration
            message = (
                str(exc)
                if isinstance(exc, accounts.PasswordError)
                else (
                    "this address cannot be used: check it, or reset the password of your account"
                )
            )
            flash(message, "error")
            return render_template("auth/signup.html", form=form), 400
        _log_in(user)
        return redirect(url_for("pages.home"))
    return render_template("auth/signup.html", form={})


@bp.route("/password-reset", methods=["GET", "POST"])
def reset_request():
    _need_accounts()
    if request.method == "POST":
        limit("reset-ip", client_address(), RESET_REQUESTS)
        email = request.form.get("email", "")[:300]
        secret = accounts.start_reset(accounts_db(), email)
        if secret is not None:
            link = settings()["BASE_URL"].rstrip("/") + url_for("auth.reset_finish", secret=secret)
            notify.send_reset_email(settings(), accounts.normalize_email(email), link)
        # the same answer whether the address has an account or not
        flash("If the address has an account, a reset link is on its way (valid 1 hour).", "info")
        return redirect(url_for("auth.login"))
    return render_template("auth/reset_request.html")


@bp.route("/password-reset/<secret>", methods=["GET", "POST"])
def reset_finish(secret: str):
    _need_accounts()
    if request.method == "POST":
        limit("reset-ip", client_address(), RESET_REQUESTS)
        if request.form.get("password") != request.form.get("password2"):
            flash("The two passwords differ.", "error")
            page = render_template("auth/reset_finish.html", secret=secret)
            return _no_referrer((page, 400))
        try:
            user = accounts.finish_reset(accounts_db(), secret, request.form.get("password", ""))
        except accounts.AccountError as exc:
            flash(str(exc), "error")
            return _no_referrer((render_template("auth/reset_finish.html", secret=secret), 400))
        _log_in(user)
        flash("Your password is changed.", "info")
        return _no_referrer(redirect(url_for("pages.home")))
    return _no_referrer(render_template("auth/reset_finish.html", secret=secret))


@bp.route("/account", methods=["GET", "POST"])
def account():
    _need_accounts()
    user = current_user()
    db = accounts_db()
    new_token = None
    wait = 0
    if request.method == "POST":
        action = request.form.get("action")
        try:
            if action == "profile":
                user = accounts.update_profile(
                    db,
                    user.id,
                    name=request.form.get("name", user.name),
                    notify_email=request.form.get("notify_email") == "on",
                    webhook_url=request.form.get("webhook_url", "").strip(),
                )
                flash("Saved.", "info")
            elif action == "password":
                wait = auth.password_check_wait(user)
                if wait:
                    raise accounts.AccountError(
                        f"too many wrong current passwords: try again in {wait} s"
                    )
                if not auth.check_current_password(user, request.form.get("current", "")):
                    raise accounts.AccountError("the current password is wrong")
                accounts.set_password(db, user.id, request.form.get("password", ""))
                flash("Password changed.", "info")
            elif action == "create-token":
                limit("token-create", user.id, (20, 3600))
                new_token = accounts.create_token(db, user.id, request.form.get("name", "")[:100])
            elif action == "revoke-token":
                accounts.revoke_token(db, user.id, request.form.get("token_id", ""))
                flash("Token revoked.", "info")
            else:
                abort(400, description="unknown action")
        except accounts.AccountError as exc:
            flash(str(exc), "error")
    page = render_template(
        "auth/account.html",
        user=user,
        tokens=accounts.list_tokens(db, user.id),
        new_token=new_token,
    )
    return _too_many(page, wait) if wait else page


@bp.get("/share/<secret>")
def open_share(secret: str):
    """A read-only link: exchange it for the cookie and open its session at a URL without the
    secret (so the secret is not repeated in later request lines or referrers)."""
    if not accounts_enabled():
        abort(404)
    session_id = accounts.resolve_share_link(accounts_db(), secret)
    if session_id is None:
        abort(404, description="this share link is not valid (revoked or mistyped)")
    session["share"] = secret
    current_app.logger.info("share link opened for session %s", session_id)  # never the secret
    return _no_referrer(redirect(url_for("pages.session_page", session_id=session_id)))
