"""The EDNS Client Subnet option (RFC 7871 section 6). Pure.

Option data: FAMILY (2 octets, 1 = IPv4, 2 = IPv6), SOURCE PREFIX-LENGTH (1),
SCOPE PREFIX-LENGTH (1), ADDRESS (exactly ceil(source / 8) octets, bits past the
source prefix zero). A server that receives anything else answers FORMERR
(section 6: "as a signal to the software developer making the request to fix
their implementation").
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from control_plane.dns.errors import WireFormatError

ECS_OPTION_CODE = 8
FAMILY_IPV4 = 1
FAMILY_IPV6 = 2
_BITS = {FAMILY_IPV4: 32, FAMILY_IPV6: 128}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class ClientSubnet:
    family: int
    source_prefix: int
    scope_prefix: int
    address: bytes  # as on the wire: ceil(source_prefix / 8) octets

    @classmethod
    def decode(cls, data: bytes) -> ClientSubnet:
        """Parse option data. Raises :class:`WireFormatError` (codes ``dns.ecs_*``)."""
        if len(data) < 4:
            raise WireFormatError("dns.ecs_truncated", f"option is {len(data)} octets, needs 4+")
        family = int.from_bytes(data[0:2], "big")
        source, scope = data[2], data[3]
        bits = _BITS.get(family)
        if bits is None:
            raise WireFormatError("dns.ecs_bad_family", f"unknown address family {family}")
        if source > bits or scope > bits:
            raise WireFormatError(
                "dns.ecs_prefix_too_long", f"prefix {max(source, scope)} > {bits} bits"
            )
        address = bytes(data[4:])
        if len(address) != (source + 7) // 8:
            raise WireFormatError(
                "dns.ecs_address_length",
                f"{len(address)} address octets for a /{source} prefix",
            )
        if source % 8 and address[-1] & (0xFF >> (source % 8)):
            raise WireFormatError("dns.ecs_nonzero_bits", "address bits set past the prefix")
        return cls(family, source, scope, address)

    @classmethod
    def for_network(cls, network: str, scope_prefix: int = 0) -> ClientSubnet:
        """Build from ``"192.0.2.0/24"`` (host bits must be zero). For tests and clients."""
        net = ipaddress.ip_network(network)
        family = FAMILY_IPV4 if net.version == 4 else FAMILY_IPV6
        raw = net.network_address.packed[: (net.prefixlen + 7) // 8]
        return cls(family, net.prefixlen, scope_prefix, raw)

    def encode(self) -> bytes:
        return (
            self.family.to_bytes(2, "big")
            + bytes((self.source_prefix, self.scope_prefix))
            + self.address
        )

    def ip(self) -> IPAddress:
        """The address, padded with zero octets to its family's full length."""
        if self.family == FAMILY_IPV4:
            return ipaddress.IPv4Address(self.address.ljust(4, b"\0"))
        return ipaddress.IPv6Address(self.address.ljust(16, b"\0"))

    def with_scope(self, scope_prefix: int) -> ClientSubnet:
        """The option to echo in a response: same family, source and address, new scope."""
        return ClientSubnet(self.family, self.source_prefix, scope_prefix, self.address)
