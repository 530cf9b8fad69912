"""The synthetic publish: a message published at a probed region's edge must reach a
subscriber at this observer's own region's edge, so it crosses the mesh the way users'
messages do (edge REST -> JetStream in the probed region -> gateway -> this region's edge
-> WebSocket).

The subscriber is one long-lived WebSocket per observer, subscribed to its own probe
channel (:func:`control_plane.subjects.probe_channel`). When it is not connected every
synthetic probe fails, so an observer whose own region is broken sees every region
failing and is treated as isolated by the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx
from websockets.asyncio.client import connect as ws_connect

from control_plane.classify import PUBLISH
from control_plane.observation import CheckResult
from control_plane.subjects import probe_channel
from control_plane.tokens import ApiKey, mint_token
from mesh.topology import Edge, Region, Topology

_TOKEN_TTL_S = 3600
_RETRY_S = 0.5


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
        self.subscribed_at: str | None = None
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._subscribe_forever(), name="synthetic-subscriber")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- the subscriber -------------------------------------------------------------

    async def _subscribe_forever(self) -> None:
        edges = self.topology.region(self.observer).edges
        attempt = 0
        while edges:
            edge = edges[attempt % len(edges)]
            attempt += 1
            with contextlib.suppress(Exception):  # any failure: reconnect, maybe elsewhere
                await self._subscribe_once(edge)
            self.subscribed_at = None
            await asyncio.sleep(_RETRY_S)

    async def _subscribe_once(self, edge: Edge) -> None:
        token = mint_token(
            self.key,
            f"edgemesh-control-{self.observer}",
            {self.channel: ["subscribe"]},
            int(time.time()),
            _TOKEN_TTL_S,
        )
        async with ws_connect(
            f"{edge.ws_url}?token={token}",
            open_timeout=self.timeout_s * 2,
            ping_interval=max(1.0, self.timeout_s * 2),
            ping_timeout=max(1.0, self.timeout_s * 2),
            close_timeout=0.5,
        ) as ws:
            await ws.send(json.dumps({"type": "subscribe", "id": 1, "channel": self.channel}))
            async for raw in ws:
                frame: Any = json.loads(raw)
                kind = frame.get("type") if isinstance(frame, dict) else None
                if kind == "subscribed" and frame.get("channel") == self.channel:
                    self.subscribed_at = edge.name
                elif kind == "message" and frame.get("channel") == self.channel:
                    data = frame.get("data")
                    nonce = data.get("probe") if isinstance(data, dict) else None
                    waiter = self._waiting.get(str(nonce))
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)
                elif kind == "disconnect":
                    return

    # -- one probe ------------------------------------------------------------------

    async def probe(self, region: Region, edge: Edge) -> CheckResult:
        """Publish at `edge` (of `region`) and wait for the message at our own edge."""
        if self.subscribed_at is None:
            return CheckResult(PUBLISH, edge.name, False, "no subscription at own region's edge")
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
        return CheckResult(PUBLISH, edge.name, True, f"via {self.subscribed_at}", ms)
