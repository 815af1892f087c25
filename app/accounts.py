"""Accounts: users, passwords, API tokens, password resets, sharing and the access rule.

This is the only code that knows the accounts store: SQLite at ``<REGIO_SESSIONS>/accounts.db``
(``db_path``). Like the run database it lives on the file system the web hosts and the workers
share (the workers read e-mail addresses and notification preferences), so it uses the default
rollback journal, a busy timeout and short-lived connections; its schema has its own
``schema_version`` and ordered ``MIGRATIONS``.

Every function takes the database path first (``db``) and opens its own connection, so it can be
used from a view, the CLI or a worker alike.

Secrets (API tokens, password-reset tokens, share links) are random (``secrets``, >= 192 bits),
shown once to their owner and stored only as their SHA-256: a copy of the database does not let
anyone sign in. Passwords are stored as scrypt hashes with a random salt per password and the
cost parameters in the stored string (``scrypt$n=32768,r=8,p=1$<salt>$<hash>``), so the cost can
be raised later (``authenticate`` re-hashes a password whose parameters are out of date).

Password rules (as Django's default validators): at least ``MIN_PASSWORD_LENGTH`` characters, not
entirely numeric, not one of the 19,646 common passwords in ``common-passwords.txt.gz`` (the list
Django ships, by Royce Williams:
https://gist.github.com/roycewilliams/226886fd01572964e1431ac8afc999ce, BSD-licensed as part of
Django), and not too similar (``difflib`` ratio >= 0.7) to the e-mail address, its local part or
the name and their parts.

The access rule, ``access``, is in one place: the owner and staff get ``"owner"``, a collaborator
the role given (``"read"`` or ``"write"``), anyone holding a valid share link ``"read"``, everyone
else ``"none"`` (which the views answer with 404, so a session's existence does not leak).
Session owners are user ids (``User.id``), stored in ``session.json`` and in the run records.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import gzip
import hashlib
import hmac
import re
import secrets
import sqlite3
import string
from collections.abc import Callable
from dataclasses import asdict, dataclass
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlite_utils

from app import db as sqlitedb
from app.plumbing import iso, now, parse_time

DB_NAME = "accounts.db"

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # keeps hashing and the similarity check cheap
MAX_SIMILARITY = 0.7
COMMON_PASSWORDS = Path(__file__).resolve().parent / "common-passwords.txt.gz"

# scrypt cost: n=2**15, r=8, p=1 takes ~32 MiB and ~70 ms per hash on one core
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
SCRYPT_SALT_BYTES, SCRYPT_KEY_BYTES = 16, 32
_SCRYPT_LIMITS = {"n": 2**20, "r": 32, "p": 16}  # refuse stored parameters beyond these

TOKEN_PREFIX = "regio_"
TOKEN_BYTES = 32
TOKEN_DISPLAY_CHARS = 10  # "regio_" + 4 random characters, shown in token lists
TOKEN_TOUCH_EVERY = 60.0  # seconds: last_used is written at most this often per token
RESET_TTL = dt.timedelta(hours=1)
SECRET_BYTES = 24  # reset and share-link secrets: 192 random bits
MAX_SECRET_LENGTH = 200

ROLES = ("read", "write")
ACCESS_LEVELS = ("none", "read", "write", "owner")  # in increasing order

MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 200
MAX_URL_LENGTH = 2000
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ID_ALPHABET = string.ascii_lowercase + string.digits


class AccountError(ValueError):
    """Input the accounts store refuses (a malformed e-mail address, a duplicate account...)."""


class PasswordError(AccountError):
    """A password breaks the password rules; ``problems`` lists every rule it breaks."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the password is not acceptable: " + "; ".join(problems))


class ResetError(AccountError):
    """A password-reset secret that is unknown, expired or already used."""


class UserNotFound(LookupError):
    """No user with this id or e-mail address."""


