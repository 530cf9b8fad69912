"""Deployment secrets: NATS passwords per component and API keys.

Kept apart from the topology so the topology can be shared, printed and committed.
A secrets file is JSON: ``{"nats": {"edge": "...", ...}, "api_keys": ["id:secret"]}``.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mesh.topology import TopologyError

# Account users: each component connects as its own user.
NATS_USERS = ("edge", "control", "sys")


class NatsCredentials(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    edge: str = Field(min_length=16)
    control: str = Field(min_length=16)
    sys: str = Field(min_length=16)
    route: str = Field(min_length=16)
    gateway: str = Field(min_length=16)

    @field_validator("*")
    @classmethod
    def _printable(cls, v: str) -> str:
        if not all(c.isalnum() or c in "-_" for c in v):
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
        return self.model_dump_json(indent=2)


def generate_secrets(api_key_id: str = "dev") -> Secrets:
    """Fresh random credentials, for `edgemesh dev` and test fixtures."""
    creds = NatsCredentials(
        **{u: secrets.token_urlsafe(24) for u in (*NATS_USERS, "route", "gateway")}
    )
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
