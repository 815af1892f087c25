"""Accounts: password rules and hashing, sign-in, API tokens, resets, sharing, access(), the CLI.

Everything runs against a real SQLite accounts database in a temporary folder.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app import accounts, settings
from app.accounts import AccountError, PasswordError, ResetError, UserNotFound
from tests.conftest import ROOT

PASSWORD = "correct horse battery"
NAME = "Marie Sklodowska Curie"
EMAIL = "marie.curie@lab.example"


@pytest.fixture
def db(tmp_path) -> Path:
    return accounts.db_path(tmp_path / "sessions")


@pytest.fixture
def marie(db) -> accounts.User:
    return accounts.create_user(db, EMAIL, NAME, PASSWORD)


def raw_rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(sql).fetchall()
    conn.close()
    return rows


# ---------------------------------------------------------------------------- password rules


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("Ab1!xyz", "it must contain at least 8 characters"),
        ("73915802641", "it can't be entirely numeric"),
        ("sunshine", "it is too common"),
        ("QWERTYUIOP", "it is too common"),  # the list is compared without case
        ("mariecurie", "it is too similar to the e-mail address"),
        ("Curie1867", "it is too similar to the e-mail address"),
        ("sklodowska!", "it is too similar to the name"),
        ("x" * (accounts.MAX_PASSWORD_LENGTH + 1), "it must contain at most 1024 characters"),
    ],
)
def test_each_password_rule_is_enforced_with_a_clear_message(password, problem):
    with pytest.raises(PasswordError) as caught:
        accounts.check_password(password, EMAIL, NAME)
    assert caught.value.problems == [problem]
    assert str(caught.value).startswith("the password is not acceptable: ")


def test_a_password_breaking_several_rules_lists_them_all():
    with pytest.raises(PasswordError) as caught:
        accounts.check_password("1234567", EMAIL, NAME)
    assert caught.value.problems == [
        "it must contain at least 8 characters",
        "it can't be entirely numeric",
        "it is too common",
    ]


@pytest.mark.parametrize(
    "password", [PASSWORD, "Tr0ub4dor&3x", "x-ray spectra at midnight", "CurieMarie", "m.curie@lab"]
)
def test_good_passwords_pass(password):
    accounts.check_password(password, EMAIL, NAME)
    assert accounts.password_problems(password, EMAIL, NAME) == []


def test_the_common_password_list_is_shipped():
    common = accounts._common_passwords()
    assert len(common) > 10_000
    assert {"123456", "password", "qwerty", "iloveyou"} <= common


def test_create_user_refuses_a_weak_password_and_stores_nothing(db):
    with pytest.raises(PasswordError, match="too common"):
        accounts.create_user(db, EMAIL, NAME, "password1")
    assert accounts.list_users(db) == []


# -------------------------------------------------------------------------------- hashing


def test_hash_round_trip_with_a_salt_per_password():
    first, second = accounts.hash_password(PASSWORD), accounts.hash_password(PASSWORD)
    assert first != second  # a new salt each time
    assert first.startswith("scrypt$n=32768,r=8,p=1$")
    assert PASSWORD not in first
    assert accounts.verify_password(PASSWORD, first)
    assert accounts.verify_password(PASSWORD, second)
    assert not accounts.verify_password(PASSWORD + "!", first)
    assert not accounts.needs_rehash(first)


@pytest.mark.parametrize(
    "stored",
    ["", "plain text", "md5$abc$def", "scrypt$n=2**40,r=8,p=1$AAAA$AAAA", "scrypt$n=16$AAAA$AAAA"],
)
def test_malformed_or_too_costly_hashes_never_verify(stored):
    assert not accounts.verify_password(PASSWORD, stored)
    assert accounts.needs_rehash(stored)


def test_no_plaintext_password_or_secret_is_stored(db, marie):
    token = accounts.create_token(db, marie.id, "laptop")
    reset = accounts.start_reset(db, EMAIL)
    link = accounts.create_share_link(db, "session-0001", marie.id)
    content = db.read_bytes()
    for secret in (PASSWORD, token, reset, link):
        assert secret.encode() not in content
    stored_hash = raw_rows(db, "SELECT password_hash FROM users")[0][0]
    assert accounts.verify_password(PASSWORD, stored_hash)
    token_hashes = [r[0] for r in raw_rows(db, "SELECT token_hash FROM tokens")]
    assert token_hashes == [hashlib.sha256(token.encode()).hexdigest()]
    assert "password_hash" not in marie.to_json()


# ---------------------------------------------------------------------------- users, sign-in


def test_create_user_normalises_the_email_and_refuses_duplicates(db, marie):
    assert marie.email == EMAIL
    assert (marie.is_staff, marie.is_active, marie.notify_email) == (False, True, True)
    assert accounts.get_user_by_email(db, "  Marie.Curie@LAB.example ") == marie
    with pytest.raises(AccountError, match="exists already"):
        accounts.create_user(db, "MARIE.CURIE@lab.example", "Other", "another good passphrase")
    assert [u.id for u in accounts.list_users(db)] == [marie.id]


@pytest.mark.parametrize(
    "email", ["", "no-at-sign", "a@b", "two@@example.org", "a b@example.org", "x@y.z\r\nBcc: v@w.x"]
)
def test_malformed_emails_are_refused(db, email):
    with pytest.raises(AccountError, match="not a valid e-mail address"):
        accounts.create_user(db, email, "Someone", PASSWORD)


def test_names_with_control_characters_are_refused(db):
    with pytest.raises(AccountError, match="control characters"):
        accounts.create_user(db, EMAIL, "Marie\nCurie", PASSWORD)


def test_authenticate_right_wrong_unknown_and_inactive(db, marie):
    user = accounts.authenticate(db, "MARIE.curie@lab.example", PASSWORD)
    assert user is not None and user.id == marie.id and user.last_login
    assert accounts.authenticate(db, EMAIL, "correct horse batterY") is None
    assert accounts.authenticate(db, "nobody@lab.example", PASSWORD) is None
    assert accounts.authenticate(db, EMAIL, "x" * 100_000) is None
    accounts.set_active(db, marie.id, False)
    assert accounts.authenticate(db, EMAIL, PASSWORD) is None
    accounts.set_active(db, marie.id, True)
    assert accounts.authenticate(db, EMAIL, PASSWORD) is not None


def test_check_user_password_re_authenticates_without_signing_in(db, marie):
    assert accounts.check_user_password(db, marie.id, PASSWORD)
    assert accounts.get_user(db, marie.id).last_login is None  # not a sign-in
    assert not accounts.check_user_password(db, marie.id, "correct horse batterY")
    assert not accounts.check_user_password(db, marie.id, "x" * 100_000)
    assert not accounts.check_user_password(db, marie.id, None)  # type: ignore[arg-type]
    assert not accounts.check_user_password(db, "no-such-user", PASSWORD)
    accounts.set_active(db, marie.id, False)
    assert not accounts.check_user_password(db, marie.id, PASSWORD)


def test_an_unknown_address_costs_a_hash_too(db, marie, monkeypatch):
    """No user enumeration by timing: a password is verified whether or not the user exists."""
    verified: list[str] = []
    real = accounts.verify_password

    def spy(password: str, encoded: str) -> bool:
        verified.append(encoded)
        return real(password, encoded)

    monkeypatch.setattr(accounts, "verify_password", spy)
    accounts.authenticate(db, "nobody@lab.example", PASSWORD)
    accounts.authenticate(db, EMAIL, "wrong password here")
    assert len(verified) == 2
    assert all(h.startswith("scrypt$n=32768,") for h in verified)


def test_an_outdated_hash_is_upgraded_at_sign_in(db, marie):
    old = "scrypt$n=16384,r=8,p=1${}${}".format(
        accounts._b64(b"0123456789abcdef"),
        accounts._b64(
            hashlib.scrypt(PASSWORD.encode(), salt=b"0123456789abcdef", n=16384, r=8, p=1)
        ),
    )
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE users SET password_hash = ?", [old])
    conn.close()
    assert accounts.authenticate(db, EMAIL, PASSWORD) is not None
    upgraded = raw_rows(db, "SELECT password_hash FROM users")[0][0]
    assert upgraded.startswith("scrypt$n=32768,") and accounts.verify_password(PASSWORD, upgraded)


def test_profile_staff_and_password_changes(db, marie):
    user = accounts.update_profile(
        db, marie.id, name="Marie Curie", notify_email=False, webhook_url="https://hooks.example/x"
    )
    assert (user.name, user.notify_email, user.webhook_url) == (
        "Marie Curie",
        False,
        "https://hooks.example/x",
    )
    assert accounts.update_profile(db, marie.id, webhook_url="").webhook_url is None
    assert accounts.update_profile(db, marie.id) == accounts.get_user(db, marie.id)
    assert accounts.set_staff(db, marie.id, True).is_staff
    with pytest.raises(PasswordError, match="too common"):
        accounts.set_password(db, marie.id, "iloveyou")
    accounts.set_password(db, marie.id, "radium and polonium")
    assert accounts.authenticate(db, EMAIL, PASSWORD) is None
    assert accounts.authenticate(db, EMAIL, "radium and polonium") is not None
    with pytest.raises(UserNotFound):
        accounts.set_active(db, "nobody", False)
    with pytest.raises(UserNotFound):
        accounts.get_user(db, "nobody")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example/x",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "https:///no-host",
        "http://hooks.example:99999/",
        "https://hooks.example/a b",
        "https://hooks.example/\r\nX: y",
        "https://hooks.example/" + "a" * 3000,
    ],
)
def test_webhook_urls_must_be_http_or_https(db, marie, url):
    with pytest.raises(AccountError, match="http:// or https://"):
        accounts.update_profile(db, marie.id, webhook_url=url)
    assert accounts.get_user(db, marie.id).webhook_url is None


# ---------------------------------------------------------------------------------- tokens


def test_tokens_work_until_revoked(db, marie):
    secret = accounts.create_token(db, marie.id, "laptop")
    assert secret.startswith("regio_") and len(secret) >= 6 + 43  # 32 random bytes
    assert accounts.verify_token(db, secret).id == marie.id
    [token] = accounts.list_tokens(db, marie.id)
    assert (token.name, token.prefix, token.revoked) == ("laptop", secret[:10], None)
    assert token.last_used is not None
    assert secret not in repr(token)

    other = accounts.create_user(db, "pierre@lab.example", "Pierre", "piezoelectric crystals")
    assert not accounts.revoke_token(db, other.id, token.id)  # not his token
    assert accounts.verify_token(db, secret) is not None
    assert accounts.revoke_token(db, marie.id, token.id)
    assert not accounts.revoke_token(db, marie.id, token.id)  # once
    assert accounts.verify_token(db, secret) is None
    assert accounts.list_tokens(db, marie.id)[0].revoked is not None


def test_tokens_of_disabled_users_and_garbage_fail(db, marie):
    secret = accounts.create_token(db, marie.id)
    accounts.set_active(db, marie.id, False)
    assert accounts.verify_token(db, secret) is None
    accounts.set_active(db, marie.id, True)
    for garbage in (
        "",
        "regio_",
        secret[:-1],
        secret + "x",
        "Bearer " + secret,
        "regio_" + "a" * 500,
    ):
        assert accounts.verify_token(db, garbage) is None
    assert accounts.verify_token(db, None) is None  # type: ignore[arg-type]
    with pytest.raises(UserNotFound):
        accounts.create_token(db, "nobody", "x")


# ---------------------------------------------------------------------------- password reset


def test_reset_flow_is_single_use(db, marie):
    assert accounts.start_reset(db, "nobody@lab.example") is None
    secret = accounts.start_reset(db, "Marie.Curie@lab.example")
    assert secret and len(secret) >= 32
    with pytest.raises(PasswordError, match="too similar"):
        accounts.finish_reset(db, secret, "marie curie")
    user = accounts.finish_reset(db, secret, "radium and polonium")  # still valid after a refusal
    assert user.id == marie.id
    assert accounts.authenticate(db, EMAIL, PASSWORD) is None
    assert accounts.authenticate(db, EMAIL, "radium and polonium") is not None
    with pytest.raises(ResetError, match="used already"):
        accounts.finish_reset(db, secret, "yet another good passphrase")
    assert accounts.authenticate(db, EMAIL, "radium and polonium") is not None


def test_reset_secrets_expire_and_a_new_one_replaces_the_old(db, marie):
    first = accounts.start_reset(db, EMAIL)
    second = accounts.start_reset(db, EMAIL)
    with pytest.raises(ResetError, match="used already"):
        accounts.finish_reset(db, first, "radium and polonium")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE password_resets SET expires = '2000-01-01T00:00:00.000Z'")
    conn.close()
    with pytest.raises(ResetError, match="expired"):
        accounts.finish_reset(db, second, "radium and polonium")
    with pytest.raises(ResetError, match="not valid"):
        accounts.finish_reset(db, "made-up", "radium and polonium")
    assert accounts.authenticate(db, EMAIL, PASSWORD) is not None


def test_no_reset_for_a_disabled_account(db, marie):
    secret = accounts.start_reset(db, EMAIL)
    accounts.set_active(db, marie.id, False)
    assert accounts.start_reset(db, EMAIL) is None
    with pytest.raises(ResetError, match="not valid"):
        accounts.finish_reset(db, secret, "radium and polonium")


# ------------------------------------------------------------------------ sharing and access

SESSION = "sessionAAAA1"
OTHER_SESSION = "sessionBBBB2"


@pytest.fixture
def people(db, marie) -> dict[str, accounts.User]:
    make = accounts.create_user
    return {
        "owner": marie,
        "reader": make(db, "reader@lab.example", "Rita Reader", "spectral lines glow"),
        "writer": make(db, "writer@lab.example", "Walt Writer", "light curves wobble"),
        "stranger": make(db, "stranger@lab.example", "Sam Stranger", "distant quasars shine"),
        "staff": make(db, "staff@lab.example", "Stella Staff", "observatory dome", staff=True),
    }


def test_access_matrix(db, people):
    owner = people["owner"].id
    accounts.add_collaborator(db, SESSION, "Reader@lab.example", "read")
    accounts.add_collaborator(db, SESSION, "writer@lab.example", "write")
    link = accounts.create_share_link(db, SESSION, owner)
    other_link = accounts.create_share_link(db, OTHER_SESSION, owner)

    def level(who: str | None, secret: str | None = None, session: str = SESSION) -> str:
        user = people[who] if who else None
        return accounts.access(db, owner, session, user, secret)

    assert level("owner") == "owner"
    assert level("staff") == "owner"
    assert level("writer") == "write"
    assert level("reader") == "read"
    assert level("stranger") == "none"
    assert level(None) == "none"
    assert level(None, link) == "read"
    assert level("stranger", link) == "read"
    assert level("writer", link) == "write"  # a link never lowers a collaborator's role
    assert level(None, other_link) == "none"  # a link opens its own session only
    assert level(None, "made-up-secret") == "none"
    assert level("reader", session=OTHER_SESSION) == "none"

    [live, _] = sorted(
        accounts.list_share_links(db, SESSION) + accounts.list_share_links(db, OTHER_SESSION),
        key=lambda s: s.session_id,
    )
    assert not accounts.revoke_share_link(db, OTHER_SESSION, live.id)  # not that session's link
    assert accounts.revoke_share_link(db, SESSION, live.id)
    assert level(None, link) == "none"
    assert accounts.resolve_share_link(db, link) is None
    assert accounts.resolve_share_link(db, other_link) == OTHER_SESSION

    accounts.set_active(db, people["writer"].id, False)
    disabled = accounts.get_user(db, people["writer"].id)
    assert accounts.access(db, owner, SESSION, disabled) == "none"
    disabled_staff = accounts.set_active(db, people["staff"].id, False)
    assert accounts.access(db, owner, SESSION, disabled_staff) == "none"
    # a session made in single-user mode has no owner: staff only
    assert accounts.access(db, None, SESSION, people["owner"]) == "none"
    assert accounts.access(
        db, None, SESSION, accounts.set_active(db, people["staff"].id, True)
    ) == ("owner")
    assert accounts.at_least("write", "read") and not accounts.at_least("read", "write")


def test_collaborators_can_be_listed_changed_and_removed(db, people):
    with pytest.raises(UserNotFound):
        accounts.add_collaborator(db, SESSION, "ghost@lab.example", "read")
    with pytest.raises(AccountError, match="role must be one of read, write"):
        accounts.add_collaborator(db, SESSION, "reader@lab.example", "owner")
    reader, writer = people["reader"], people["writer"]
    accounts.add_collaborator(db, SESSION, "reader@lab.example", "read")
    accounts.add_collaborator(db, SESSION, "writer@lab.example", "read")
    accounts.add_collaborator(db, SESSION, "writer@lab.example", "write")  # changes the role
    accounts.add_collaborator(db, OTHER_SESSION, "reader@lab.example", "write")
    assert [(c.user.email, c.role) for c in accounts.collaborators(db, SESSION)] == [
        ("reader@lab.example", "read"),
        ("writer@lab.example", "write"),
    ]
    assert accounts.sessions_shared_with(db, reader.id) == {SESSION: "read", OTHER_SESSION: "write"}
    assert accounts.remove_collaborator(db, SESSION, writer.id)
    assert not accounts.remove_collaborator(db, SESSION, writer.id)
    assert accounts.sessions_shared_with(db, writer.id) == {}
    accounts.create_share_link(db, SESSION, people["owner"].id)
    accounts.forget_session(db, SESSION)
    assert accounts.collaborators(db, SESSION) == []
    assert accounts.list_share_links(db, SESSION) == []
    assert accounts.sessions_shared_with(db, reader.id) == {OTHER_SESSION: "write"}


def test_share_link_secrets_are_long_and_unique(db, marie):
    secrets_ = {accounts.create_share_link(db, SESSION, marie.id) for _ in range(20)}
    assert len(secrets_) == 20
    assert all(len(s) >= 32 for s in secrets_)  # 192 bits in url-safe base64
    assert {accounts.resolve_share_link(db, s) for s in secrets_} == {SESSION}
    for bad in ("", "x" * 500, None):
        assert accounts.resolve_share_link(db, bad) is None  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- migrations


def test_schema_version_and_a_newer_database_is_refused(db, marie):
    assert raw_rows(db, "SELECT version FROM schema_version") == [(len(accounts.MIGRATIONS),)]
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(RuntimeError, match="schema version 99, newer than this Regio knows"):
        accounts.get_user(db, marie.id)


# ---------------------------------------------------------------------------------- settings


def test_auth_setting_accepts_none_and_accounts_only():
    assert settings.load(environ={})["AUTH"] == "none"
    assert settings.load(environ={"REGIO_AUTH": "accounts"})["AUTH"] == "accounts"
    with pytest.raises(settings.SettingError, match="REGIO_AUTH must be one of none, accounts"):
        settings.load(environ={"REGIO_AUTH": "ldap"})
    with pytest.raises(settings.SettingError, match="REGIO_BASE_URL must start with http"):
        settings.load(environ={"REGIO_BASE_URL": "javascript:x"})
    with pytest.raises(settings.SettingError, match="REGIO_MAIL_FROM must be one e-mail"):
        settings.load(environ={"REGIO_MAIL_FROM": "a@b\r\nBcc: c@d"})


# ---------------------------------------------------------------------------------------- CLI


def cli(tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIO_")}
    env.update(REGIO_SESSIONS=str(tmp_path / "sessions"), REGIO_SMTP_PASSWORD="hunter2-smtp")
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_cli_create_user_and_token(tmp_path, db):
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n")
    done = cli(tmp_path, "create-user", "Marie.Curie@lab.example", "--password-file",
               str(password_file), "--name", NAME, "--admin")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "created staff user marie.curie@lab.example" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr
    user = accounts.authenticate(db, EMAIL, PASSWORD)
    assert user is not None and user.is_staff and user.name == NAME

    done = cli(tmp_path, "create-user", "pierre@lab.example", "--password-file", "-",
               stdin="piezoelectric crystals\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not accounts.get_user_by_email(db, "pierre@lab.example").is_staff

    done = cli(tmp_path, "create-token", EMAIL, "--name", "laptop")
    assert done.returncode == 0, done.stderr
    secret = done.stdout.strip()
    assert accounts.verify_token(db, secret).id == user.id
    assert accounts.list_tokens(db, user.id)[0].name == "laptop"


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("not-an-address", PASSWORD, "'not-an-address' is not a valid e-mail address"),
        (EMAIL, "password1", "the password is not acceptable: it is too common"),
        (EMAIL, "1234", "at least 8 characters; it can't be entirely numeric"),
        (EMAIL, None, "cannot read the password file"),
    ],
)
def test_cli_create_user_refuses_bad_input_with_exit_2(tmp_path, db, email, password, message):
    password_file = tmp_path / "pw"
    if password is not None:
        password_file.write_text(password)
    done = cli(tmp_path, "create-user", email, "--password-file", str(password_file))
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    if password:
        assert password not in done.stderr
    assert accounts.list_users(db) == []


def test_cli_refuses_duplicates_unknown_users_and_passwords_on_the_command_line(tmp_path, db):
    accounts.create_user(db, EMAIL, NAME, PASSWORD)
    password_file = tmp_path / "pw"
    password_file.write_text("another good passphrase")
    done = cli(tmp_path, "create-user", EMAIL, "--password-file", str(password_file))
    assert (done.returncode, "exists already" in done.stderr) == (2, True)
    done = cli(tmp_path, "create-token", "ghost@lab.example")
    assert done.returncode == 2
    assert "no account has the e-mail address ghost@lab.example" in done.stderr
    done = cli(tmp_path, "create-user", "x@lab.example", "--password", PASSWORD)
    assert done.returncode == 2  # argparse: there is no such option


def test_cli_settings_hides_secrets(tmp_path):
    done = cli(tmp_path, "settings")
    assert done.returncode == 0, done.stderr
    assert "REGIO_SMTP_PASSWORD=(hidden)" in done.stdout
    assert "hunter2-smtp" not in done.stdout
    assert "REGIO_AUTH=none" in done.stdout