@dataclass(frozen=True)
class User:
    """An account, without its password hash (which never leaves this module)."""

    id: str
    email: str
    name: str
    is_staff: bool
    is_active: bool
    created: str
    last_login: str | None
    notify_email: bool
    webhook_url: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: sqlite3.Row | dict[str, Any]) -> User:
        return cls(
            id=row["id"],
            email=row["email"],
            name=row["name"],
            is_staff=bool(row["is_staff"]),
            is_active=bool(row["is_active"]),
            created=row["created"],
            last_login=row["last_login"],
            notify_email=bool(row["notify_email"]),
            webhook_url=row["webhook_url"],
        )


@dataclass(frozen=True)
class Token:
    """An API token as its owner sees it listed: never the secret, only its first characters."""

    id: str
    user_id: str
    name: str
    prefix: str
    created: str
    last_used: str | None
    revoked: str | None


@dataclass(frozen=True)
class ShareLink:
    """A read-only link to a session (the secret itself is shown only when it is created)."""

    id: str
    session_id: str
    created_by: str
    created: str
    revoked: str | None


@dataclass(frozen=True)
class Collaborator:
    user: User
    role: str


def db_path(sessions_dir: Path | str) -> Path:
    """Where the accounts database lives: ``<REGIO_SESSIONS>/accounts.db``."""
    return Path(sessions_dir) / DB_NAME


def _new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# ---------------------------------------------------------------------------------- database


def _m1_create_tables(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE users (
            id TEXT PRIMARY KEY,
            email TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL DEFAULT '',
            password_hash TEXT NOT NULL,
            is_staff INTEGER NOT NULL DEFAULT 0,
            is_active INTEGER NOT NULL DEFAULT 1,
            created TEXT NOT NULL,
            last_login TEXT,
            notify_email INTEGER NOT NULL DEFAULT 1,
            webhook_url TEXT
        );
        CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            name TEXT NOT NULL DEFAULT '',
            token_hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            created TEXT NOT NULL,
            last_used TEXT,
            revoked TEXT
        );
        CREATE INDEX tokens_user ON tokens(user_id);
        CREATE TABLE password_resets (
            token_hash TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            created TEXT NOT NULL,
            expires TEXT NOT NULL,
            used TEXT
        );
        CREATE INDEX password_resets_user ON password_resets(user_id);
        CREATE TABLE collaborators (
            session_id TEXT NOT NULL,
            user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('read', 'write')),
            added TEXT NOT NULL,
            PRIMARY KEY (session_id, user_id)
        );
        CREATE INDEX collaborators_user ON collaborators(user_id);
        CREATE TABLE share_links (
            id TEXT PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            session_id TEXT NOT NULL,
            created_by TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            created TEXT NOT NULL,
            revoked TEXT
        );
        CREATE INDEX share_links_session ON share_links(session_id);
        """
    )


# Append only: migration N brings the schema from version N-1 to N.
MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (_m1_create_tables,)


def connect(path: Path | str) -> contextlib.AbstractContextManager[sqlite_utils.Database]:
    """A short-lived connection to the accounts database, created and migrated on first use."""
    return sqlitedb.connect(path, MIGRATIONS, what="accounts database", foreign_keys=True)


_transaction = sqlitedb.transaction


def _one(db: sqlite_utils.Database, sql: str, params: list[Any]) -> sqlite3.Row | None:
    return db.execute(sql, params).fetchone()


# ---------------------------------------------------------------------------------- passwords


def hash_password(password: str) -> str:
    """An scrypt hash of ``password`` with a new random salt: ``scrypt$n=..,r=..,p=..$salt$hash``."""
    salt = secrets.token_bytes(SCRYPT_SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt$n={SCRYPT_N},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches a hash made by ``hash_password`` (constant-time compare)."""
    parsed = _parse_hash(encoded)
    if parsed is None:
        return False
    (n, r, p), salt, key = parsed
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(key)), key)


