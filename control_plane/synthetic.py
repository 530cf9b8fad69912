"""The synthetic publish: a message published at a probed region's edge must reach this
observer's subscriber, so it crosses the mesh the way users' messages do (edge REST ->
JetStream in the probed region -> gateway -> the subscriber's edge -> WebSocket).

The subscriber is a long-lived WebSocket subscribed to the observer's own probe channel
(:func:`control_plane.subjects.probe_channel`), at an edge of the observer's own region
when that region serves clients. When it does not (down or drained: its edges refuse
clients, as the control plane told them to), the subscriber moves to the nearest region
that does, and comes home as soon as home accepts it again, opening the new subscription
before closing the old one so the probes never see a gap. Without any subscription every
synthetic probe fails, so an observer cut off from every edge finds every region
failing and is treated as isolated by the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from control_plane.classify import PUBLISH
from control_plane.observation import CheckResult
from control_plane.settings import STOP_TIMEOUT_S
from control_plane.subjects import probe_channel
from control_plane.tokens import ApiKey, mint_token
from mesh.cancellation import cancel_and_wait
from mesh.geo import by_distance
from mesh.topology import Edge, Region, Topology

log = logging.getLogger("edgemesh.control_plane")

_TOKEN_TTL_S = 3600
_RETRY_S = 0.5
_HOME_RETRY_S = 5.0


class _Subscription:
    """One subscribed WebSocket; `closed` is set when it ends for any reason."""

    def __init__(self, edge: Edge, ws: ClientConnection, owner: SyntheticPublish) -> None:
        self.edge = edge
        self.ws = ws
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read(owner), name=f"probe-sub-{edge.name}")

    async def _read(self, owner: SyntheticPublish) -> None:
        try:
            async for raw in self.ws:
                frame: Any = json.loads(raw)
                if not isinstance(frame, dict):
                    continue
                if frame.get("type") == "disconnect":
                    break
                if frame.get("type") == "message" and frame.get("channel") == owner.channel:
                    data = frame.get("data")
                    owner.arrived(data.get("probe") if isinstance(data, dict) else None)
        except Exception:  # any failure ends this subscription; the owner opens another
            pass
        finally:
            self.closed.set()

    async def close(self) -> None:
        if await cancel_and_wait([self._task], STOP_TIMEOUT_S):
            log.warning("a synthetic probe's reader still runs after close")
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.closed.set()


class SyntheticPublish:
    def __init__(
        self,
        topology: Topology,
        observer: str,
        key: ApiKey,
        http: httpx.AsyncClient,
        timeout_s: float,
    ) -> None:
        self.topology = topology
        self.observer = observer
        self.key = key
        self.http = http
        self.timeout_s = timeout_s
        self.channel = probe_channel(observer)
        self._current: _Subscription | None = None
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def subscribed_at(self) -> str | None:
        cur = self._current
        return cur.edge.name if cur is not None and not cur.closed.is_set() else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_subscribed(), name="synthetic-subscriber")

    async def stop(self) -> None:
        if self._task is not None:
            if await cancel_and_wait([self._task], STOP_TIMEOUT_S):
                log.warning("the synthetic subscriber still runs after stop")
            self._task = None
        if self._current is not None:
            await self._current.close()
            self._current = None

    def arrived(self, nonce: object) -> None:
        waiter = self._waiting.get(str(nonce))
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- keeping one subscription ------------------------------------------------------

    def _home(self) -> tuple[Edge, ...]:
        return self.topology.region(self.observer).edges

    def _away(self) -> list[Edge]:
        home = self.topology.region(self.observer)
        others = [r for r in self.topology.regions if r.name != home.name]
        return [e for r in by_distance(home.latitude, home.longitude, others) for e in r.edges]

    async def _keep_subscribed(self) -> None:
        home = set(e.name for e in self._home())
        while True:
            cur = self._current
            if cur is None or cur.closed.is_set():
                self._current = await self._first_that_opens([*self._home(), *self._away()])
                if self._current is None:
                    await asyncio.sleep(_RETRY_S)
                continue
            if cur.edge.name not in home:
                back = await self._first_that_opens(list(self._home()))
                if back is not None:  # make before break: the old one closes after
                    self._current = back
                    await cur.close()
                    continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_HOME_RETRY_S):
                    await cur.closed.wait()

    async def _first_that_opens(self, edges: list[Edge]) -> _Subscription | None:
        for edge in edges:
            with contextlib.suppress(Exception):  # refused or unreachable: try the next
                sub = await self._open(edge)
                if sub is not None:
                    return sub
        return None

    async def _open(self, edge: Edge) -> _Subscription | None:
        token = mint_token(
            self.key,
            f"edgemesh-control-{self.observer}",
            {self.channel: ["subscribe"]},
            int(time.time()),
            _TOKEN_TTL_S,
        )
        ws = await ws_connect(
            f"{edge.ws_url}?token={token}",
            open_timeout=self.timeout_s * 2,
            ping_interval=max(1.0, self.timeout_s * 2),
            ping_timeout=max(1.0, self.timeout_s * 2),
            close_timeout=0.5,
        )
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                hello = json.loads(await ws.recv())
                if not isinstance(hello, dict) or hello.get("type") != "connected":
                    raise ConnectionError(f"refused: {hello!r:.200}")
                await ws.send(json.dumps({"type": "subscribe", "id": 1, "channel": self.channel}))
                while True:
                    frame = json.loads(await ws.recv())
                    if isinstance(frame, dict) and frame.get("type") == "subscribed":
                        return _Subscription(edge, ws, self)
                    if isinstance(frame, dict) and frame.get("type") in ("error", "disconnect"):
                        raise ConnectionError(f"subscribe refused: {frame!r:.200}")
        except BaseException:
            with contextlib.suppress(Exception):
                await ws.close()
            raise

    # -- one probe ------------------------------------------------------------------

    async def probe(self, region: Region, edge: Edge) -> CheckResult:
        """Publish at `edge` (of `region`) and wait for the message at our subscriber."""
        via = self.subscribed_at
        if via is None:
            return CheckResult(PUBLISH, edge.name, False, "no probe subscription at any edge")
        nonce = f"{self.observer}-{uuid.uuid4().hex}"
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[nonce] = waiter
        url = f"{edge.url}/v1/channels/{quote(self.channel, safe='')}/messages"
        body = {"data": {"probe": nonce, "region": region.name}, "name": "probe"}
        start = time.perf_counter()
        stage = "publish"
        try:
            async with asyncio.timeout(self.timeout_s):
                r = await self.http.post(
                    url,
                    json={**body, "message_id": nonce},
                    headers={"Authorization": f"Bearer {self.key.text}"},
                )
                if r.status_code != 201:
                    return CheckResult(
                        PUBLISH, edge.name, False, f"publish answered {r.status_code}"
                    )
                stage = "delivery"
                await waiter
        except TimeoutError:
            return CheckResult(PUBLISH, edge.name, False, f"timeout waiting for {stage}")
        except (httpx.HTTPError, OSError) as exc:
            return CheckResult(PUBLISH, edge.name, False, f"unreachable: {type(exc).__name__}")
        finally:
            self._waiting.pop(nonce, None)
        ms = (time.perf_counter() - start) * 1000
        return CheckResult(PUBLISH, edge.name, True, f"via {via}", ms)
