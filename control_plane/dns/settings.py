"""Limits of the geo-DNS server. The zone, TTL and default region live in the topology."""

from __future__ import annotations

from dataclasses import dataclass


class DnsSettingsError(ValueError):
    """A setting out of range; the message names it. ``code`` is stable."""

    code = "dns.bad_setting"


@dataclass(frozen=True)
class DnsSettings:
    # Largest UDP response we send when the client's EDNS advertises more (DNS flag
    # day 2020: 1232 avoids IP fragmentation). Without EDNS the limit is 512.
    max_udp_payload: int = 1232
    # A TCP connection with no complete query for this long is closed (RFC 7766 6.2.3).
    tcp_idle_timeout_s: float = 10.0
    # Connections beyond this are closed at once, so one client cannot hold them all.
    max_tcp_connections: int = 256
    # Name compression in responses (RFC 1035 4.1.4).
    compress: bool = True

    def __post_init__(self) -> None:
        if not 512 <= self.max_udp_payload <= 4096:
            raise DnsSettingsError(
                f"max_udp_payload: {self.max_udp_payload} is outside 512-4096 octets"
            )
        if not 0 < self.tcp_idle_timeout_s <= 3600:
            raise DnsSettingsError(
                f"tcp_idle_timeout_s: {self.tcp_idle_timeout_s} is outside (0, 3600] seconds"
            )
        if not 1 <= self.max_tcp_connections <= 65536:
            raise DnsSettingsError(
                f"max_tcp_connections: {self.max_tcp_connections} is outside 1-65536"
            )
