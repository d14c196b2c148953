"""Users and API tokens. A token is random, shown once, and stored only as its sha256.

Tokens look like ``qg_<43 url-safe chars>`` (256 bits). Lookup hashes the presented token
and compares hashes, so the database never holds anything a thief could replay.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from quantgrid.errors import AuthError, ConfigError, Conflict, NotFound
from quantgrid.hub.server.db import Database
from quantgrid.hub.server.models import Token, User, Vote, utcnow

TOKEN_PREFIX = "qg_"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, detached from any session."""

    id: int
    name: str
    is_admin: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ConfigError(f"invalid user name {name!r}",
                          hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def add_user(db: Database, name: str, *, admin: bool = False) -> str:
    """Create a user and return their first token (the only time it is visible)."""
    _check_name(name)
    token = new_token()
    try:
        with db.write() as s:
            user = User(name=name, is_admin=admin)
            s.add(user)
            s.flush()
            s.add(Token(user_id=user.id, token_hash=hash_token(token), prefix=token[:8]))
    except IntegrityError:
        raise Conflict(f"user {name!r} already exists",
                       hint=f"issue them a new token with `quantgrid hub user token {name}`") from None
    return token


def issue_token(db: Database, name: str) -> str:
    """Another token for an existing (enabled) user."""
    token = new_token()
    with db.write() as s:
        user = s.scalar(select(User).where(User.name == name))
        if user is None:
            raise NotFound(f"no user named {name!r}", hint=f"create one with `quantgrid hub user add {name}`")
        user.disabled = False
        s.add(Token(user_id=user.id, token_hash=hash_token(token), prefix=token[:8]))
    return token


def revoke_user(db: Database, name: str) -> int:
    """Revoke every token of ``name`` and withdraw their upvotes; returns how many tokens were live."""
    with db.write() as s:
        user = s.scalar(select(User).where(User.name == name))
        if user is None:
            raise NotFound(f"no user named {name!r}", hint="list users with `quantgrid hub user list`")
        s.execute(delete(Vote).where(Vote.user_id == user.id))
        return s.execute(
            update(Token).where(Token.user_id == user.id, Token.revoked_at.is_(None)).values(revoked_at=utcnow())
        ).rowcount


def list_users(db: Database) -> list[dict]:
    with db.read() as s:
        users = s.scalars(select(User).order_by(User.id)).all()
        live = dict(s.execute(
            select(Token.user_id, Token.id).where(Token.revoked_at.is_(None))
        ).all())
        return [{"name": u.name, "admin": u.is_admin, "active": u.id in live, "created_at": u.created_at}
                for u in users]


def authenticate(db: Database, token: str | None) -> Principal:
    """The user a bearer token belongs to, or AuthError (missing, unknown or revoked)."""
    if not token:
        raise AuthError("missing API token", hint="log in with `quantgrid login` (or set QUANTGRID_TOKEN)")
    with db.read() as s:
        row = s.execute(
            select(User.id, User.name, User.is_admin, Token.revoked_at)
            .join(Token, Token.user_id == User.id)
            .where(Token.token_hash == hash_token(token), User.disabled.is_(False))
        ).first()
    if row is None:
        raise AuthError("invalid API token", hint="check the token, or ask the hub admin for a new one")
    if row.revoked_at is not None:
        raise AuthError("this API token was revoked", hint="ask the hub admin for a new token, then `quantgrid login`")
    return Principal(row.id, row.name, row.is_admin)
