"""DNS messages: parse a query, encode a response (RFC 1035, RFC 6891 EDNS). Pure.

Only what an authoritative server needs: one question in, A/AAAA/NS/SOA records
and an OPT pseudo-record out. :func:`parse_query` never raises anything but
:class:`QueryError`, which says whether to drop the message (``rcode is None``)
or answer with an error, and carries whatever of the query could be read so the
error response can echo it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from enum import IntEnum

from control_plane.dns.ecs import ECS_OPTION_CODE, ClientSubnet, IPAddress
from control_plane.dns.errors import WireFormatError
from control_plane.dns.names import Name, NameWriter, read_name

HEADER_SIZE = 12
MAX_UDP_PLAIN = 512  # RFC 1035 limit without EDNS
MAX_MESSAGE = 65535  # the TCP length prefix is 16 bits

# Header flag bits (RFC 1035 4.1.1, RFC 4035 3.2).
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
CD = 0x0010


class Rcode(IntEnum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    BADVERS = 16  # extended (RFC 6891): the upper 8 bits travel in the OPT record


class RRType(IntEnum):
    A = 1
    NS = 2
    SOA = 6
    AAAA = 28
    OPT = 41
    IXFR = 251
    AXFR = 252
    ANY = 255


CLASS_IN = 1


@dataclass(frozen=True)
class Header:
    id: int
    flags: int
    qdcount: int
    ancount: int
    nscount: int
    arcount: int

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @classmethod
    def decode(cls, data: bytes) -> Header:
        if len(data) < HEADER_SIZE:
            raise WireFormatError("dns.short_header", f"{len(data)} octets, a header needs 12")
        f = [int.from_bytes(data[i : i + 2], "big") for i in range(0, HEADER_SIZE, 2)]
        return cls(*f)


@dataclass(frozen=True)
class Question:
    name: Name
    qtype: int
    qclass: int = CLASS_IN


@dataclass(frozen=True)
class Edns:
    """The OPT pseudo-record of a query (RFC 6891 6.1.3)."""

    udp_size: int = 1232
    version: int = 0
    dnssec_ok: bool = False
    client_subnet: ClientSubnet | None = None


@dataclass(frozen=True)
class Query:
    header: Header
    question: Question
    edns: Edns | None

    @property
    def id(self) -> int:
        return self.header.id


class QueryError(ValueError):
    """A message that cannot be answered normally.

    ``rcode`` None: drop it silently (not a query, or too short to answer). Otherwise
    answer with ``rcode``, echoing ``header``, ``question`` and ``edns`` when known.
    """

    def __init__(
        self,
        code: str,
        detail: str,
        rcode: Rcode | None,
        header: Header | None = None,
        question: Question | None = None,
        edns: Edns | None = None,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.rcode = rcode
        self.header = header
        self.question = question
        self.edns = edns


def parse_query(data: bytes) -> Query:
    """Parse a query with exactly one question. Raises only :class:`QueryError`."""
    try:
        header = Header.decode(data)
    except WireFormatError as exc:
        raise QueryError(exc.code, exc.detail, None) from None
    if header.flags & QR:
        raise QueryError("dns.not_a_query", "QR bit set (a response)", None)
    if header.opcode != 0:
        raise QueryError("dns.bad_opcode", f"opcode {header.opcode}", Rcode.NOTIMP, header)
    if header.qdcount != 1:
        raise QueryError("dns.question_count", f"{header.qdcount} questions", Rcode.FORMERR, header)
    if header.ancount or header.nscount:
        raise QueryError("dns.unexpected_records", "query has answers", Rcode.FORMERR, header)
    try:
        question, pos = _read_question(data, HEADER_SIZE)
    except WireFormatError as exc:
        raise QueryError(exc.code, exc.detail, Rcode.FORMERR, header) from None
    edns: Edns | None = None
    try:
        for _ in range(header.arcount):
            edns, pos = _read_additional(data, pos, edns)
    except _EdnsOptionError as exc:
        raise QueryError(exc.code, exc.detail, Rcode.FORMERR, header, question, exc.edns) from None
    except WireFormatError as exc:
        raise QueryError(exc.code, exc.detail, Rcode.FORMERR, header, question, edns) from None
    if pos != len(data):
        raise QueryError(
            "dns.trailing_data",
            f"{len(data) - pos} octets after the message",
            Rcode.FORMERR,
            header,
            question,
            edns,
        )
    if edns is not None and edns.version != 0:
        raise QueryError(
            "dns.bad_edns_version",
            f"EDNS version {edns.version}",
            Rcode.BADVERS,
            header,
            question,
            replace(edns, client_subnet=None),
        )
    return Query(header, question, edns)


class _EdnsOptionError(WireFormatError):
    """A bad option inside an otherwise readable OPT record (the OPT is still echoed)."""

    def __init__(self, inner: WireFormatError, edns: Edns) -> None:
        super().__init__(inner.code, inner.detail)
        self.edns = edns


def _need(data: bytes, pos: int, n: int, what: str) -> None:
    if pos + n > len(data):
        raise WireFormatError("dns.truncated", f"{what} runs past the end of the message")


def _read_question(data: bytes, pos: int) -> tuple[Question, int]:
    name, pos = read_name(data, pos)
    _need(data, pos, 4, "question")
    qtype = int.from_bytes(data[pos : pos + 2], "big")
    qclass = int.from_bytes(data[pos + 2 : pos + 4], "big")
    return Question(name, qtype, qclass), pos + 4


def _read_additional(data: bytes, pos: int, edns: Edns | None) -> tuple[Edns | None, int]:
    """One additional record: an OPT is parsed, anything else (e.g. TSIG) skipped."""
    name, pos = read_name(data, pos)
    _need(data, pos, 10, "record header")
    rtype = int.from_bytes(data[pos : pos + 2], "big")
    rclass = int.from_bytes(data[pos + 2 : pos + 4], "big")
    ttl = int.from_bytes(data[pos + 4 : pos + 8], "big")
    rdlen = int.from_bytes(data[pos + 8 : pos + 10], "big")
    pos += 10
    _need(data, pos, rdlen, "record data")
    rdata = data[pos : pos + rdlen]
    pos += rdlen
    if rtype != RRType.OPT:
        return edns, pos
    if edns is not None:
        raise WireFormatError("dns.duplicate_opt", "more than one OPT record")
    if name:
        raise WireFormatError("dns.bad_opt", "OPT record not owned by the root")
    opt = Edns(udp_size=rclass, version=(ttl >> 16) & 0xFF, dnssec_ok=bool(ttl & 0x8000))
    try:
        subnet = _read_options(rdata)
    except WireFormatError as exc:
        raise _EdnsOptionError(exc, opt) from None
    return replace(opt, client_subnet=subnet), pos


def _read_options(rdata: bytes) -> ClientSubnet | None:
    subnet: ClientSubnet | None = None
    pos = 0
    while pos < len(rdata):
        if pos + 4 > len(rdata):
            raise WireFormatError("dns.opt_truncated", "EDNS option header cut short")
        code = int.from_bytes(rdata[pos : pos + 2], "big")
        size = int.from_bytes(rdata[pos + 2 : pos + 4], "big")
        pos += 4
        if pos + size > len(rdata):
            raise WireFormatError("dns.opt_truncated", "EDNS option data cut short")
        if code == ECS_OPTION_CODE:
            if subnet is not None:
                raise WireFormatError("dns.ecs_duplicate", "more than one client subnet option")
            subnet = ClientSubnet.decode(rdata[pos : pos + size])
        pos += size  # other options (cookies, padding, ...) are not ours to answer
    return subnet


# --- responses -------------------------------------------------------------------------


@dataclass(frozen=True)
class Soa:
    mname: Name
    rname: Name
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


RData = IPAddress | Name | Soa


@dataclass(frozen=True)
class Record:
    """One resource record: A/AAAA carry an address, NS a name, SOA a :class:`Soa`."""

    name: Name
    rtype: RRType
    ttl: int
    data: RData


@dataclass(frozen=True)
class ResponseEdns:
    udp_size: int
    dnssec_ok: bool = False
    client_subnet: ClientSubnet | None = None


@dataclass(frozen=True)
class Response:
    id: int
    rcode: Rcode = Rcode.NOERROR
    opcode: int = 0
    authoritative: bool = False
    recursion_desired: bool = False
    checking_disabled: bool = False
    question: Question | None = None
    answer: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    edns: ResponseEdns | None = None
    truncated: bool = False


def encode_response(resp: Response, compress: bool = True, max_size: int = MAX_MESSAGE) -> bytes:
    """The response on the wire, at most ``max_size`` octets.

    When the records do not fit, they are all left out and TC is set (the question
    and OPT stay, RFC 6891 7), so the client retries over TCP.
    """
    wire = _encode(resp, compress)
    if len(wire) <= max_size:
        return wire
    return _encode(replace(resp, answer=(), authority=(), additional=(), truncated=True), compress)


def _encode(resp: Response, compress: bool) -> bytes:
    if resp.edns is None and resp.rcode > 0xF:
        raise ValueError(f"rcode {resp.rcode} needs EDNS")
    flags = QR | (resp.opcode & 0xF) << 11 | (resp.rcode & 0xF)
    flags |= AA if resp.authoritative else 0
    flags |= TC if resp.truncated else 0
    flags |= RD if resp.recursion_desired else 0
    flags |= CD if resp.checking_disabled else 0
    counts = (
        1 if resp.question else 0,
        len(resp.answer),
        len(resp.authority),
        len(resp.additional) + (1 if resp.edns else 0),
    )
    buf = bytearray()
    for v in (resp.id, flags, *counts):
        buf += v.to_bytes(2, "big")
    names = NameWriter(buf, compress)
    if resp.question:
        names.write(resp.question.name)
        buf += resp.question.qtype.to_bytes(2, "big") + resp.question.qclass.to_bytes(2, "big")
    for rec in (*resp.answer, *resp.authority, *resp.additional):
        _write_record(buf, names, rec)
    if resp.edns:
        _write_opt(buf, resp.edns, resp.rcode >> 4)
    return bytes(buf)


def _write_record(buf: bytearray, names: NameWriter, rec: Record) -> None:
    names.write(rec.name)
    buf += int(rec.rtype).to_bytes(2, "big") + CLASS_IN.to_bytes(2, "big")
    buf += rec.ttl.to_bytes(4, "big")
    length_at = len(buf)
    buf += b"\0\0"
    data = rec.data
    if isinstance(data, ipaddress.IPv4Address | ipaddress.IPv6Address):
        buf += data.packed
    elif isinstance(data, Soa):
        names.write(data.mname)
        names.write(data.rname)
        for v in (data.serial, data.refresh, data.retry, data.expire, data.minimum):
            buf += v.to_bytes(4, "big")
    else:
        names.write(data)
    buf[length_at : length_at + 2] = (len(buf) - length_at - 2).to_bytes(2, "big")


def _write_opt(buf: bytearray, edns: ResponseEdns, extended_rcode: int) -> None:
    options = b""
    if edns.client_subnet is not None:
        data = edns.client_subnet.encode()
        options = ECS_OPTION_CODE.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data
    ttl = (extended_rcode & 0xFF) << 24 | (0x8000 if edns.dnssec_ok else 0)
    buf += b"\0" + int(RRType.OPT).to_bytes(2, "big") + edns.udp_size.to_bytes(2, "big")
    buf += ttl.to_bytes(4, "big") + len(options).to_bytes(2, "big") + options
