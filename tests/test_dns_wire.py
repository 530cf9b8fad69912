"""The DNS wire codec, checked against dnspython as an independent encoder and decoder."""

from __future__ import annotations

import ipaddress

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.dns.ecs import ClientSubnet
from control_plane.dns.message import (
    QueryError,
    Question,
    Rcode,
    Record,
    Response,
    ResponseEdns,
    RRType,
    Soa,
    encode_response,
    parse_query,
)
from control_plane.dns.names import NameWriter, name_from_text, read_name


def ecs_query(option_data: bytes, name: str = "edge.example.") -> bytes:
    """A query carrying raw ECS option data, as a buggy resolver might send it."""
    q = dns.message.make_query(
        name, "A", use_edns=0, options=[dns.edns.GenericOption(8, option_data)]
    )
    return q.to_wire()


def raw(header: bytes, body: bytes = b"") -> bytes:
    return header + body


def header(
    id_: int = 7, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in (id_, flags, qd, an, ns, ar))


QUESTION = b"\x04edge\x07example\x00\x00\x01\x00\x01"


# --- queries -------------------------------------------------------------------------


def test_parse_plain_query_keeps_case_and_has_no_edns() -> None:
    wire = dns.message.make_query("EdGe.Example.", "AAAA", use_edns=False).to_wire()
    q = parse_query(wire)
    assert q.question == Question((b"EdGe", b"Example"), int(RRType.AAAA), 1)
    assert q.edns is None
    assert q.id == int.from_bytes(wire[:2], "big")


def test_parse_edns_with_client_subnet() -> None:
    opt = dns.edns.ECSOption("203.0.113.0", 24)
    wire = dns.message.make_query(
        "edge.example.", "A", use_edns=0, payload=4000, want_dnssec=True, options=[opt]
    ).to_wire()
    q = parse_query(wire)
    assert q.edns is not None
    assert (q.edns.udp_size, q.edns.version, q.edns.dnssec_ok) == (4000, 0, True)
    assert q.edns.client_subnet == ClientSubnet(1, 24, 0, bytes([203, 0, 113]))
    assert str(q.edns.client_subnet.ip()) == "203.0.113.0"


def test_parse_ipv6_client_subnet_and_unknown_options_are_ignored() -> None:
    opts = [dns.edns.GenericOption(10, b"12345678"), dns.edns.ECSOption("2001:db8:e0::", 48)]
    q = parse_query(
        dns.message.make_query("edge.example.", "A", use_edns=0, options=opts).to_wire()
    )
    assert q.edns is not None and q.edns.client_subnet is not None
    assert q.edns.client_subnet.family == 2
    assert q.edns.client_subnet.ip() == ipaddress.ip_address("2001:db8:e0::")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x00\x03\x18\x00\xc0\x00\x02", "dns.ecs_bad_family"),
        (b"\x00\x00\x00\x00", "dns.ecs_bad_family"),
        (b"\x00\x01\x21\x00\x01\x02\x03\x04\x05", "dns.ecs_prefix_too_long"),  # /33 in IPv4
        (b"\x00\x02\x81\x00" + bytes(17), "dns.ecs_prefix_too_long"),  # /129 in IPv6
        (b"\x00\x01\x18\x00\xc0\x00\x02\x00", "dns.ecs_address_length"),  # /24 with 4 octets
        (b"\x00\x01\x18\x00\xc0\x00", "dns.ecs_address_length"),  # /24 with 2 octets
        (b"\x00\x01\x00\x00\x01", "dns.ecs_address_length"),  # /0 must carry no octets
        (b"\x00\x01\x14\x00\xc0\x00\x0f", "dns.ecs_nonzero_bits"),  # /20, low 4 bits set
        (b"\x00\x01\x17\x00\xc0\x00\x03", "dns.ecs_nonzero_bits"),  # /23, last bit set
        (b"\x00\x01\x18", "dns.ecs_truncated"),
        (b"", "dns.ecs_truncated"),
    ],
)
def test_malformed_client_subnet_is_formerr_echoing_question_and_opt(
    data: bytes, code: str
) -> None:
    with pytest.raises(QueryError) as err:
        parse_query(ecs_query(data))
    assert err.value.code == code
    assert err.value.rcode == Rcode.FORMERR
    assert err.value.question is not None and err.value.question.name == (b"edge", b"example")
    assert err.value.edns is not None and err.value.edns.client_subnet is None


@pytest.mark.parametrize(
    ("data", "prefix"),
    [
        (b"\x00\x01\x20\x00\xc0\x00\x02\x01", 32),  # the longest IPv4 prefix
        (b"\x00\x02\x80\x00" + b"\x20\x01" + bytes(14), 128),
        (b"\x00\x01\x00\x00", 0),  # "do not use my address"
        (b"\x00\x01\x14\x00\xc0\x00\x10", 20),  # /20, only prefix bits set
    ],
)
def test_client_subnet_boundaries_are_accepted(data: bytes, prefix: int) -> None:
    q = parse_query(ecs_query(data))
    assert q.edns is not None and q.edns.client_subnet is not None
    assert q.edns.client_subnet.source_prefix == prefix


