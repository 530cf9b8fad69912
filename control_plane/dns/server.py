"""The geo-DNS socket server: UDP and TCP on one port, asyncio. Moves bytes only.

Every message goes to :class:`~control_plane.dns.responder.Responder` with the
sender's address, the region states of the moment (``states_provider()``) and the
locator. TCP uses the 2-octet length prefix (RFC 1035 4.2.2, RFC 7766): several
queries per connection, answered in order; a connection idle for
``tcp_idle_timeout_s`` is closed, and connections beyond ``max_tcp_connections``
are closed as soon as they are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import cast

from control_plane.dns.policy import Locator
from control_plane.dns.responder import Reply, Responder
from control_plane.dns.settings import DnsSettings
from mesh.control import RegionState
from mesh.topology import Topology

log = logging.getLogger("edgemesh.dns")

StatesProvider = Callable[[], Mapping[str, RegionState]]
"""Returns the current verdict per region name; a region it leaves out counts as usable."""

_BIND_ATTEMPTS = 20


@dataclass
class DnsCounters:
    """What the server did since it started (for logs and ``/metrics``)."""

    udp_queries: int = 0
    tcp_queries: int = 0
    tcp_connections: int = 0
    tcp_rejected: int = 0  # closed at once: over max_tcp_connections
    tcp_idle_closed: int = 0
    dropped: int = 0  # no reply at all (not a query, shorter than a header)
    truncated: int = 0
    rcodes: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)  # stable error codes
    regions: Counter[str] = field(default_factory=Counter)  # region given for edge names


class GeoDnsServer:
    """Serves the topology's zone. Call :meth:`start`, later :meth:`stop`."""

    def __init__(
        self,
        topology: Topology,
        locator: Locator,
        states_provider: StatesProvider,
        settings: DnsSettings | None = None,
    ) -> None:
        self.topology = topology
        self.locator = locator
        self.states_provider = states_provider
        self.settings = settings or DnsSettings()
        self.responder = Responder(topology, self.settings)
        self.counters = DnsCounters()
        self.host = ""
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        """Listen on UDP and TCP ``host:port``; port 0 picks a port free for both.

        Raises OSError when the address cannot be bound.
        """
        if self._udp is not None:
            raise RuntimeError("the DNS server is already started")
        for _ in range(_BIND_ATTEMPTS if port == 0 else 1):
            udp = await self._bind_udp(host, port)
            bound = int(udp.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, host, bound)
            except OSError:
                udp.close()
                if port != 0:
                    raise
                continue  # the TCP side of that port was taken: try another
            self._udp, self.host, self.port = udp, host, bound
            log.info("geo-DNS for %s on %s:%d (udp, tcp)", self.topology.dns.zone, host, bound)
            return
        raise OSError(f"no port free for both UDP and TCP on {host}")

    async def _bind_udp(self, host: str, port: int) -> asyncio.DatagramTransport:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(host, port)
        )
        return transport

    async def stop(self) -> None:
        """Stop listening and close every open TCP connection."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()
            self._tcp = None

    def handle(self, data: bytes, source: str, *, udp: bool) -> Reply:
        """Answer one message (also used by the UDP protocol). Never raises."""
        try:
            states = self.states_provider()
        except Exception:
            log.exception("dns: the region states provider failed; treating all as usable")
            states = {}
        reply = self.responder.respond(data, source, states, self.locator, udp=udp)
        c = self.counters
        if udp:
            c.udp_queries += 1
        else:
            c.tcp_queries += 1
        if reply.wire is None:
            c.dropped += 1
        if reply.rcode is not None:
            c.rcodes[reply.rcode.name] += 1
        if reply.problem is not None:
            c.problems[reply.problem] += 1
        if reply.truncated:
            c.truncated += 1
        if reply.region is not None:
            c.regions[reply.region] += 1
        return reply

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.settings.max_tcp_connections:
            self.counters.tcp_rejected += 1
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.counters.tcp_connections += 1
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else ""
        try:
            await self._tcp_queries(reader, writer, source)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _tcp_queries(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: str
    ) -> None:
        idle = self.settings.tcp_idle_timeout_s
        while True:
            try:
                async with asyncio.timeout(idle):
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    data = await reader.readexactly(size)
            except TimeoutError:
                self.counters.tcp_idle_closed += 1
                return
            except asyncio.IncompleteReadError:
                return  # closed between or inside messages
            reply = self.handle(data, source, udp=False)
            if reply.wire is None:
                return  # not a query: the stream cannot be trusted any further
            writer.write(len(reply.wire).to_bytes(2, "big") + reply.wire)
            try:
                async with asyncio.timeout(idle):
                    await writer.drain()
            except TimeoutError:
                self.counters.tcp_idle_closed += 1  # the client stopped reading
                return


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: GeoDnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        reply = self.server.handle(data, str(addr[0]), udp=True)
        if reply.wire is not None and self.transport is not None:
            self.transport.sendto(reply.wire, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("dns: udp error: %s", exc)
