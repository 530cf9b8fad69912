"""The asyncio client: one WebSocket at a time, replaced whenever it goes.

The state (publishes awaiting acks, subscriptions and their cursors) lives in
:class:`client.core.ClientCore`; this shell connects, moves frames and waits:

- Connecting: the candidates of :mod:`client.endpoints` (configured URLs, or the route
  API of the control plane), one at a time, with backoff between failed attempts.
- On `connected`: every subscription again from its cursor, then every publish still
  awaiting its ack, then whatever the application sends. One writer task per
  connection sends frames in the order they were queued.
- On a `disconnect` frame: the regions it names are tried first (after
  ``retry_after_ms``); the edge that sent it last. A refused token (close 4001) is
  asked for again when the token is a function; a fixed token ends the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from client import core as ev
from client.endpoints import SENDS_AWAY, Backoff, Endpoints, RegionEdges, from_route
from client.errors import (
    CLOSED,
    CONNECT_TIMEOUT,
    CONNECTION_LOST,
    REQUEST_TIMEOUT,
    UNAUTHORIZED,
    ClientError,
    PublishTimeout,
    ServerError,
)
from client.frames import Ack, Connected, Disconnect, HistoryPage, error_of
from client.settings import ClientSettings
from client.subscription import Subscription

log = logging.getLogger("edgemesh.client")

TokenSource = str | Callable[[], Awaitable[str]]
AUTH_CLOSE = 4001


def encode(value: Any) -> str:
    """Compact JSON, non-ASCII as is: a frame about as long as the data the edge measures
    (escaped, Japanese text would be twice as long and could pass the frame limit)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def spread(retry_after_s: float) -> float:
    """A random wait within the `retry_after_ms` of a `disconnect`: the clients an edge
    sends away at once come to their next edge spread over that window."""
    return retry_after_s * random.random()