def test_option_length_past_the_record_is_formerr() -> None:
    wire = bytearray(ecs_query(b"\x00\x01\x18\x00\xc0\x00\x02"))
    # The ECS option is the last 11 octets: code (2), length (2), data (7).
    wire[-9:-7] = (200).to_bytes(2, "big")
    with pytest.raises(QueryError) as err:
        parse_query(bytes(wire))
    assert (err.value.code, err.value.rcode) == ("dns.opt_truncated", Rcode.FORMERR)


def test_two_client_subnet_options_are_formerr() -> None:
    opts = [dns.edns.ECSOption("192.0.2.0", 24), dns.edns.ECSOption("198.51.100.0", 24)]
    wire = dns.message.make_query("edge.example.", "A", use_edns=0, options=opts).to_wire()
    with pytest.raises(QueryError) as err:
        parse_query(wire)
    assert err.value.code == "dns.ecs_duplicate"


OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"  # root, OPT, 1232, version 0, no options
OPT_V1 = OPT[:6] + b"\x01" + OPT[7:]  # EDNS version 1
LONG_NAME = b"".join(b"\x3f" + bytes([c]) * 63 for c in b"abcd") + b"\x00"  # 257 octets


@pytest.mark.parametrize(
    ("wire", "code", "rcode"),
    [
        (b"", "dns.short_header", None),
        (header()[:11], "dns.short_header", None),
        (header(flags=0x8000) + QUESTION, "dns.not_a_query", None),
        (header(flags=4 << 11) + QUESTION, "dns.bad_opcode", Rcode.NOTIMP),  # NOTIFY
        (header(flags=2 << 11) + QUESTION, "dns.bad_opcode", Rcode.NOTIMP),  # STATUS
        (header(qd=0), "dns.question_count", Rcode.FORMERR),
        (header(qd=2) + QUESTION + QUESTION, "dns.question_count", Rcode.FORMERR),
        (header(an=1) + QUESTION, "dns.unexpected_records", Rcode.FORMERR),
        (header() + QUESTION[:-1], "dns.truncated", Rcode.FORMERR),
        (header() + b"\x04edge\x07exam", "dns.truncated", Rcode.FORMERR),
        (header() + QUESTION + b"\x00", "dns.trailing_data", Rcode.FORMERR),
        (header(ar=1) + QUESTION, "dns.truncated", Rcode.FORMERR),
        (header(ar=1) + QUESTION + OPT[:-1], "dns.truncated", Rcode.FORMERR),
        (header(ar=2) + QUESTION + OPT + OPT, "dns.duplicate_opt", Rcode.FORMERR),
        (header(ar=1) + QUESTION + b"\x01a" + OPT, "dns.bad_opt", Rcode.FORMERR),
        (header() + b"\xc0\x0c\x00\x01\x00\x01", "dns.bad_name", Rcode.FORMERR),  # self pointer
        (header() + b"\xc0\x20\x00\x01\x00\x01", "dns.bad_name", Rcode.FORMERR),  # forward
        (header() + b"\x41" + bytes(70), "dns.bad_name", Rcode.FORMERR),  # label type 0x40
        (header() + LONG_NAME + b"\x00\x01\x00\x01", "dns.bad_name", Rcode.FORMERR),
        (header(ar=1) + QUESTION + OPT_V1, "dns.bad_edns_version", Rcode.BADVERS),
    ],
)  # fmt: skip
def test_malformed_messages(wire: bytes, code: str, rcode: Rcode | None) -> None:
    with pytest.raises(QueryError) as err:
        parse_query(wire)
    assert (err.value.code, err.value.rcode) == (code, rcode)


def test_longest_legal_name_parses() -> None:
    name = b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63 + b"\x3d" + b"d" * 61
    q = parse_query(header() + name + b"\x00\x00\x01\x00\x01")  # 255 octets with the root
    assert len(q.question.name) == 4


def test_non_opt_additional_records_are_skipped() -> None:
    tsig_like = b"\x03key\x00\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x02ab"
    q = parse_query(header(ar=2) + QUESTION + tsig_like + OPT)
    assert q.edns is not None and q.edns.udp_size == 1232


