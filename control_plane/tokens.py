"""API keys and the client tokens the prober mints (PROTOCOL.md: JWT HS256, `kid` = KEY_ID).

Pure: the time is passed in.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import jwt

from control_plane.errors import Forbidden, Unauthorized


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    secret: str

    @classmethod
    def parse(cls, text: str) -> ApiKey:
        """`KEY_ID:SECRET`; raises Unauthorized when it is not in that form."""
        key_id, sep, secret = text.partition(":")
        if not sep or not key_id or not secret:
            raise Unauthorized("an API key is KEY_ID:SECRET")
        return cls(key_id, secret)

    @property
    def text(self) -> str:
        return f"{self.key_id}:{self.secret}"


def mint_token(
    key: ApiKey, client_id: str, capabilities: dict[str, list[str]], now_s: int, ttl_s: int
) -> str:
    """A client token for `client_id` allowed `capabilities`, valid from now_s for ttl_s."""
    claims = {"sub": client_id, "iat": now_s, "exp": now_s + ttl_s, "cap": capabilities}
    return jwt.encode(claims, key.secret, algorithm="HS256", headers={"kid": key.key_id})


def check_bearer(authorization: str | None, keys: tuple[ApiKey, ...]) -> ApiKey:
    """The configured key given as ``Authorization: Bearer KEY_ID:SECRET``.

    Raises Unauthorized when no key is given (or not as a Bearer key), Forbidden when the
    key is not a configured one.
    """
    if not authorization:
        raise Unauthorized("an API key is required: Authorization: Bearer KEY_ID:SECRET")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("an API key is required: Authorization: Bearer KEY_ID:SECRET")
    given = ApiKey.parse(value.strip())
    for k in keys:
        # Compare every key in constant time so timing does not reveal a prefix.
        if hmac.compare_digest(k.text.encode(), given.text.encode()):
            return k
    raise Forbidden("this API key is not accepted")
