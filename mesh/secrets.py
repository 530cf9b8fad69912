"""Deployment secrets: NATS passwords per component and API keys.

Kept apart from the topology so the topology can be shared, printed and committed.
A secrets file is JSON: ``{"nats": {"edge": "...", ...}, "api_keys": ["id:secret"]}``.

Each role needs only part of it (:data:`ROLE_PASSWORDS`): an edge its own NATS password
and the API keys, a control plane likewise, a nats-server every password and no API
key. :meth:`Secrets.for_role` cuts a role's file out of the whole (``edgemesh secrets
--for-role``), so a deployment can give each machine only its role's file; a component
checks at start-up that its file holds what it needs (:meth:`Secrets.require`).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mesh.topology import TopologyError

# Account users (edge, control, sys: each component connects as its own) and the
# route and gateway passwords.
PASSWORDS = ("edge", "control", "sys", "route", "gateway")

Role = Literal["edge", "control", "nats"]
ROLES: tuple[Role, ...] = ("edge", "control", "nats")
# What each role's machines need: their NATS passwords, and whether the API keys.
ROLE_PASSWORDS: dict[Role, tuple[str, ...]] = {
    "edge": ("edge",),
    "control": ("control",),
    "nats": PASSWORDS,
}
ROLE_API_KEYS: dict[Role, bool] = {"edge": True, "control": True, "nats": False}


class NatsCredentials(BaseModel):
    """The NATS passwords; a role's file holds only its role's (the others are None)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    edge: str | None = Field(default=None, min_length=16)
    control: str | None = Field(default=None, min_length=16)
    sys: str | None = Field(default=None, min_length=16)
    route: str | None = Field(default=None, min_length=16)
    gateway: str | None = Field(default=None, min_length=16)

    @field_validator("*")
    @classmethod
    def _printable(cls, v: str | None) -> str | None:
        if v is not None and not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError("must be letters, digits, '-' or '_' (it is written into configs)")
        return v


class Secrets(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    nats: NatsCredentials
    api_keys: tuple[str, ...] = ()

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for k in v:
            key_id, sep, secret = k.partition(":")
            if not sep or not key_id or len(secret) < 16:
                raise ValueError("each key must be KEY_ID:SECRET with a secret of 16+ chars")
        return v

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True)

    def password(self, user: str) -> str:
        """The NATS password of `user`. Raises TopologyError when this file has none."""
        value: str | None = getattr(self.nats, user)
        if value is None:
            raise TopologyError(
                f"secrets: no nats.{user} password in this secrets file "
                "(a file cut for another role? see `edgemesh secrets --for-role`)"
            )
        return value

    def require(self, role: Role) -> None:
        """Raise TopologyError unless this file holds every password `role` needs."""
        for user in ROLE_PASSWORDS[role]:
            self.password(user)

    def for_role(self, role: Role) -> Secrets:
        """Only what `role`'s machines need. Raises TopologyError when it is not here."""
        self.require(role)
        kept = {u: getattr(self.nats, u) for u in ROLE_PASSWORDS[role]}
        api_keys = self.api_keys if ROLE_API_KEYS[role] else ()
        return Secrets(nats=NatsCredentials(**kept), api_keys=api_keys)


def generate_secrets(api_key_id: str = "dev") -> Secrets:
    """Fresh random credentials, for `edgemesh dev` and test fixtures."""
    creds = NatsCredentials(**{u: secrets.token_urlsafe(24) for u in PASSWORDS})
    return Secrets(nats=creds, api_keys=(f"{api_key_id}:{secrets.token_urlsafe(24)}",))


def load_secrets(path: str | Path) -> Secrets:
    """Read a secrets file. Raises TopologyError naming the file and field."""
    p = Path(path)
    try:
        data = json.loads(p.read_bytes())
    except OSError as exc:
        raise TopologyError(f"{p}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise TopologyError(f"{p}: not valid JSON: {exc}") from None
    try:
        return Secrets.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{p}: {'.'.join(str(x) for x in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        ]
        raise TopologyError("\n".join(lines)) from None


def write_secrets(s: Secrets, path: str | Path) -> None:
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(s.to_json())


def api_keys_from_env(env: dict[str, str] | None = None) -> tuple[str, ...]:
    """API keys from EDGEMESH_KEYS (comma-separated KEY_ID:SECRET)."""
    raw = (env if env is not None else os.environ).get("EDGEMESH_KEYS", "")
    return tuple(k.strip() for k in raw.split(",") if k.strip())
