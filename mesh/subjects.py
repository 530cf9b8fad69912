"""Every NATS subject and stream name of the data plane is built here, and only here.

Region ``R`` stores channel messages on ``em.msg.R.<token>`` in stream ``EM_R``,
which republishes each one to ``em.live.R.<token>``. An edge listens to
``em.live.*.<token>`` for a channel. In region ``R``, the stream of every other
region ``O`` is mirrored as ``EM_O_IN_R`` (region names never contain ``_``, so the
name is unambiguous and unique across the supercluster).
"""

from __future__ import annotations

STORED_PREFIX = "em.msg"
LIVE_PREFIX = "em.live"


def stream_name(region: str) -> str:
    return f"EM_{region}"


def mirror_name(origin: str, region: str) -> str:
    """The mirror of `origin`'s stream kept in `region`."""
    return f"EM_{origin}_IN_{region}"


def stored_subject(region: str, token: str) -> str:
    return f"{STORED_PREFIX}.{region}.{token}"


def stored_wildcard(region: str) -> str:
    return f"{STORED_PREFIX}.{region}.>"


def live_subject(region: str, token: str) -> str:
    return f"{LIVE_PREFIX}.{region}.{token}"


def live_wildcard(token: str) -> str:
    return f"{LIVE_PREFIX}.*.{token}"


def live_region_wildcard(region: str) -> str:
    return f"{LIVE_PREFIX}.{region}.>"


def direct_get_subject(stream: str) -> str:
    return f"$JS.API.DIRECT.GET.{stream}"


def split_stored_subject(subject: str) -> tuple[str, str] | None:
    """(region, token) of an ``em.msg.R.T`` or ``em.live.R.T`` subject, else None."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[0] != "em" or parts[1] not in ("msg", "live"):
        return None
    return parts[2], parts[3]