def test_compressed_names_round_trip() -> None:
    buf = bytearray(b"\0" * 12)
    writer = NameWriter(buf, compress=True)
    names = [name_from_text(t) for t in ("edge.example", "eu.edge.example", "ns1.example", "x.y")]
    offsets = []
    for n in names:
        offsets.append(len(buf))
        writer.write(n)
    for n, at in zip(names, offsets, strict=True):
        assert read_name(bytes(buf), at)[0] == n
    plain = bytearray(b"\0" * 12)
    for n in names:
        NameWriter(plain, compress=False).write(n)
    assert len(buf) < len(plain)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_only_ever_raises_query_error(data: bytes) -> None:
    try:
        parse_query(data)
    except QueryError:
        pass


VALID = dns.message.make_query(
    "edge.example.", "A", use_edns=0, options=[dns.edns.ECSOption("192.0.2.0", 24)]
).to_wire()


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=4))
def test_mutated_queries_only_ever_raise_query_error(flips: list[tuple[int, int]]) -> None:
    wire = bytearray(VALID)
    for at, value in flips:
        wire[at] = value
    try:
        parse_query(bytes(wire))
    except QueryError:
        pass


# --- responses -----------------------------------------------------------------------

ZONE = name_from_text("example")
EDGE = name_from_text("Edge.example")
SOA = Soa((b"ns1", *ZONE), (b"hostmaster", *ZONE), 1, 3600, 600, 86400, 30)


def full_response(compress: bool) -> bytes:
    resp = Response(
        id=4242,
        authoritative=True,
        recursion_desired=True,
        question=Question(EDGE, int(RRType.A)),
        answer=(
            Record(EDGE, RRType.A, 30, ipaddress.IPv4Address("192.0.2.1")),
            Record(EDGE, RRType.AAAA, 30, ipaddress.IPv6Address("2001:db8::1")),
        ),
        authority=(
            Record(ZONE, RRType.NS, 60, (b"ns1", *ZONE)),
            Record(ZONE, RRType.SOA, 30, SOA),
        ),
        additional=(Record((b"ns1", *ZONE), RRType.A, 60, ipaddress.IPv4Address("192.0.2.53")),),
        edns=ResponseEdns(1232, True, ClientSubnet.for_network("203.0.113.0/24", 24)),
    )
    return encode_response(resp, compress=compress)


@pytest.mark.parametrize("compress", [True, False])
def test_response_decodes_with_dnspython(compress: bool) -> None:
    m = dns.message.from_wire(full_response(compress))
    assert m.id == 4242
    assert m.flags & dns.flags.QR and m.flags & dns.flags.AA and m.flags & dns.flags.RD
    assert not m.flags & dns.flags.TC
    assert m.rcode() == dns.rcode.NOERROR
    assert m.question[0].name == dns.name.from_text("Edge.example.")
    text = "\n".join(rrset.to_text() for rrset in (*m.answer, *m.authority, *m.additional))
    assert "Edge.example. 30 IN A 192.0.2.1" in text
    assert "Edge.example. 30 IN AAAA 2001:db8::1" in text
    assert "example. 60 IN NS ns1.example." in text
    assert "example. 30 IN SOA ns1.example. hostmaster.example. 1 3600 600 86400 30" in text
    assert "ns1.example. 60 IN A 192.0.2.53" in text
    assert m.payload == 1232 and m.ednsflags & dns.flags.DO
    (ecs,) = m.options
    assert isinstance(ecs, dns.edns.ECSOption)
    assert (ecs.address, ecs.srclen, ecs.scopelen) == ("203.0.113.0", 24, 24)


def test_compression_shortens_and_uncompressed_has_no_pointers() -> None:
    small, big = full_response(True), full_response(False)
    assert len(small) < len(big)
    assert dns.message.from_wire(small) == dns.message.from_wire(big)


def test_extended_rcode_travels_in_opt() -> None:
    wire = encode_response(Response(id=1, rcode=Rcode.BADVERS, edns=ResponseEdns(1232)))
    m = dns.message.from_wire(wire)
    assert m.rcode() == dns.rcode.BADVERS


def test_extended_rcode_without_edns_is_refused_by_the_encoder() -> None:
    with pytest.raises(ValueError):
        encode_response(Response(id=1, rcode=Rcode.BADVERS))


def test_truncation_boundary_keeps_question_and_opt() -> None:
    resp = Response(
        id=9,
        question=Question(EDGE, int(RRType.A)),
        answer=tuple(
            Record(EDGE, RRType.A, 30, ipaddress.IPv4Address(f"192.0.2.{i}")) for i in range(40)
        ),
        edns=ResponseEdns(1232, client_subnet=ClientSubnet.for_network("192.0.2.0/24", 24)),
    )
    size = len(encode_response(resp))
    assert encode_response(resp, max_size=size) == encode_response(resp)
    cut = dns.message.from_wire(encode_response(resp, max_size=size - 1))
    assert cut.flags & dns.flags.TC
    assert cut.answer == [] and cut.question[0].name == dns.name.from_text("Edge.example.")
    assert cut.edns == 0 and len(cut.options) == 1
