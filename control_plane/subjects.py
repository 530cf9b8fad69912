"""Every NATS subject, bucket and probe channel name the control plane uses: built only here."""

from __future__ import annotations

from mesh.control import REGION_STATES

__all__ = [
    "OBSERVATIONS",
    "REGION_STATES",
    "drain_bucket",
    "observation_subject",
    "probe_channel",
    "probe_channel_glob",
]

# Each instance publishes one report per probe round on em.ctl.obs.<its region>.
OBSERVATIONS = "em.ctl.obs.>"
_OBSERVATION_PREFIX = "em.ctl.obs."

# The drain book is persisted in one JetStream KV bucket per region, under this key.
DRAIN_KEY = "drains"

_PROBE_CHANNEL_PREFIX = "_edgemesh:probe:"


def observation_subject(observer: str) -> str:
    return _OBSERVATION_PREFIX + observer


def observer_of(subject: str) -> str | None:
    """The observer a report subject belongs to, None if it is not a report subject."""
    if not subject.startswith(_OBSERVATION_PREFIX):
        return None
    rest = subject[len(_OBSERVATION_PREFIX) :]
    return rest if rest and "." not in rest else None


def drain_bucket(region: str) -> str:
    """The KV bucket (placed in `region`'s cluster) where that region's instance keeps drains."""
    return f"EM_CTL_{region}"


def probe_channel(observer: str) -> str:
    """The channel an observer subscribes to at its own region's edge for synthetic publishes."""
    return _PROBE_CHANNEL_PREFIX + observer


def probe_channel_glob() -> str:
    return _PROBE_CHANNEL_PREFIX + "*"