class Client:
    """A protocol v1 client that survives edges, regions and tokens going away.

    Give it edge URLs (``urls``; or ``regions``, region name -> URLs, nearest first) or
    control-plane base URLs (``route_urls``: it asks ``GET /v1/route`` where to go).
    ``token`` is a JWT, or an async function returning a fresh one (called for every
    connection). With ``route_urls``, a client that failed over to another region goes
    back once the route API names its first region again (see ``route_refresh_s``).
    Use it as ``async with Client(...) as c:`` or ``start()``/``close()``.
    """

    def __init__(
        self,
        token: TokenSource,
        *,
        urls: Sequence[str] = (),
        regions: Mapping[str, Sequence[str]] | None = None,
        route_urls: Sequence[str] = (),
        settings: ClientSettings | None = None,
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        given = [RegionEdges("", tuple(urls))] if urls else []
        given += [RegionEdges(r, tuple(u)) for r, u in (regions or {}).items()]
        given = [g for g in given if g.urls]
        if not given and not route_urls:
            raise ValueError("give edge urls, regions or route_urls")
        self.settings = settings or ClientSettings()
        self._token = token
        self._route_urls = list(route_urls)
        self._endpoints = Endpoints(given) if given else None
        self._home: str | None = None  # the route API's first region, when it answered
        self._max_message_bytes: int | None = None  # from the last `connected` frame
        self._backoff = Backoff(self.settings.reconnect_base_s, self.settings.reconnect_max_s)
        self._core = ev.ClientCore(self.settings.max_pending_publishes)
        self._on_state = on_state
        self.state = "idle"  # idle, connecting, connected, closed, failed
        self.connection: Connected | None = None  # the current connection's `connected`
        self.connections = 0  # connections made: more than one means it reconnected
        self._publishes: dict[int, asyncio.Future[Ack]] = {}
        self._requests: dict[int, asyncio.Future[Mapping[str, Any]]] = {}
        self._subs: dict[str, Subscription] = {}
        self._outbox: asyncio.Queue[str] | None = None
        self._ws: ClientConnection | None = None
        self._up = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None
        self._failure: ClientError | None = None
        self._closing = False

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect; returns once connected. Raises ``connect_timeout`` (and closes) if no
        edge accepted it within ``connect_timeout_s``, or ``unauthorized``."""
        if self._run_task is None:
            self._run_task = asyncio.get_running_loop().create_task(self._run(), name="client")
        try:
            await self._wait_up(self.settings.connect_timeout_s, CONNECT_TIMEOUT)
        except ClientError:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection and end every wait: publishes not yet acked raise
        ``closed`` (a retry with the same ``message_id`` is safe), subscriptions end."""
        if self.state in ("closed", "failed") and self._run_task is None:
            return
        self._closing = True
        self._fail_all(self._failure or ClientError(CLOSED, "the client was closed"))
        if self._run_task is not None:
            task, self._run_task = self._run_task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.state != "failed":
            self._set_state("closed")

    # -- operations ----------------------------------------------------------------

    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        name: str | None = None,
        message_id: str | None = None,
    ) -> Ack:
        """Publish and wait for the ack (durable in some region). Without ``message_id``
        one is made, so a publish sent again after a reconnect is stored once.

        Raises :class:`ServerError` (the server refused it: bad channel, forbidden, too
        large...), :class:`PublishTimeout` (no ack within ``publish_timeout_s``),
        ``pending_full`` or ``closed``."""
        self._check_usable()
        if self._max_message_bytes is not None:
            # Checked here as the edge checks it: a frame far over the limit would make
            # the edge close the connection (4009), again after every reconnect.
            size = len(encode(data).encode())
            if size > self._max_message_bytes:
                raise ServerError(
                    41300,
                    f"data is {size} bytes, over max_message_bytes ({self._max_message_bytes})",
                )
        key, mid, frame = self._core.publish(channel, data, name, message_id)
        fut: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._publishes[key] = fut
        if frame is not None:
            self._send(frame)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.settings.publish_timeout_s)
        except TimeoutError:
            raise PublishTimeout(mid, self.settings.publish_timeout_s) from None
        finally:
            self._publishes.pop(key, None)
            self._core.abandon(key)

    async def subscribe(
        self,
        channel: str,
        *,
        cursor: str | None = None,
        rewind: int | None = None,
        on_discontinuity: Callable[[Subscription], None] | None = None,
    ) -> Subscription:
        """Subscribe (from ``cursor``, or the last ``rewind`` messages first) and wait for
        the server to confirm. Subscribing to a channel this client is subscribed to
        replaces that subscription (the old one ends)."""
        self._check_usable()
        sub = Subscription(self, channel, self.settings.max_buffered_messages, on_discontinuity)
        old = self._subs.pop(channel, None)
        if old is not None:
            old.end(ClientError(CLOSED, "subscribed again"))
        self._subs[channel] = sub
        frame = self._core.subscribe(channel, cursor, rewind)
        if frame is not None:
            self._send(frame)
        try:
            await asyncio.wait_for(asyncio.shield(sub.ready), self.settings.request_timeout_s)
        except TimeoutError:
            await self._drop_sub(channel)
            raise ClientError(REQUEST_TIMEOUT, f"no reply to subscribe {channel!r}") from None
        except ClientError:
            await self._drop_sub(channel)
            raise
        return sub

    async def unsubscribe(self, channel: str) -> None:
        """End the subscription (its buffered messages can still be read)."""
        sub = self._subs.get(channel)
        await self._drop_sub(channel)
        if sub is not None:
            sub.end(ClientError(CLOSED, "unsubscribed"))

    async def history(
        self, channel: str, limit: int = 100, after: str | None = None
    ) -> HistoryPage:
        """One page of the channel's history, oldest first; ``after`` is the previous
        page's ``cursor``."""
        frame: dict[str, Any] = {"type": "history", "channel": channel, "limit": limit}
        if after is not None:
            frame["after"] = after
        doc = await self._request(frame)
        if doc.get("type") != "history_page":
            raise ServerError(*error_of(doc))
        return HistoryPage.from_frame(doc)

    async def ping(self) -> None:
        await self._request({"type": "ping"})

    # -- inside: the connection loop -----------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                try:
                    pause = await self._attempt()
                except Exception:  # a bug must not leave the client silently dead
                    log.exception("connection attempt failed")
                    pause = self._backoff.next()
                if pause is None:
                    return  # failed for good
                await asyncio.sleep(pause)
        except asyncio.CancelledError:
            await self._hang_up()
            raise

    async def _attempt(self) -> float | None:
        """One connection, from opening to its end: how long to wait before the next."""
        self._set_state("connecting")
        endpoints = await self._candidates()
        region, url = endpoints.next()
        try:
            token = self._token if isinstance(self._token, str) else await self._token()
        except Exception as exc:  # the application's token function
            log.warning("no token for a connection: %r", exc)
            return self._backoff.next()
        try:
            ws = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=self.settings.open_timeout_s,
                ping_interval=self.settings.ping_interval_s,
                ping_timeout=self.settings.ping_timeout_s,
                close_timeout=1,
                max_size=None,
                compression=None,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            log.info("cannot connect to %s (%s): %r", url, region or "-", exc)
            return self._backoff.next()
        self._ws = ws
        try:
            try:
                first = json.loads(await asyncio.wait_for(ws.recv(), self.settings.open_timeout_s))
                if not isinstance(first, dict):
                    raise ValueError(f"a first frame that is not an object: {first!r:.80}")
                hello = Connected.from_frame(first) if first.get("type") == "connected" else None
            except (ConnectionClosed, TimeoutError, ValueError, TypeError) as exc:
                return self._closed_early(ws, exc)
            if hello is None:
                return self._refused(first, url, endpoints)
            return await self._serve(ws, hello, url, endpoints)
        finally:
            await self._hang_up()

    async def _candidates(self) -> Endpoints:
        if self._route_urls and (self._endpoints is None or self._endpoints.tried_all):
            regions = await self._route()
            if regions:
                if self._endpoints is None:
                    self._endpoints = Endpoints(regions)
                else:
                    self._endpoints.replace(regions)
        while self._endpoints is None:  # no route answer yet, nothing configured
            await asyncio.sleep(self._backoff.next())
            regions = await self._route()
            if regions:
                self._endpoints = Endpoints(regions)
        return self._endpoints

    async def _route(self) -> list[RegionEdges]:
        async with httpx.AsyncClient(timeout=self.settings.open_timeout_s) as http:
            for base in self._route_urls:
                try:
                    r = await http.get(base.rstrip("/") + "/v1/route")
                    r.raise_for_status()
                    regions = from_route(r.json())
                    if regions:
                        self._home = regions[0].region
                    return regions
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                    log.info("no route from %s: %r", base, exc)
        return []

    def _refused(self, first: Mapping[str, Any], url: str, endpoints: Endpoints) -> float | None:
        """The edge answered with something other than `connected`."""
        if first.get("type") == "disconnect":  # e.g. edge_full, draining
            d = Disconnect.from_frame(first)
            log.info("%s turned the client away: %s", url, d.reason)
            return self._told(d, url, endpoints)
        code, message = error_of(first)
        if code in (40100, 40101):
            return self._auth_refused(code, message)
        log.warning("%s answered %r instead of connected", url, first.get("type"))
        return self._backoff.next()

    def _auth_refused(self, code: int, message: str) -> float | None:
        if isinstance(self._token, str):
            self._failure = ClientError(UNAUTHORIZED, f"token refused ({code}: {message})")
            self._fail_all(self._failure)
            self._set_state("failed")
            return None
        log.info("token refused (%s: %s); asking for a new one", code, message)
        return self._backoff.next()

    def _closed_early(self, ws: ClientConnection, exc: BaseException) -> float | None:
        if ws.close_code == AUTH_CLOSE:
            return self._auth_refused(40100, ws.close_reason or "")
        log.info("connection ended before connected: %r", exc)
        return self._backoff.next()

    async def _serve(
        self, ws: ClientConnection, hello: Connected, url: str, endpoints: Endpoints
    ) -> float | None:
        self.connection = hello
        self.connections += 1
        self._max_message_bytes = hello.max_message_bytes or None
        endpoints.worked()
        self._backoff.reset()
        outbox: asyncio.Queue[str] = asyncio.Queue()
        self._outbox = outbox
        for frame in self._core.opened():  # before anything the application sends now
            outbox.put_nowait(encode(frame))
        loop = asyncio.get_running_loop()
        writer = loop.create_task(self._write(ws, outbox))
        away = self._route_urls and self._home is not None and hello.region != self._home
        homing = loop.create_task(self._watch_home(ws, hello)) if away else None
        self._set_state("connected")
        self._up.set()
        said: Disconnect | None = None
        try:
            async for raw in ws:
                try:
                    doc = json.loads(raw)
                except ValueError:
                    doc = None
                if not isinstance(doc, dict):
                    log.warning("unreadable frame from %s: %r", url, raw[:80])
                    continue
                for event in self._core.receive(doc):
                    if isinstance(event, ev.ServerDisconnect):
                        said = event.disconnect
                    elif isinstance(event, ev.Unavailable):
                        log.info("%s cannot serve now (%s); reconnecting", url, event.message)
                        endpoints.prefer(hello.fallback_regions, avoid=url)
                        await ws.close()
                    else:
                        await self._handle(event)
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            if homing is not None:
                homing.cancel()
        return self._after(ws, said, url, endpoints)

    async def _watch_home(self, ws: ClientConnection, hello: Connected) -> None:
        """Connected outside the route's first region (after a failover): ask the route
        API every ``route_refresh_s``; once it names another region first, close this
        connection, and the client reconnects there (resuming as after any reconnect)."""
        while True:
            await asyncio.sleep(self.settings.route_refresh_s)
            regions = await self._route()
            if regions and regions[0].region != hello.region and self._endpoints is not None:
                log.info("the route says %s again; leaving %s", regions[0].region, hello.region)
                self._endpoints.replace(regions)
                await ws.close()
                return

    def _after(
        self, ws: ClientConnection, said: Disconnect | None, url: str, endpoints: Endpoints
    ) -> float | None:
        code = ws.close_code
        log.info("connection to %s ended (%s, close %s)", url, said.reason if said else "-", code)
        if code == AUTH_CLOSE or (said is not None and said.reason == "token_expired"):
            return self._auth_refused(40101, "token expired")
        if said is not None:
            return self._told(said, url, endpoints)
        return self._backoff.next()

    def _told(self, said: Disconnect, url: str, endpoints: Endpoints) -> float:
        """After a `disconnect`: where to go next, and the pause before it."""
        if said.reason in SENDS_AWAY:
            endpoints.prefer(said.fallback_regions, avoid=url)
        return max(spread(said.retry_after_s), self._backoff.next())

    async def _write(self, ws: ClientConnection, outbox: asyncio.Queue[str]) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.send(await outbox.get())

    async def _hang_up(self) -> None:
        """The connection is gone (or going): requests without a retry fail now."""
        ws, self._ws = self._ws, None
        self._outbox = None
        self._up.clear()
        self.connection = None
        if self.state == "connected":  # reconnecting from now, the pause before it included
            self._set_state("connecting")
        for rid in self._core.lost():
            self._reject(
                self._requests.pop(rid, None), ClientError(CONNECTION_LOST, "the connection ended")
            )
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)

    async def _handle(self, event: ev.Event) -> None:
        if isinstance(event, ev.Delivered):
            sub = self._subs.get(event.message.channel)
            if sub is not None:
                await sub.put(event.message)
        elif isinstance(event, ev.Acked):
            self._resolve(self._publishes.get(event.key), event.ack)
        elif isinstance(event, ev.PublishRefused):
            self._reject(self._publishes.get(event.key), ServerError(event.code, event.message))
        elif isinstance(event, ev.RetryLater):
            asyncio.get_running_loop().call_later(
                self.settings.rate_limited_retry_s, self._resend, event.key
            )
        elif isinstance(event, ev.Subscribed):
            sub = self._subs.get(event.channel)
            if sub is not None:
                if not sub.ready.done():
                    sub.ready.set_result(None)
                if event.resumed:
                    sub.resumes += 1
                if event.recovered is False:  # a resume, or a cursor the caller gave
                    sub.discontinuity()
        elif isinstance(event, ev.SubscribeRefused):
            sub = self._subs.pop(event.channel, None)
            if sub is not None:
                sub.end(ServerError(event.code, event.message))
        elif isinstance(event, ev.Reply):
            self._resolve(self._requests.pop(event.rid, None), event.doc)
        elif isinstance(event, ev.Unexpected):
            log.warning("server error %s: %s", event.code, event.message)

    # -- inside: small parts -------------------------------------------------------

    def _send(self, frame: Mapping[str, Any]) -> None:
        if self._outbox is not None:
            self._outbox.put_nowait(encode(frame))

    def _resend(self, key: int) -> None:
        frame = self._core.resend(key)
        if frame is not None:
            self._send(frame)

    async def _request(self, frame: Mapping[str, Any]) -> Mapping[str, Any]:
        self._check_usable()
        timeout = self.settings.request_timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self._wait_up(timeout, REQUEST_TIMEOUT)
        rid, doc = self._core.request(frame)
        fut: asyncio.Future[Mapping[str, Any]] = loop.create_future()
        self._requests[rid] = fut
        self._send(doc)
        try:
            return await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise ClientError(REQUEST_TIMEOUT, f"no reply to {frame['type']}") from None
        finally:
            self._requests.pop(rid, None)

    async def _wait_up(self, within_s: float, code: str) -> None:
        if self._failure is not None:
            raise self._failure
        try:
            await asyncio.wait_for(self._up.wait(), within_s)
        except TimeoutError:
            raise ClientError(code, f"not connected within {within_s} s") from None
        if self._failure is not None:
            raise self._failure
        if self._closing:
            raise ClientError(CLOSED, "the client was closed")

    async def _drop_sub(self, channel: str) -> None:
        self._subs.pop(channel, None)
        sent = self._core.unsubscribe(channel)
        if sent is not None:
            self._send(sent[1])  # its reply is not awaited: the subscription is gone either way

    def _cursor_of(self, channel: str) -> str | None:
        s = self._core.subs.get(channel)
        return s.cursor if s is not None else None

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closing:
            raise ClientError(CLOSED, "the client is closed")
        if self._run_task is None:
            raise ClientError(CLOSED, "the client is not started")

    def _fail_all(self, why: ClientError) -> None:
        for fut in list(self._publishes.values()) + list(self._requests.values()):
            self._reject(fut, why)
        for sub in self._subs.values():
            sub.end(why)
        self._subs.clear()
        self._up.set()  # wake waiters: they see the failure

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self._on_state is not None:
                self._on_state(state)

    @staticmethod
    def _resolve(fut: asyncio.Future[Any] | None, value: Any) -> None:
        if fut is not None and not fut.done():
            fut.set_result(value)

    @staticmethod
    def _reject(fut: asyncio.Future[Any] | None, exc: BaseException) -> None:
        if fut is not None and not fut.done():
            fut.set_exception(exc)
            fut.exception()  # retrieved: the caller may have stopped waiting
