"""API keys and client tokens (JWT, HS256, header ``kid``). Pure: time is an argument.

A token's claims: ``sub`` (client id), ``exp``, ``iat``, ``cap`` (see
:mod:`edge.capabilities`). It is signed with the secret of the API key named by
``kid``; the key id also scopes the client's message ids (tenants cannot collide).
The REST API also takes an API key itself (``Bearer KEY_ID:SECRET``): every capability.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import jwt

from edge.capabilities import Capabilities, CapabilityError
from edge.errors import EdgeError, token_expired, unauthorized

ALGORITHM = "HS256"
MAX_TOKEN_BYTES = 8192
MAX_CLIENT_ID_BYTES = 128


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what they may do."""

    client_id: str | None
    key_id: str  # the API key the credential derives from: the idempotency scope
    capabilities: Capabilities
    expires_at: float | None  # seconds since the epoch; None for an API key


class KeyRing:
    """The API keys an edge accepts: KEY_ID -> SECRET."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._keys = dict(keys)

    @classmethod
    def from_pairs(cls, pairs: Iterable[str]) -> KeyRing:
        """From ``KEY_ID:SECRET`` strings; a later pair with the same id wins."""
        keys: dict[str, str] = {}
        for pair in pairs:
            key_id, sep, secret = pair.strip().partition(":")
            if not sep or not key_id or not secret:
                raise ValueError("an API key must be KEY_ID:SECRET")
            keys[key_id] = secret
        return cls(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def secret(self, key_id: str) -> str | None:
        return self._keys.get(key_id)

    def check_api_key(self, credential: str) -> Principal | None:
        """The principal of ``KEY_ID:SECRET`` when it is one of our keys, else None."""
        key_id, sep, secret = credential.partition(":")
        known = self._keys.get(key_id) if sep else None
        if known is None or not hmac.compare_digest(known.encode(), secret.encode()):
            return None
        return Principal(None, key_id, Capabilities.everything(), None)

    def mint(
        self,
        key_id: str,
        client_id: str,
        capabilities: Capabilities,
        now: float,
        ttl_s: float,
    ) -> tuple[str, int]:
        """A signed token and its expiry (whole seconds since the epoch)."""
        secret = self._keys[key_id]
        exp = int(now + ttl_s)
        claims = {"sub": client_id, "iat": int(now), "exp": exp, "cap": capabilities.to_claim()}
        return jwt.encode(claims, secret, algorithm=ALGORITHM, headers={"kid": key_id}), exp

    def verify(self, token: str, now: float) -> Principal:
        """Check signature, claims and expiry at time `now`.

        Raises EdgeError 40100 (missing/malformed/badly signed/unknown key/bad claims)
        or 40101 (expired).
        """
        if not token:
            raise unauthorized("no token")
        if len(token) > MAX_TOKEN_BYTES:
            raise unauthorized("token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise unauthorized("malformed token") from None
        key_id = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(key_id, str):
            raise unauthorized(f"token must be {ALGORITHM} with a kid")
        secret = self._keys.get(key_id)
        if secret is None:
            raise unauthorized("unknown key id")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.InvalidTokenError:
            raise unauthorized("bad token signature") from None
        return _principal(claims, key_id, now)


def _principal(claims: dict[str, Any], key_id: str, now: float) -> Principal:
    sub, exp = claims.get("sub"), claims.get("exp")
    if not isinstance(sub, str) or not sub or len(sub.encode()) > MAX_CLIENT_ID_BYTES:
        raise unauthorized(f"token sub must be a client id of 1-{MAX_CLIENT_ID_BYTES} bytes")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise unauthorized("token has no numeric exp")
    if exp <= now:
        raise token_expired()
    try:
        caps = Capabilities.parse(claims.get("cap", {}))
    except CapabilityError as exc:
        raise unauthorized(f"token {exc}") from None
    return Principal(sub, key_id, caps, float(exp))


def bearer(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer ...`` header, if any."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def websocket_credential(query_string: bytes, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """A WebSocket client's credential, from its ASGI scope's ``query_string`` and
    ``headers``: ``?token=`` (the last one, when not empty), else the ``Authorization:
    Bearer`` header (the first)."""
    query = query_string.decode("latin-1")
    tokens = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "token"]
    if tokens and tokens[-1]:
        return tokens[-1]
    for name, value in headers:
        if name == b"authorization":
            return bearer(value.decode("latin-1"))
    return None


def authenticate(
    keys: KeyRing, credential: str | None, now: float, allow_api_key: bool
) -> Principal:
    """A token, or (REST only) an API key. Raises EdgeError 40100/40101."""
    if not credential:
        raise unauthorized("no token: pass ?token=... or Authorization: Bearer ...")
    # A JWT is base64url segments joined by ".": a ":" can only be an API key.
    if allow_api_key and ":" in credential:
        principal = keys.check_api_key(credential)
        if principal is None:
            raise unauthorized("unknown API key")
        return principal
    return keys.verify(credential, now)


__all__ = ["EdgeError", "KeyRing", "Principal", "authenticate", "bearer"]
