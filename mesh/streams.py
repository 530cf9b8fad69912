"""Create or update, idempotently, a region's stream and its mirrors of the other regions.

Every edge calls :func:`ensure_streams` at start-up; concurrent calls from several edges
of a region converge (an identical create is a no-op; a differing one becomes an update).
"""

from __future__ import annotations

import asyncio
import logging

import nats.errors
from nats.js.api import (
    DiscardPolicy,
    Placement,
    RePublish,
    StorageType,
    StreamConfig,
    StreamSource,
)
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from mesh.errors import MeshUnavailable
from mesh.settings import MeshSettings
from mesh.subjects import live_region_wildcard, mirror_name, stored_wildcard, stream_name
from mesh.topology import Topology

log = logging.getLogger(__name__)

# The fields ensure_streams owns; anything else an operator set on a stream is kept.
_OWNED = (
    "subjects",
    "max_age",
    "max_msgs_per_subject",
    "duplicate_window",
    "allow_direct",
    "mirror_direct",
    "republish",
    "num_replicas",
)


def origin_stream_config(topology: Topology, region: str, settings: MeshSettings) -> StreamConfig:
    """``EM_<region>``: captures the region's publishes, dedups, republishes to live."""
    servers = len(topology.region(region).nats)
    return StreamConfig(
        name=stream_name(region),
        subjects=[stored_wildcard(region)],
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=settings.max_age_s,
        max_msgs_per_subject=settings.max_msgs_per_channel,
        duplicate_window=settings.duplicate_window_s,
        num_replicas=settings.replicas_for(servers),
        placement=Placement(cluster=region),
        allow_direct=True,
        republish=RePublish(src=stored_wildcard(region), dest=live_region_wildcard(region)),
    )


def mirror_stream_config(
    topology: Topology, origin: str, region: str, settings: MeshSettings
) -> StreamConfig:
    """In `region`, the mirror of `origin`'s stream; it answers direct gets for it."""
    servers = len(topology.region(region).nats)
    return StreamConfig(
        name=mirror_name(origin, region),
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=settings.max_age_s,
        max_msgs_per_subject=settings.max_msgs_per_channel,
        num_replicas=settings.replicas_for(servers),
        placement=Placement(cluster=region),
        mirror=StreamSource(name=stream_name(origin)),
        mirror_direct=True,
        allow_direct=True,
    )


def _differs(have: StreamConfig, want: StreamConfig) -> bool:
    """Whether an owned field differs. None, 0 and False count as the same "unset": the
    server omits what a client sets to its zero value, and a spurious update restarts a
    mirror's copying (measured: up to ~14 s before it resumes)."""
    for f in _OWNED:
        w, h = getattr(want, f), getattr(have, f)
        if f == "republish":
            if (w is None) != (h is None):
                return True
            if w is not None and (h.src, h.dest) != (w.src, w.dest):
                return True
        elif isinstance(w, float) or isinstance(h, float):
            if abs((h or 0) - (w or 0)) > 1e-6:
                return True
        elif (h or None) != (w or None):
            return True
    return False


async def _ensure(js: JetStreamContext, want: StreamConfig) -> None:
    assert want.name is not None
    for _attempt in range(3):
        try:
            info = await js.stream_info(want.name)
        except NotFoundError:
            try:
                await js.add_stream(config=want)
                return
            except APIError as exc:
                if exc.err_code == 10058:  # name in use: another edge won the race
                    continue
                raise
        if _differs(info.config, want):
            await js.update_stream(config=want)
        return


async def _create_if_missing(js: JetStreamContext, want: StreamConfig) -> None:
    assert want.name is not None
    try:
        await js.stream_info(want.name)
    except NotFoundError:
        try:
            await js.add_stream(config=want)
        except APIError as exc:
            if exc.err_code != 10058:  # name in use: its own region made it meanwhile
                raise


async def ensure_streams(
    js: JetStreamContext, topology: Topology, region: str, settings: MeshSettings
) -> None:
    """Make ``EM_<region>`` and, in `region`, a mirror of every other region's stream.

    A mirror made before its origin stream exists takes ~40 s to start copying
    (measured), so another region's stream that does not exist yet is created here too
    (placed in its own cluster, same config its edges use; never updated from here).
    That step is best effort: a region that is down must not stop this one starting.
    Raises MeshUnavailable when JetStream does not set up this region's streams.
    """
    others = [o for o in topology.names if o != region]
    try:
        await _ensure(js, origin_stream_config(topology, region, settings))
    except (nats.errors.Error, APIError, TimeoutError) as exc:
        raise MeshUnavailable(f"JetStream did not set up the stream of {region}: {exc}") from exc
    for other in others:
        try:
            await asyncio.wait_for(
                _create_if_missing(js, origin_stream_config(topology, other, settings)),
                settings.request_timeout_s,
            )
        except (nats.errors.Error, APIError, TimeoutError) as exc:
            log.info(
                "stream of %s not checked from %s (%s); its edges create it", other, region, exc
            )
    try:
        for other in others:
            await _ensure(js, mirror_stream_config(topology, other, region, settings))
    except (nats.errors.Error, APIError, TimeoutError) as exc:
        raise MeshUnavailable(f"JetStream did not set up the mirrors of {region}: {exc}") from exc