def needs_rehash(encoded: str) -> bool:
    """Whether a stored hash uses other parameters than ``hash_password`` does today."""
    parsed = _parse_hash(encoded)
    return parsed is None or parsed[0] != (SCRYPT_N, SCRYPT_R, SCRYPT_P)


def _scrypt(
    password: str, salt: bytes, n: int, r: int, p: int, length: int = SCRYPT_KEY_BYTES
) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * r * (n + p + 2), dklen=length
    )


def _parse_hash(encoded: str) -> tuple[tuple[int, int, int], bytes, bytes] | None:
    """The parameters, salt and key of a stored hash; None if it is malformed or too costly."""
    try:
        scheme, params, salt, key = encoded.split("$")
        values = dict(item.split("=", 1) for item in params.split(","))
        n, r, p = (int(values[name]) for name in ("n", "r", "p"))
        if scheme != "scrypt" or not all(
            1 <= v <= _SCRYPT_LIMITS[k] for k, v in zip("nrp", (n, r, p), strict=True)
        ):
            return None
        return (n, r, p), _unb64(salt), _unb64(key)
    except (ValueError, KeyError):
        return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when there is no such user, so both cases take the same time."""
    return hash_password(secrets.token_urlsafe(16))


@functools.cache
def _common_passwords() -> frozenset[str]:
    with gzip.open(COMMON_PASSWORDS, "rt", encoding="utf-8") as f:
        return frozenset(line.strip() for line in f if line.strip())


def password_problems(password: str, email: str = "", name: str = "") -> list[str]:
    """Every password rule ``password`` breaks, as sentences for the user (empty: acceptable)."""
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"it must contain at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(f"it must contain at most {MAX_PASSWORD_LENGTH} characters")
        return problems  # too long to be worth comparing
    if password.isdigit():
        problems.append("it can't be entirely numeric")
    if password.lower().strip() in _common_passwords():
        problems.append("it is too common")
    similar = _too_similar(password, email, name)
    if similar:
        problems.append(f"it is too similar to the {similar}")
    return problems


def check_password(password: str, email: str = "", name: str = "") -> None:
    """Raise ``PasswordError`` listing every rule ``password`` breaks."""
    if not isinstance(password, str):
        raise PasswordError(["it must be text"])
    problems = password_problems(password, email, name)
    if problems:
        raise PasswordError(problems)


def _too_similar(password: str, email: str, name: str) -> str | None:
    """Which personal detail ("e-mail address", "name") ``password`` resembles, if any."""
    password = password.lower()
    local = email.lower().partition("@")[0]
    for label, values in (("e-mail address", (email.lower(), local)), ("name", (name.lower(),))):
        for value in values:
            if not value:
                continue
            for part in {*re.split(r"[\W_]+", value), value}:
                if not part:
                    continue
                matcher = SequenceMatcher(a=password, b=part)
                if matcher.quick_ratio() >= MAX_SIMILARITY and matcher.ratio() >= MAX_SIMILARITY:
                    return label
    return None


# ------------------------------------------------------------------------------------- users


def normalize_email(email: str) -> str:
    """The e-mail address as stored (trimmed, lowercase); ``AccountError`` if it is malformed."""
    if not isinstance(email, str):
        raise AccountError("the e-mail address must be text")
    email = email.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or _CONTROL.search(email) or not _EMAIL.match(email):
        raise AccountError(f"{email[:100]!r} is not a valid e-mail address")
    return email


def _clean_name(name: str) -> str:
    if not isinstance(name, str):
        raise AccountError("the name must be text")
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH or _CONTROL.search(name):
        raise AccountError(
            f"the name must be at most {MAX_NAME_LENGTH} characters, without control characters"
        )
    return name


def check_webhook_url(url: str) -> str:
    """A webhook URL as stored: an absolute http(s) URL; ``AccountError`` otherwise."""
    if not isinstance(url, str):
        raise AccountError("the webhook URL must be text")
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or len(url) > MAX_URL_LENGTH
        or _CONTROL.search(url)
        or " " in url
    ):
        raise AccountError("the webhook URL must be an absolute http:// or https:// URL")
    return url


def create_user(db: Path | str, email: str, name: str, password: str, staff: bool = False) -> User:
    """Create an account; ``AccountError`` (or ``PasswordError``) if the input is refused."""
    email = normalize_email(email)
    name = _clean_name(name)
    check_password(password, email, name)
    password_hash = hash_password(password)
    with connect(db) as conn:
        row = {
            "id": _new_id(),
            "email": email,
            "name": name,
            "password_hash": password_hash,
            "is_staff": int(staff),
            "is_active": 1,
            "created": now(),
            "last_login": None,
            "notify_email": 1,
            "webhook_url": None,
        }
        try:
            conn["users"].insert(row)
        except sqlite3.IntegrityError:
            raise AccountError(
                f"an account with the e-mail address {email} exists already"
            ) from None
    return User.from_row(row)


def get_user(db: Path | str, user_id: str) -> User:
    """The user with this id; ``UserNotFound`` if there is none."""
    with connect(db) as conn:
        row = _one(conn, "SELECT * FROM users WHERE id = ?", [user_id])
    if row is None:
        raise UserNotFound(user_id)
    return User.from_row(row)


def get_user_by_email(db: Path | str, email: str) -> User:
    """The user with this e-mail address (any case); ``UserNotFound`` if there is none."""
    with connect(db) as conn:
        row = _one(conn, "SELECT * FROM users WHERE email = ?", [_lookup_email(email)])
    if row is None:
        raise UserNotFound(email)
    return User.from_row(row)


def _lookup_email(email: str) -> str:
    return email.strip().lower() if isinstance(email, str) else ""


def list_users(db: Path | str) -> list[User]:
    """Every user, by e-mail address."""
    with connect(db) as conn:
        return [User.from_row(r) for r in conn.execute("SELECT * FROM users ORDER BY email")]


def _set(db: Path | str, user_id: str, **changes: Any) -> User:
    """Update columns of one user and return the user; ``UserNotFound`` if there is none."""
    columns = ", ".join(f"{name} = ?" for name in changes)
    with connect(db) as conn:
        cursor = conn.execute(
            f"UPDATE users SET {columns} WHERE id = ?", [*changes.values(), user_id]
        )
        if cursor.rowcount == 0:
            raise UserNotFound(user_id)
        row = _one(conn, "SELECT * FROM users WHERE id = ?", [user_id])
    return User.from_row(row)  # type: ignore[arg-type]


def set_staff(db: Path | str, user_id: str, staff: bool) -> User:
    """Give or take staff rights (staff own every session)."""
    return _set(db, user_id, is_staff=int(bool(staff)))


def set_active(db: Path | str, user_id: str, active: bool) -> User:
    """Enable or disable an account: a disabled user cannot sign in and their tokens fail."""
    return _set(db, user_id, is_active=int(bool(active)))


def update_profile(
    db: Path | str,
    user_id: str,
    *,
    name: str | None = None,
    notify_email: bool | None = None,
    webhook_url: str | None = None,
) -> User:
    """Change the given profile fields (None: unchanged; ``webhook_url=""`` removes the webhook)."""
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = _clean_name(name)
    if notify_email is not None:
        changes["notify_email"] = int(bool(notify_email))
    if webhook_url is not None:
        changes["webhook_url"] = check_webhook_url(webhook_url) if webhook_url.strip() else None
    if not changes:
        return get_user(db, user_id)
    return _set(db, user_id, **changes)


def set_password(db: Path | str, user_id: str, password: str) -> User:
    """Change a user's password (the password rules apply)."""
    user = get_user(db, user_id)
    check_password(password, user.email, user.name)
    return _set(db, user_id, password_hash=hash_password(password))


