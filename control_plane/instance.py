"""One control-plane instance: probe rounds, the report exchange, verdicts, drains, events.

Lifecycle: ``start()`` (NATS in the background, the synthetic subscriber, the probe and
announce loops), then the instance runs on its own; ``stop()`` cancels every task it
owns and closes its connections. Decisions are made by the pure
:class:`~control_plane.policy.FailoverPolicy`; this class only feeds it and acts on it.

Freshness is judged by when a report was *received* here, so instance clocks need not
agree for the policy; only drain ordering (last writer wins) uses wall clocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

from control_plane.classify import Streaks, classify_round
from control_plane.drains import DrainBook, DrainRecord
from control_plane.errors import LastServingRegion, UnknownRegion
from control_plane.exchange import Exchange
from control_plane.observation import ObserverReport, RegionReport
from control_plane.policy import Event, FailoverPolicy
from control_plane.probes import Prober
from control_plane.route import Locator, RouteAnswer, route
from control_plane.settings import STOP_TIMEOUT_S, ControlPlaneSettings
from control_plane.synthetic import SyntheticPublish
from control_plane.tokens import ApiKey
from mesh.cancellation import cancel_and_wait
from mesh.control import RegionState, RegionStates
from mesh.secrets import Secrets
from mesh.tls import client_context
from mesh.topology import Topology

log = logging.getLogger("edgemesh.control_plane")


class ControlPlaneInstance:
    def __init__(
        self,
        topology: Topology,
        secrets: Secrets,
        region: str,
        settings: ControlPlaneSettings,
        api_keys: tuple[ApiKey, ...],
        locator: Locator | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        topology.region(region)  # raises TopologyError for an unknown region
        self.topology = topology
        self.region = region
        self.settings = settings
        self.api_keys = api_keys
        self.locator = locator
        self.clock = clock
        observers = tuple(r.name for r in topology.regions if r.control_plane is not None)
        self.policy = FailoverPolicy(
            topology.names, observers or (region,), settings.policy, self.now_ms()
        )
        self.reports: dict[str, ObserverReport] = {}
        self.book = DrainBook()
        self.drains_persisted = False
        self.drains_loaded = False
        self.events: deque[Event] = deque(maxlen=settings.events_kept)
        self.recent: dict[str, deque[dict[str, Any]]] = {
            n: deque(maxlen=settings.recent_rounds_kept) for n in topology.names
        }
        self.streaks = Streaks()
        self.round = 0
        self.started_ms = self.now_ms()
        # metrics
        self.round_seconds = 0.0
        self.check_failures: Counter[tuple[str, str]] = Counter()
        self.state_changes: Counter[str] = Counter()
        self.reports_received: Counter[str] = Counter()
        self.announcements = 0
        self.exchange = Exchange(topology, secrets, region, self._on_report)
        self._http: httpx.AsyncClient | None = None
        self.synthetic: SyntheticPublish | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._announce_now = asyncio.Event()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        timeout = self.settings.probe.timeout_s
        # The system's CAs (edges behind public certificates) and the deployment's (the
        # NATS servers' https monitoring, with TLS).
        self._http = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=200),
            verify=client_context(self.topology.tls) or True,
        )
        key = self.api_keys[0] if self.api_keys else None
        if key is None:
            log.warning("no API key: WebSocket and synthetic publish probes are skipped")
        else:
            self.synthetic = SyntheticPublish(self.topology, self.region, key, self._http, timeout)
            self.synthetic.start()
        prober = Prober(
            self.topology,
            self.region,
            self.settings.probe,
            self._http,
            key,
            self.synthetic.probe if self.synthetic else None,
        )
        self.exchange.start()
        self._spawn(self._probe_loop(prober), "probe-loop")
        self._spawn(self._announce_loop(), "announce-loop")
        self._spawn(self._load_drains(), "load-drains")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def stop(self) -> None:
        stuck = await cancel_and_wait(self._tasks, STOP_TIMEOUT_S)
        if stuck:
            log.warning("tasks still running after stop: %s", sorted(t.get_name() for t in stuck))
        self._tasks.clear()
        if self.synthetic is not None:
            await self.synthetic.stop()
        await self.exchange.stop()
        if self._http is not None:
            await self._http.aclose()

    # -- probing -----------------------------------------------------------------

    async def _probe_loop(self, prober: Prober) -> None:
        interval = self.settings.probe.interval_s
        while True:
            started = time.monotonic()
            try:
                await self._one_round(prober)
            except Exception:  # a bug in one round must not stop probing
                log.exception("probe round %d failed", self.round)
            self.round_seconds = time.monotonic() - started
            await asyncio.sleep(max(0.0, interval - self.round_seconds))

    async def _one_round(self, prober: Prober) -> None:
        probes = await prober.round()
        assessments = classify_round(probes, self.settings.probe.mirror_stale_s)
        self.round += 1
        now = self.now_ms()
        regions: dict[str, RegionReport] = {}
        for name, probe in probes.items():
            a = assessments[name]
            fail, ok = self.streaks.record(name, a.status)
            regions[name] = RegionReport(a.status, fail, ok, a.reasons, probe.checks)
            for c in probe.checks:
                if not c.ok:
                    self.check_failures[(name, c.check)] += 1
            self.recent[name].appendleft(
                {"round": self.round, "at_ms": now, **regions[name].to_dict()}
            )
        report = ObserverReport(self.region, now, self.round, regions, self.book.records())
        self.reports[self.region] = report
        await self.exchange.publish_report(report)
        self.evaluate()

    def _on_report(self, report: ObserverReport) -> None:
        if report.observer not in self.topology.names:
            return
        self.reports_received[report.observer] += 1
        # Judge freshness by our own clock: stamp the report with its time of receipt.
        self.reports[report.observer] = dataclasses.replace(report, ts_ms=self.now_ms())
        if self.book.merge_all(report.drains):
            self._spawn(self._persist_drains(), "persist-drains")
        self.evaluate()

    # -- verdicts --------------------------------------------------------------------

    def evaluate(self) -> list[Event]:
        events = self.policy.evaluate(self.now_ms(), self.reports, self.book.drained())
        for e in events:
            self.events.appendleft(e)
            if e.kind == "state_change":
                self.state_changes[e.region] += 1
            log.warning("%s %s: %s -> %s (%s)", e.kind, e.region, e.previous, e.state, e.reason)
        if any(e.kind == "state_change" for e in events):
            self._announce_now.set()
        return events

    def states(self) -> dict[str, RegionState]:
        return self.policy.states()

    def region_states(self) -> RegionStates:
        return RegionStates(self.region, self.now_ms(), self.states())

    @property
    def settled(self) -> bool:
        """Whether this instance's verdicts are worth announcing: it has probed once and
        knows the drains (from its bucket or from another instance's report). A fresh
        instance must not tell the edges "all healthy" over a drain it has not heard of."""
        heard = self.drains_loaded or any(o != self.region for o in self.reports)
        return self.round >= 1 and heard

    async def _announce_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.announce_interval_s):
                    await self._announce_now.wait()
            self._announce_now.clear()
            if self.settled and await self.exchange.publish_states(self.region_states()):
                self.announcements += 1

    def route(self, ip: str | None) -> RouteAnswer:
        location = self.locator(ip) if (self.locator is not None and ip) else None
        return route(self.topology, self.states(), location)

    # -- drains ------------------------------------------------------------------------

    async def _load_drains(self) -> None:
        await self.exchange.connected.wait()
        while True:
            stored = await self.exchange.load_drains()
            if stored is not None:
                break
            await asyncio.sleep(1.0)
        self.drains_loaded = True
        if self.book.merge_all(stored.records()):
            self.evaluate()
        # Write back what we knew beyond the stored copy (from reports meanwhile).
        if stored.records() != self.book.records() or not stored.records():
            await self._persist_drains()
        else:
            self.drains_persisted = True

    async def _persist_drains(self) -> None:
        self.drains_persisted = await self.exchange.save_drains(self.book)

    async def set_drained(self, region: str, drained: bool) -> DrainRecord:
        """An operator's drain (or restore). Takes effect here at once and on every other
        instance with the next report (sent now). Raises UnknownRegion, LastServingRegion."""
        if region not in self.topology.names:
            raise UnknownRegion(f"unknown region {region!r}")
        if drained and not [r for r in self.policy.serving() if r != region]:
            raise LastServingRegion(f"draining {region} would leave no region serving clients")
        now = self.now_ms()
        previous = self.book.get(region)
        if previous is not None and previous.ts_ms >= now:
            now = previous.ts_ms + 1  # our clock is behind the last writer's: still win
        record = DrainRecord(region, drained, now, self.region)
        self.book.merge(record)
        self.evaluate()
        own = self.reports.get(self.region)
        report = ObserverReport(
            self.region,
            self.now_ms(),
            own.round if own else 0,
            own.regions if own else {},
            self.book.records(),
        )
        await self.exchange.publish_report(report)
        await self._persist_drains()
        return record
