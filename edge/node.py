"""One edge node's process state and lifecycle: NATS, the mesh, sessions, drain.

Lifecycle (see :mod:`edge.server`): :meth:`EdgeNode.start` connects to the region's
NATS in the background (retrying until it can), makes sure the streams exist and
builds the publisher, hub and history; the HTTP server is up meanwhile (`/healthz`
200, `/readyz` 503). :meth:`drain` tells every client to go (a `disconnect` frame
with fallback regions), then :meth:`stop` closes the mesh and NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from edge import replies
from edge.errors import CloseCode, EdgeError, ErrorCode, mesh_code
from edge.fanout import TransportFanout
from edge.metrics import EdgeMetrics, Sample
from edge.session import ClientSession
from edge.settings import EdgeSettings
from edge.tokens import KeyRing
from mesh.cancellation import cancel_and_wait
from mesh.control import REGION_STATES, RegionState, RegionStates
from mesh.errors import MeshError, MeshUnavailable
from mesh.geo import fallback_order
from mesh.history import History, HistoryPage, MirrorStatus, MirrorWatch
from mesh.hub import ChannelHub
from mesh.natsconn import connect_region
from mesh.publisher import Ack, Lane, Publication, Publisher
from mesh.secrets import Secrets
from mesh.streams import ensure_streams
from mesh.subjects import stream_name
from mesh.topology import Topology

log = logging.getLogger("edgemesh.edge")

# Messages in a history page when the request gives no limit.
DEFAULT_HISTORY_LIMIT = 100

# Bytes kept for the headers the mesh adds to a stored message (ids, name, client id).
HEADER_ROOM = 1024


@dataclass
class Mesh:
    """What exists once NATS is connected and the streams are ensured."""

    nc: Client
    js: JetStreamContext
    publisher: Publisher
    hub: ChannelHub
    history: History
    mirrors: MirrorWatch


class EdgeNode:
    def __init__(
        self,
        topology: Topology,
        secrets: Secrets,
        region: str,
        edge_name: str,
        keys: KeyRing,
        settings: EdgeSettings,
    ) -> None:
        self.topology = topology
        self.secrets = secrets
        self.region = region
        self.region_model = topology.region(region)
        self.edge_name = edge_name
        self.keys = keys
        self.settings = settings
        self.metrics = EdgeMetrics()
        self.sessions: set[ClientSession] = set()
        self._no_sessions = asyncio.Event()
        self._no_sessions.set()
        self.mesh: Mesh | None = None
        self.region_states: RegionStates | None = None
        self.shutting_down = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # Publishes (WebSocket and REST) waiting for their ack: a drain lets them finish.
        self._unanswered: set[asyncio.Future[Ack]] = set()
        self._js_probe: tuple[float, bool, str | None] | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._spawn(self._connect_mesh())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_mesh(self) -> None:
        delay = 0.1
        nc: Client | None = None
        while nc is None:
            try:
                nc = await connect_region(
                    self.topology,
                    self.secrets,
                    self.region,
                    "edge",
                    f"edge {self.edge_name}",
                    reconnected_cb=self._on_reconnected,
                    disconnected_cb=self._on_disconnected,
                    error_cb=self._on_nats_error,
                )
            except Exception as exc:
                log.warning("NATS not reachable yet (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        js = nc.jetstream()
        settings = self.settings.mesh
        while True:
            try:
                await ensure_streams(js, self.topology, self.region, settings)
                break
            except MeshError as exc:
                log.warning("cannot ensure streams yet (%s); retrying", exc)
                await asyncio.sleep(0.5)
        hub = ChannelHub(
            nc,
            js,
            self.topology,
            self.region,
            settings,
            replies.message_frame,
            on_delivery_lag=self.metrics.delivery_lag_seconds.observe,
            fanout=TransportFanout(
                self.settings.limits.max_send_buffer_bytes, on_spill=self.metrics.fanout_spills.inc
            ),
        )
        mirrors = MirrorWatch(js, self.topology, self.region, settings)
        mirrors.start()
        self.mesh = Mesh(
            nc,
            js,
            Publisher(
                nc,
                self.region,
                settings,
                others=self.topology.names,
                on_check=self.metrics.region_checks.inc,
                live=hub.live_position,
            ),
            hub,
            History(nc, self.topology, self.region, settings),
            mirrors,
        )
        await nc.subscribe(REGION_STATES, cb=self._on_region_states)
        if self.settings.limits.max_message_bytes + HEADER_ROOM > nc.max_payload:
            log.warning(
                "max_message_bytes (%d) is above what NATS accepts (max_payload %d): "
                "larger publishes will fail with 50000",
                self.settings.limits.max_message_bytes,
                nc.max_payload,
            )
        log.info("edge %s ready in region %s", self.edge_name, self.region)

    async def _on_reconnected(self) -> None:
        log.info("NATS reconnected; resyncing channels")
        self._js_probe = None
        if self.mesh is not None:
            self._spawn(self.mesh.hub.resync())

    async def _on_disconnected(self) -> None:
        self._js_probe = None
        log.warning("NATS disconnected")
        if self.mesh is not None:
            # Publishes waiting for a PubAck get their nack now, not after the timeout.
            self.mesh.publisher.connection_lost()

    async def _on_nats_error(self, exc: Exception) -> None:
        if self.mesh is not None:
            self.mesh.hub.note_error(exc)
        log.warning("NATS error: %r", exc)

    async def drain(self, reason: str = "shutdown") -> None:
        """Refuse new work, let pending publishes finish, tell every client to go, wait.

        Ends within ``drain.timeout_s``: acks are awaited up to the publish timeout (+1 s)
        within that, and connections that have not gone by then are left to the server's
        shutdown (which gives them ``drain.close_grace_s``).
        """
        self.shutting_down = True
        drain = self.settings.drain
        deadline = time.monotonic() + drain.timeout_s
        unanswered = set(self._unanswered)
        log.info(
            "drain: %d connections, waiting for %d unanswered publishes",
            len(self.sessions),
            len(unanswered),
        )
        if unanswered:
            wait_acks = min(self.settings.mesh.publish_timeout_s + 1, drain.timeout_s)
            await asyncio.wait(unanswered, timeout=wait_acks)
        sessions = list(self.sessions)
        regions = self._shutdown_fallbacks()
        for s in sessions:
            s.cut(reason, CloseCode.GOING_AWAY, fallback_regions=regions)
        log.info("drain: disconnect sent to %d connections", len(sessions))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._no_sessions.wait(), timeout=max(0.0, deadline - time.monotonic())
            )
        log.info("drain: done, %d connections left", len(self.sessions))

    def add_session(self, session: ClientSession) -> None:
        self.sessions.add(session)
        self._no_sessions.clear()

    def remove_session(self, session: ClientSession) -> None:
        self.sessions.discard(session)
        if not self.sessions:
            self._no_sessions.set()

    def _shutdown_fallbacks(self) -> list[str]:
        # Another edge of this region is the nearest place to go, when there is one.
        own = [self.region] if len(self.region_model.edges) > 1 else []
        return own + self.fallback_regions()

    async def stop(self) -> None:
        """Close the mesh and NATS within ``drain.stop_timeout_s``: a step that overruns
        what is left of it is abandoned (logged) so the process can still exit."""
        deadline = time.monotonic() + self.settings.drain.stop_timeout_s

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        log.info("stop: closing the mesh")
        if await cancel_and_wait(self._tasks, left()):
            log.error("stop: background tasks did not end")
        mesh, self.mesh = self.mesh, None
        if mesh is None:
            return
        steps: list[tuple[str, Callable[[float], Coroutine[Any, Any, None]]]] = [
            ("mirror watch", mesh.mirrors.stop),
            ("publisher", mesh.publisher.close),
            ("hub", mesh.hub.close),
            ("NATS", lambda _t: mesh.nc.close()),
        ]
        for name, close in steps:
            task = asyncio.get_running_loop().create_task(close(left()))
            done, _ = await asyncio.wait({task}, timeout=left())
            if not done:
                task.cancel()
                log.error("stop: %s did not close in time; abandoned", name)
            elif not task.cancelled() and task.exception() is not None:
                log.warning("stop: closing %s failed: %r", name, task.exception())
        log.info("stop: done")

    # -- region states from the control plane ----------------------------------------

    async def _on_region_states(self, msg: Msg) -> None:
        try:
            states = RegionStates.decode(msg.data)
        except ValueError as exc:
            log.warning("ignoring region states: %s", exc)
            return
        if self.region_states is not None and states.ts_ms < self.region_states.ts_ms:
            return
        self.region_states = states
        if not self.accepting_region():
            regions = self.fallback_regions()
            for s in list(self.sessions):
                s.cut("draining", CloseCode.REGION_UNAVAILABLE, fallback_regions=regions)

    def own_state(self) -> RegionState | None:
        if self.region_states is None:
            return None
        return self.region_states.states.get(self.region)

    def accepting_region(self) -> bool:
        state = self.own_state()
        return state is None or state.serves_clients

    def fallback_regions(self) -> list[str]:
        """Other usable regions, nearest first (every other region when nothing is known)."""
        if self.region_states is None:
            usable = set(self.topology.names)
        else:
            known = self.region_states.states
            usable = {n for n in self.topology.names if n not in known or known[n].serves_clients}
        return fallback_order(self.region_model, self.topology.regions, usable)

    # -- what sessions and REST call ---------------------------------------------------

    def require_hub(self) -> ChannelHub:
        if self.mesh is None or self.shutting_down:
            raise MeshUnavailable("this edge is not connected to the mesh")
        return self.mesh.hub

    def hub_drop(self, session: ClientSession) -> None:
        if self.mesh is not None:
            self.mesh.hub.drop_sink(session)

    def hub_sink_changed(self, session: ClientSession) -> None:
        if self.mesh is not None:
            self.mesh.hub.sink_changed(session)

    def submit(self, pub: Publication, lane: Lane | None = None) -> asyncio.Future[Ack]:
        if self.mesh is None or self.shutting_down:
            raise MeshUnavailable("this edge is not connected to the mesh")
        if len(pub.data) + HEADER_ROOM > self.mesh.nc.max_payload:
            # The edge's max_message_bytes is above what the NATS servers take: a
            # deployment mistake that retrying elsewhere would not fix.
            raise EdgeError(
                ErrorCode.INTERNAL,
                f"message too large for the NATS servers (max_payload {self.mesh.nc.max_payload})",
            )
        future: asyncio.Future[Ack] = self.mesh.publisher.submit(pub, lane)
        self._unanswered.add(future)
        future.add_done_callback(self._unanswered.discard)
        return future

    async def history_page(self, channel: str, limit: int | None, after: str | None) -> HistoryPage:
        """A page of `limit` messages; without a limit, the default page size, or the
        largest page allowed if that is smaller."""
        if limit is None:
            limit = min(DEFAULT_HISTORY_LIMIT, self.settings.mesh.max_history_limit)
        if self.mesh is None:
            raise MeshUnavailable("this edge is not connected to the mesh")
        return await self.mesh.history.page(channel, limit, after)

    def publish_error(self, exc: BaseException) -> EdgeError:
        """The client-facing error of a failed publish; anything unexpected is 50000."""
        if isinstance(exc, EdgeError):
            return exc
        if isinstance(exc, MeshError):
            return EdgeError(mesh_code(exc), str(exc))
        log.error("publish failed: %r", exc)
        return EdgeError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}")

    # -- health, readiness, metrics ------------------------------------------------------

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether this edge can serve (NATS and JetStream answer), with the details."""
        mesh = self.mesh
        connected = mesh is not None and mesh.nc.is_connected
        js_ok, js_error = await self._jetstream_probe()
        state = self.own_state()
        ready = connected and js_ok and not self.shutting_down
        detail: dict[str, Any] = {
            "ready": ready,
            "edge": self.edge_name,
            "region": self.region,
            "nats": {"connected": connected},
            "jetstream": {"ok": js_ok, "error": js_error},
            "shutting_down": self.shutting_down,
            "region_state": state.value if state is not None else None,
            "accepting_connections": self.accepting_connections(),
            "connections": len(self.sessions),
            "mirrors": [
                {
                    "origin": m.origin,
                    "stream": m.stream,
                    "active_s": m.active_s,
                    "lag": m.lag,
                    "stale": m.stale,
                }
                for m in (mesh.mirrors.statuses if mesh is not None else [])
            ],
        }
        return ready, detail

    async def _jetstream_probe(self) -> tuple[bool, str | None]:
        """Whether the region's stream answers; reused for `readiness_cache_s`."""
        mesh = self.mesh
        if mesh is None:
            return False, "not connected to the mesh yet"
        if not mesh.nc.is_connected:
            return False, "NATS disconnected"
        now = time.monotonic()
        cached = self._js_probe
        if cached is not None and now - cached[0] < self.settings.readiness_cache_s:
            return cached[1], cached[2]
        try:
            await asyncio.wait_for(mesh.js.stream_info(stream_name(self.region)), 1.0)
            result: tuple[bool, str | None] = (True, None)
        except Exception as exc:
            result = (False, f"{type(exc).__name__}: {exc}")
        self._js_probe = (now, *result)
        return result

    def accepting_connections(self) -> bool:
        return not self.shutting_down and self.accepting_region()

    def render_metrics(self) -> str:
        return self.metrics.render(self._samples())

    def _samples(self) -> list[Sample]:
        mesh = self.mesh
        connected = mesh is not None and mesh.nc.is_connected
        out = [
            Sample("edgemesh_connections", "Open client connections.", len(self.sessions)),
            Sample(
                "edgemesh_subscriptions",
                "Channel subscriptions of open connections.",
                sum(len(s.channels) for s in self.sessions),
            ),
            Sample("edgemesh_nats_connected", "1 while NATS is connected.", int(connected)),
        ]
        if mesh is None:
            return out
        c = mesh.hub.counters
        out.append(
            Sample(
                "edgemesh_channels", "Channels with local subscribers.", mesh.hub.channel_count()
            )
        )
        hub_counters = (
            ("messages_in", "Live messages received from NATS.", c.messages_in),
            ("messages_out", "Message frames handed to client connections.", c.messages_out),
            ("gaps_repaired", "Messages fetched from streams to fill gaps.", c.gaps_repaired),
            ("gaps_unrepaired", "Gap messages that could not be fetched.", c.gaps_unrepaired),
            ("duplicates_dropped", "Messages not delivered again.", c.duplicates_dropped),
            ("nats_slow_consumer", "nats-py slow-consumer drops seen.", c.slow_consumer_drops),
            ("resyncs", "Channel resyncs after NATS reconnects.", c.resyncs),
            ("sweeps", "Checks for messages missed around a new subscription.", c.sweeps),
            (
                "dedup_lookbehind_capped",
                "Look-behinds for retried message ids cut at dedup_lookbehind.",
                c.lookbehind_capped,
            ),
        )
        recent = mesh.publisher.recent
        counters = (
            *hub_counters,
            (
                "region_check_reads_spared",
                "Lookups of a message_id in another region's copy that read nothing: live "
                "delivery had seen nothing new on the channel since the last read.",
                recent.skipped,
            ),
        )
        for name, help_text, value in counters:
            out.append(Sample(f"edgemesh_{name}_total", help_text, value, counter=True))
        out.append(
            Sample(
                "edgemesh_region_check_keys",
                "Dedup keys of other regions remembered for those lookups.",
                recent.total,
            )
        )
        mirror_gauges: tuple[tuple[str, str, Callable[[MirrorStatus], float]], ...] = (
            ("edgemesh_mirror_stale", "1 when a mirror lost its origin.", lambda m: m.stale),
            ("edgemesh_mirror_lag", "Messages a mirror is behind its origin.", lambda m: m.lag),
            (
                "edgemesh_mirror_active_seconds",
                "Seconds since a mirror last heard from its origin (-1: unknown).",
                lambda m: -1 if m.active_s is None else m.active_s,
            ),
        )
        for name, help_text, value_of in mirror_gauges:
            for m in mesh.mirrors.statuses:
                out.append(Sample(name, help_text, float(value_of(m)), (("origin", m.origin),)))
        return out


def refusal_frame(node: EdgeNode, reason: str) -> bytes:
    """The `disconnect` a connection gets instead of `connected` when it is refused."""
    drain = node.settings.drain
    return replies.disconnect(reason, True, drain.retry_after_ms, node.fallback_regions())
