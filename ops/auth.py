"""Who is using the ops view, and what they may do: sign-in, the session, roles.

Role: authentication and authorisation for ``/ops``. Users come from the config
(``ops.users``, werkzeug password hashes) or, when ``ops.proxy_header`` is set, from an
authenticating reverse proxy's header, trusted only from ``ops.proxy_addresses``. The
session is Flask's signed cookie; it holds the user's name, a fingerprint of their
password hash and a session id that the store knows, never the role: the role is read
from the config on every request, so a changed role or a removed user takes effect at
once, and signing out ends the session in the store, so a copied cookie stops working.
Failed password sign-ins are counted in the store per user name and per address
(``ops.sign_in``): past the limit the name or address is locked for a while.

May import: flask, werkzeug. Nothing of ours beyond the ``Ops`` context it is given.

Invariants: roles are ordered ``monitor`` < ``reader`` < ``admin`` and checked in one
place (``requires``); a password is never logged; an unknown user name costs the same
password check as a known one, and counts against its name like a known one.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypeVar

from flask import abort, g, redirect, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

import identity

log = logging.getLogger("gateway.ops")

#: The roles, weakest first: each may do everything the ones before it may.
ROLES = ("monitor", "reader", "admin")
RANK = {role: n for n, role in enumerate(ROLES)}

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Operator:
    """The signed-in user of this request. ``via`` is ``password`` or ``proxy``."""

    name: str
    role: str
    via: str

    def can(self, role: str) -> bool:
        return RANK.get(self.role, -1) >= RANK[role]


_dummy_hash: str | None = None


def _dummy() -> str:
    """A hash to check unknown users' passwords against, so they take as long as known ones."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = generate_password_hash("no user has this password")
    return _dummy_hash


def _secret(user: Any) -> str | None:
    stored = getattr(user, "password_hash", None)
    if stored is None:
        return None
    return stored.get_secret_value() if hasattr(stored, "get_secret_value") else str(stored)


def fingerprint(user: Any) -> str:
    """A short digest of the user's password hash: a changed password ends old sessions."""
    return hashlib.sha256((_secret(user) or "proxy-only").encode()).hexdigest()[:16]


def check_login(users: dict[str, Any], name: str, password: str) -> Any | None:
    """The user if ``name`` and ``password`` match, else None (always one hash check)."""
    user = users.get(name)
    stored = _secret(user) if user is not None else None
    try:
        ok = check_password_hash(stored or _dummy(), password)
    except (ValueError, TypeError):  # a malformed hash in the config
        log.error("ops: the password hash of a user is not a werkzeug hash", extra={"user": name[:64]})
        ok = False
    return user if ok and stored is not None else None


def sign_in(ops: Any, user: Any) -> None:
    """Start a fresh session for ``user`` (a new cookie: no session fixation), known to the store."""
    session.clear()
    session.permanent = True
    session["ops_user"] = user.name
    session["ops_key"] = fingerprint(user)
    session["ops_sid"] = ops.store.start_session(user.name, ops.instant())


def sign_out(ops: Any) -> None:
    """End the session here and in the store: the same cookie, copied, no longer signs in."""
    sid = session.get("ops_sid")
    if isinstance(sid, str) and sid:
        ops.store.end_sessions(sid=sid, now=ops.instant())
    session.clear()


def sign_in_keys(name: str, address: str | None) -> tuple[str, str]:
    """The throttling keys of a sign-in: its user name and its address."""
    return f"user:{name[:64]}", f"address:{(address or 'unknown')[:64]}"


def locked_until(ops: Any, name: str, address: str | None) -> str | None:
    """When the lock on this user name or address ends, if one is in force now."""
    return ops.store.sign_in_locked_until(list(sign_in_keys(name, address)), ops.instant())


#: ``config.SignInSection``'s defaults, for an ``Ops`` built without the config's
DEFAULT_LIMITS = SimpleNamespace(max_failures_per_user=5, max_failures_per_address=20, window_s=900, lockout_s=900)


