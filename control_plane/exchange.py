"""The instance's NATS side: reports in and out, region states out, drains persisted.

The connection goes to the instance's own region first and to every other region's
servers after it, so an instance whose own NATS is down still exchanges reports (and
so still counts) through another region. Connecting is retried forever in the
background: an instance serves its API (and `/healthz`) before NATS is reachable.

Drains are persisted in a JetStream KV bucket placed in the instance's own region
(replicas = min(3, servers there)); each instance reads its own at start. The bucket
is only one copy: the drain book also travels in every report, so an instance that
lost its bucket learns the drains again from the others within a round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig, Placement
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from control_plane.drains import DrainBook
from control_plane.observation import ObserverReport
from control_plane.settings import STOP_TIMEOUT_S
from control_plane.subjects import (
    DRAIN_KEY,
    OBSERVATIONS,
    REGION_STATES,
    drain_bucket,
    observation_subject,
    observer_of,
)
from mesh.cancellation import cancel_and_wait
from mesh.control import RegionStates
from mesh.natsconn import credentials, tls_options
from mesh.secrets import Secrets
from mesh.topology import Topology

log = logging.getLogger("edgemesh.control_plane")

_RETRY_S = 1.0
_JS_TIMEOUT_S = 3.0


class Exchange:
    def __init__(
        self,
        topology: Topology,
        secrets: Secrets,
        region: str,
        on_report: Callable[[ObserverReport], None],
    ) -> None:
        self.topology = topology
        self.secrets = secrets
        self.region = region
        self.on_report = on_report
        self.nc: Client | None = None
        self.connected = asyncio.Event()
        self._kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None
        self.bad_reports = 0

    def _servers(self) -> list[str]:
        own = [s.client_url for s in self.topology.region(self.region).nats]
        others = [s.client_url for r, s in self.topology.servers() if r.name != self.region]
        return own + others

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name="nats-connect")

    async def stop(self) -> None:
        if self._task is not None and await cancel_and_wait([self._task], STOP_TIMEOUT_S):
            log.warning("the NATS connect task still runs after stop")
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.close()

    async def _connect_forever(self) -> None:
        user, password = credentials(self.secrets, "control")

        async def quiet(exc: Exception) -> None:
            log.debug("nats: %s", exc)

        while self.nc is None:
            try:
                self.nc = await nats.connect(
                    servers=self._servers(),
                    user=user,
                    password=password,
                    name=f"control-plane-{self.region}",
                    dont_randomize=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    connect_timeout=1,
                    error_cb=quiet,
                    **tls_options(self.topology),
                )
            except Exception as exc:  # no server reachable yet: keep trying
                log.info("nats: cannot connect yet (%s)", exc)
                await asyncio.sleep(_RETRY_S)
        await self.nc.subscribe(OBSERVATIONS, cb=self._on_msg)
        self.connected.set()

    async def _on_msg(self, msg: Msg) -> None:
        observer = observer_of(msg.subject)
        try:
            report = ObserverReport.decode(msg.data)
        except ValueError:
            self.bad_reports += 1
            return
        if observer is None or report.observer != observer:
            self.bad_reports += 1  # a report must come on its own observer's subject
            return
        if observer != self.region:
            self.on_report(report)

    @property
    def usable(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def publish_report(self, report: ObserverReport) -> bool:
        if not self.usable:
            return False
        assert self.nc is not None
        try:
            await self.nc.publish(observation_subject(report.observer), report.encode())
        except Exception as exc:
            log.info("nats: report not published: %s", exc)
            return False
        return True

    async def publish_states(self, states: RegionStates) -> bool:
        if not self.usable:
            return False
        assert self.nc is not None
        try:
            await self.nc.publish(REGION_STATES, states.encode())
        except Exception as exc:
            log.info("nats: region states not published: %s", exc)
            return False
        return True

    # -- drains --------------------------------------------------------------------

    async def _bucket(self) -> KeyValue:
        if self._kv is not None:
            return self._kv
        assert self.nc is not None
        js = self.nc.jetstream(timeout=_JS_TIMEOUT_S)
        bucket = drain_bucket(self.region)
        try:
            self._kv = await js.key_value(bucket)
        except Exception:
            replicas = min(3, len(self.topology.region(self.region).nats))
            self._kv = await js.create_key_value(
                KeyValueConfig(
                    bucket=bucket,
                    history=1,
                    replicas=replicas,
                    placement=Placement(cluster=self.region),
                )
            )
        return self._kv

    async def load_drains(self) -> DrainBook | None:
        """The persisted drain book (empty if none yet); None if it cannot be read now."""
        if not self.usable:
            return None
        try:
            kv = await self._bucket()
            try:
                entry = await kv.get(DRAIN_KEY)
            except KeyNotFoundError:
                return DrainBook()
            return DrainBook.decode(entry.value or b"[]")
        except Exception as exc:
            log.info("drains: cannot read %s: %s", drain_bucket(self.region), exc)
            return None

    async def save_drains(self, book: DrainBook) -> bool:
        if not self.usable:
            return False
        try:
            kv = await self._bucket()
            await kv.put(DRAIN_KEY, book.encode())
        except Exception as exc:
            log.info("drains: cannot write %s: %s", drain_bucket(self.region), exc)
            return False
        return True