def authenticate(db: Path | str, email: str, password: str) -> User | None:
    """The active user with this e-mail address and password, else None.

    Takes the same time whether or not the address is known (a dummy hash is verified then), so
    the answer's timing does not tell which addresses have accounts.
    """
    if not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
        password = ""
    with connect(db) as conn:
        row = _one(conn, "SELECT * FROM users WHERE email = ?", [_lookup_email(email)])
    ok = verify_password(password, row["password_hash"] if row else _dummy_hash())
    if row is None or not ok or not row["is_active"]:
        return None
    changes: dict[str, Any] = {"last_login": now()}
    if needs_rehash(row["password_hash"]):
        changes["password_hash"] = hash_password(password)
    return _set(db, row["id"], **changes)


def check_user_password(db: Path | str, user_id: str, password: str) -> bool:
    """Whether ``password`` is the active user's password: the re-authentication before a
    password change. Unlike ``authenticate`` it records no sign-in. The caller throttles it."""
    if not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
        password = ""
    with connect(db) as conn:
        row = _one(conn, "SELECT password_hash, is_active FROM users WHERE id = ?", [user_id])
    ok = verify_password(password, row["password_hash"] if row else _dummy_hash())
    return bool(ok and row is not None and row["is_active"])


# -------------------------------------------------------------------------------- API tokens