def record_failure(ops: Any, name: str, address: str | None) -> list[str]:
    """Count a failed sign-in against the name and the address; audit and return the keys it locked."""
    limits = ops.sign_in or DEFAULT_LIMITS
    user_key, address_key = sign_in_keys(name, address)
    locked = ops.store.record_sign_in_failure(
        {user_key: limits.max_failures_per_user, address_key: limits.max_failures_per_address},
        window_s=limits.window_s, lockout_s=limits.lockout_s, now=ops.instant())
    for key in locked:
        kind, _, value = key.partition(":")
        allowed = limits.max_failures_per_user if kind == "user" else limits.max_failures_per_address
        ops.store.audit(value if kind == "user" else "-", "-", "sign_in_locked", key,
                        f"{allowed} failed sign-ins within {limits.window_s} s (the last from {address}); "
                        f"locked for {limits.lockout_s} s")
        log.warning("ops: sign-in locked", extra={"key": key, "remote_addr": address, "lockout_s": limits.lockout_s})
    return locked


def record_success(ops: Any, name: str) -> None:
    ops.store.clear_sign_in_failures(sign_in_keys(name, None)[0])


def identify(ops: Any) -> Operator | None:
    """The user of the current request: the proxy's header (from a trusted address) or the
    session; None when nobody is signed in. Raises 403 for a proxy user not in the config."""
    header = ops.proxy_header
    if header and request.headers.get(header):
        named = request.headers.get(header, "").strip()
        if request.remote_addr in set(ops.proxy_addresses or ()):
            user = ops.users.get(named)
            if user is None:
                log.warning("ops: the proxy named a user who is not in ops.users",
                            extra={"user": named[:64], "remote_addr": request.remote_addr})
                abort(403, description=f"The user '{named[:64]}' may not use the ops view.")
            return Operator(user.name, user.role, "proxy")
        log.warning("ops: ignored the proxy user header from an address that is not trusted",
                    extra={"header": header, "remote_addr": request.remote_addr})
    by_cert = {u.client_cert_hsa_id.upper(): u for u in ops.users.values() if getattr(u, "client_cert_hsa_id", None)}
    if by_cert:
        caller = identity.caller_of(request.environ, remote_addr=request.remote_addr, proxy_header=None,
                                    proxy_addresses=[], ca=None)  # the TLS connection's own, verified certificate
        if caller is not None and caller.hsa_id in by_cert:
            user = by_cert[caller.hsa_id]
            return Operator(user.name, user.role, "certificate")
    name = session.get("ops_user")
    if not name:
        return None
    user = ops.users.get(name)
    if user is None or not hmac.compare_digest(str(session.get("ops_key", "")), fingerprint(user)):
        session.clear()  # the user was removed or their password changed
        return None
    sid = session.get("ops_sid")
    if not isinstance(sid, str) or ops.store.session_user(sid) != user.name:
        session.clear()  # signed out (perhaps in another copy of this cookie), or from before sessions were kept
        return None
    return Operator(user.name, user.role, "password")


def current() -> Operator | None:
    return g.get("ops_operator")


def requires(role: str) -> Callable[[F], F]:
    """The one role check of the view: the signed-in user must have ``role`` or above."""
    if role not in RANK:
        raise ValueError(f"unknown role {role!r}")

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            operator = current()
            if operator is None:
                return redirect(url_for("ops.login", next=request.full_path if request.method == "GET" else None))
            if not operator.can(role):
                log.warning("ops: forbidden", extra={"user": operator.name, "role": operator.role,
                                                     "needs": role, "path": request.path})
                abort(403, description=f"This needs the role '{role}'; you are '{operator.role}'.")
            return view(*args, **kwargs)

        checked.required_role = role  # type: ignore[attr-defined]
        return checked  # type: ignore[return-value]

    return decorate