def create_token(db: Path | str, user_id: str, name: str = "") -> str:
    """A new API token for the user; returns the secret, which is not stored and shown only now."""
    name = _clean_name(name)
    get_user(db, user_id)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    with connect(db) as conn:
        conn["tokens"].insert(
            {
                "id": _new_id(),
                "user_id": user_id,
                "name": name,
                "token_hash": _digest(secret),
                "prefix": secret[:TOKEN_DISPLAY_CHARS],
                "created": now(),
                "last_used": None,
                "revoked": None,
            }
        )
    return secret


def verify_token(db: Path | str, secret: str) -> User | None:
    """The active user owning this (unrevoked) API token, else None; records its last use."""
    if (
        not isinstance(secret, str)
        or not secret.startswith(TOKEN_PREFIX)
        or len(secret) > MAX_SECRET_LENGTH
    ):
        return None
    with connect(db) as conn:
        row = _one(
            conn,
            "SELECT users.*, tokens.id AS token_id, tokens.last_used AS token_last_used "
            "FROM tokens JOIN users ON users.id = tokens.user_id "
            "WHERE tokens.token_hash = ? AND tokens.revoked IS NULL AND users.is_active",
            [_digest(secret)],
        )
        if row is None:
            return None
        last = row["token_last_used"]
        stamp = dt.datetime.now(dt.UTC)
        if last is None or (stamp - parse_time(last)).total_seconds() >= TOKEN_TOUCH_EVERY:
            conn.execute(
                "UPDATE tokens SET last_used = ? WHERE id = ?", [iso(stamp), row["token_id"]]
            )
    return User.from_row(row)


def list_tokens(db: Path | str, user_id: str) -> list[Token]:
    """The user's tokens (revoked ones too), newest first."""
    with connect(db) as conn:
        rows = conn.execute(
            "SELECT id, user_id, name, prefix, created, last_used, revoked FROM tokens "
            "WHERE user_id = ? ORDER BY created DESC, id",
            [user_id],
        ).fetchall()
    return [Token(**dict(r)) for r in rows]


def revoke_token(db: Path | str, user_id: str, token_id: str) -> bool:
    """Revoke one of the user's tokens; False if the user has no such unrevoked token."""
    with connect(db) as conn:
        cursor = conn.execute(
            "UPDATE tokens SET revoked = ? WHERE id = ? AND user_id = ? AND revoked IS NULL",
            [now(), token_id, user_id],
        )
    return cursor.rowcount == 1


# --------------------------------------------------------------------------- password resets


def start_reset(db: Path | str, email: str) -> str | None:
    """A one-use password-reset secret valid for ``RESET_TTL``; None if no active user has it.

    Earlier unused secrets of the user stop working. The caller answers the same way in both
    cases (e.g. "if the address has an account, a link is on its way"), so addresses do not leak.
    """
    try:
        user = get_user_by_email(db, email)
    except UserNotFound:
        return None
    if not user.is_active:
        return None
    secret = secrets.token_urlsafe(SECRET_BYTES)
    created = dt.datetime.now(dt.UTC)
    with connect(db) as conn, _transaction(conn):
        conn.execute(
            "UPDATE password_resets SET used = ? WHERE user_id = ? AND used IS NULL",
            [iso(created), user.id],
        )
        conn["password_resets"].insert(
            {
                "token_hash": _digest(secret),
                "user_id": user.id,
                "created": iso(created),
                "expires": iso(created + RESET_TTL),
                "used": None,
            }
        )
    return secret


def finish_reset(db: Path | str, secret: str, new_password: str) -> User:
    """Set a new password with a reset secret, which is then used up.

    ``ResetError`` if the secret is unknown, expired or used; ``PasswordError`` if the password
    breaks a rule (the secret stays valid then, so the user can try another password).
    """
    if not isinstance(secret, str) or len(secret) > MAX_SECRET_LENGTH:
        raise ResetError("this password-reset link is not valid")
    with connect(db) as conn, _transaction(conn):
        row = _one(
            conn,
            "SELECT password_resets.*, users.email, users.name, users.is_active "
            "FROM password_resets JOIN users ON users.id = password_resets.user_id "
            "WHERE token_hash = ?",
            [_digest(secret)],
        )
        if row is None or not row["is_active"]:
            raise ResetError("this password-reset link is not valid")
        if row["used"] is not None:
            raise ResetError("this password-reset link was used already: ask for a new one")
        stamp = dt.datetime.now(dt.UTC)
        if stamp >= parse_time(row["expires"]):
            raise ResetError("this password-reset link has expired: ask for a new one")
        check_password(new_password, row["email"], row["name"])
        conn.execute(
            "UPDATE password_resets SET used = ? WHERE token_hash = ?",
            [iso(stamp), row["token_hash"]],
        )
        conn.execute(
            "UPDATE users SET password_hash = ? WHERE id = ?",
            [hash_password(new_password), row["user_id"]],
        )
    return get_user(db, row["user_id"])


# ----------------------------------------------------------------------------------- sharing


def _check_session_id(session_id: str) -> str:
    if not isinstance(session_id, str) or not 0 < len(session_id) <= 64:
        raise AccountError("not a session id")
    return session_id


def add_collaborator(db: Path | str, session_id: str, email: str, role: str) -> User:
    """Let the user with this e-mail address read or write a session (changing a previous role).

    ``UserNotFound`` if nobody has this address; ``AccountError`` for a role other than ROLES.
    """
    _check_session_id(session_id)
    if role not in ROLES:
        raise AccountError(f"the role must be one of {', '.join(ROLES)}, not {role!r}")
    user = get_user_by_email(db, email)
    with connect(db) as conn:
        conn.execute(
            "INSERT INTO collaborators (session_id, user_id, role, added) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (session_id, user_id) DO UPDATE SET role = excluded.role",
            [session_id, user.id, role, now()],
        )
    return user


def remove_collaborator(db: Path | str, session_id: str, user_id: str) -> bool:
    """Stop sharing a session with a user; False if it was not shared with them."""
    with connect(db) as conn:
        cursor = conn.execute(
            "DELETE FROM collaborators WHERE session_id = ? AND user_id = ?", [session_id, user_id]
        )
    return cursor.rowcount == 1


def collaborators(db: Path | str, session_id: str) -> list[Collaborator]:
    """Who a session is shared with, and how, by e-mail address."""
    with connect(db) as conn:
        rows = conn.execute(
            "SELECT users.*, collaborators.role AS role FROM collaborators "
            "JOIN users ON users.id = collaborators.user_id "
            "WHERE collaborators.session_id = ? ORDER BY users.email",
            [session_id],
        ).fetchall()
    return [Collaborator(User.from_row(r), r["role"]) for r in rows]


def sessions_shared_with(db: Path | str, user_id: str) -> dict[str, str]:
    """The sessions shared with a user: ``{session_id: role}``."""
    with connect(db) as conn:
        rows = conn.execute(
            "SELECT session_id, role FROM collaborators WHERE user_id = ? ORDER BY added",
            [user_id],
        ).fetchall()
    return {r["session_id"]: r["role"] for r in rows}


def create_share_link(db: Path | str, session_id: str, user_id: str) -> str:
    """A new read-only link secret for a session (192 random bits); shown only now."""
    _check_session_id(session_id)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    with connect(db) as conn:
        conn["share_links"].insert(
            {
                "id": _new_id(),
                "token_hash": _digest(secret),
                "session_id": session_id,
                "created_by": user_id,
                "created": now(),
                "revoked": None,
            }
        )
    return secret


def resolve_share_link(db: Path | str, secret: str) -> str | None:
    """The session a valid (unrevoked) share-link secret opens, else None."""
    if not isinstance(secret, str) or not 0 < len(secret) <= MAX_SECRET_LENGTH:
        return None
    with connect(db) as conn:
        row = _one(
            conn,
            "SELECT session_id FROM share_links WHERE token_hash = ? AND revoked IS NULL",
            [_digest(secret)],
        )
    return row["session_id"] if row else None


def revoke_share_link(db: Path | str, session_id: str, link_id: str) -> bool:
    """Revoke one of a session's share links; False if the session has no such live link."""
    with connect(db) as conn:
        cursor = conn.execute(
            "UPDATE share_links SET revoked = ? WHERE id = ? AND session_id = ? "
            "AND revoked IS NULL",
            [now(), link_id, session_id],
        )
    return cursor.rowcount == 1


def list_share_links(db: Path | str, session_id: str) -> list[ShareLink]:
    """A session's share links (revoked ones too), newest first."""
    with connect(db) as conn:
        rows = conn.execute(
            "SELECT id, session_id, created_by, created, revoked FROM share_links "
            "WHERE session_id = ? ORDER BY created DESC, id",
            [session_id],
        ).fetchall()
    return [ShareLink(**dict(r)) for r in rows]


def forget_session(db: Path | str, session_id: str) -> None:
    """Remove a deleted session's collaborators and share links."""
    with connect(db) as conn, _transaction(conn):
        conn.execute("DELETE FROM collaborators WHERE session_id = ?", [session_id])
        conn.execute("DELETE FROM share_links WHERE session_id = ?", [session_id])


# ------------------------------------------------------------------------------ access rule


def access(
    db: Path | str,
    session_owner: str | None,
    session_id: str,
    user: User | None,
    share_secret: str | None = None,
) -> str:
    """What ``user`` (None: anonymous) may do with a session: "none", "read", "write" or "owner".

    The session's owner and staff: "owner"; a collaborator: their role; anyone with a valid share
    link of this session: "read"; everyone else, and disabled users: "none". A session without an
    owner (made in single-user mode) belongs to staff only.
    """
    level = "none"
    if user is not None and user.is_active:
        if user.is_staff or (session_owner is not None and user.id == session_owner):
            return "owner"
        with connect(db) as conn:
            row = _one(
                conn,
                "SELECT role FROM collaborators WHERE session_id = ? AND user_id = ?",
                [session_id, user.id],
            )
        if row is not None:
            level = row["role"]
    if level == "none" and share_secret and resolve_share_link(db, share_secret) == session_id:
        level = "read"
    return level


def at_least(level: str, needed: str) -> bool:
    """Whether an ``access`` level allows what ``needed`` does (``at_least(level, "write")``)."""
    return ACCESS_LEVELS.index(level) >= ACCESS_LEVELS.index(needed)
