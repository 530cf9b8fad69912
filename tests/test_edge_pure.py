"""Unit tests of the edge's pure modules: framing, capabilities, tokens, limits, metrics."""

from __future__ import annotations

import struct

import jwt
import pytest

from edge.capabilities import Capabilities, CapabilityError, Operation, glob_matches
from edge.errors import ErrorCode
from edge.limits import Limits, PublishRateGuard, RateDecision, TokenBucket
from edge.metrics import EdgeMetrics, Sample
from edge.tokens import KeyRing, authenticate, bearer, websocket_credential
from edge.wsframe import close_frame, ping_frame, text_frame

# -- WebSocket framing -------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_length_forms(n: int) -> None:
    payload = b"x" * n
    f = text_frame(payload)
    assert f[0] == 0x81
    if n < 126:
        assert f[1] == n and f[2:] == payload
    elif n < 65536:
        assert f[1] == 126 and struct.unpack("!H", f[2:4])[0] == n and f[4:] == payload
    else:
        assert f[1] == 127 and struct.unpack("!Q", f[2:10])[0] == n and f[10:] == payload


def test_close_frame_cuts_reason_on_a_character() -> None:
    f = close_frame(4001, "é" * 100)
    assert f[0] == 0x88 and f[1] <= 125
    code = struct.unpack("!H", f[2:4])[0]
    assert code == 4001
    f[4:].decode("utf-8")  # still valid UTF-8


def test_ping_frame_and_its_limit() -> None:
    assert ping_frame(b"\x01\x02\x03\x04") == b"\x89\x04\x01\x02\x03\x04"
    assert ping_frame(b"") == b"\x89\x00"
    assert ping_frame(b"p" * 125)[:2] == b"\x89\x7d"  # the largest control payload
    with pytest.raises(ValueError):
        ping_frame(b"p" * 126)


# -- capabilities ---------------------------------------------------------------


def test_globs_treat_only_star_as_wildcard() -> None:
    assert glob_matches("chat:*", "chat:lobby")
    assert glob_matches("chat:*", "chat:")
    assert not glob_matches("chat:*", "chats")
    assert glob_matches("*", "anything at all")
    assert glob_matches("a?b", "a?b") and not glob_matches("a?b", "axb")
    assert glob_matches("[x]*", "[x]y") and not glob_matches("[x]*", "xy")
    assert glob_matches("a*c*e", "abcde") and not glob_matches("a*c*e", "abde")


def test_capabilities_union_of_matching_globs() -> None:
    caps = Capabilities.parse({"chat:*": ["subscribe", "publish"], "*": ["subscribe"]})
    assert caps.allows(Operation.PUBLISH, "chat:x")
    assert caps.allows(Operation.SUBSCRIBE, "news")
    assert not caps.allows(Operation.PUBLISH, "news")
    assert not caps.allows(Operation.HISTORY, "chat:x")
    assert Capabilities.everything().allows(Operation.HISTORY, "x")
    assert not Capabilities.parse({}).allows(Operation.SUBSCRIBE, "x")


@pytest.mark.parametrize(
    "raw", [[], {"a": "subscribe"}, {"a": ["fly"]}, {"": ["subscribe"]}, {"a": [1]}]
)
def test_bad_capabilities_are_refused(raw: object) -> None:
    with pytest.raises(CapabilityError):
        Capabilities.parse(raw)


# -- tokens ------------------------------------------------------------------------

SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret"
KEYS = KeyRing.from_pairs([f"app:{SECRET}", "other:another-secret-value-another-secret"])
NOW = 1_700_000_000.0


def test_token_round_trip_and_expiry_boundary() -> None:
    caps = Capabilities.parse({"chat:*": ["publish"]})
    token, exp = KEYS.mint("app", "alice", caps, NOW, 60)
    assert exp == int(NOW) + 60
    p = KEYS.verify(token, NOW + 59.9)
    assert (p.client_id, p.key_id, p.expires_at) == ("alice", "app", exp)
    assert p.capabilities.allows(Operation.PUBLISH, "chat:1")
    with pytest.raises(Exception) as info:
        KEYS.verify(token, NOW + 60)
    assert getattr(info.value, "code", None) == ErrorCode.TOKEN_EXPIRED


@pytest.mark.parametrize(
    "make",
    [
        lambda: "",
        lambda: "not-a-jwt",
        lambda: jwt.encode({"sub": "a", "exp": NOW + 60}, SECRET),  # no kid
        lambda: jwt.encode(
            {"sub": "a", "exp": NOW + 60}, "w" * 40, headers={"kid": "app"}
        ),  # bad signature
        lambda: jwt.encode(
            {"sub": "a", "exp": NOW + 60}, "x" * 40, headers={"kid": "nobody"}
        ),  # unknown key
        lambda: jwt.encode({"exp": NOW + 60}, SECRET, headers={"kid": "app"}),
        lambda: jwt.encode({"sub": "a"}, SECRET, headers={"kid": "app"}),
        lambda: jwt.encode(
            {"sub": "a", "exp": NOW + 60, "cap": {"x": ["fly"]}},
            SECRET,
            headers={"kid": "app"},
        ),
    ],
)
def test_bad_tokens_are_40100(make: object) -> None:
    assert callable(make)
    with pytest.raises(Exception) as info:
        KEYS.verify(make(), NOW)
    assert getattr(info.value, "code", None) == ErrorCode.UNAUTHORIZED


def test_api_key_only_where_allowed() -> None:
    p = authenticate(KEYS, f"app:{SECRET}", NOW, allow_api_key=True)
    assert p.key_id == "app" and p.capabilities.unrestricted
    for cred in ("app:wrong", f"app:{SECRET}"):
        with pytest.raises(Exception) as info:
            authenticate(KEYS, cred, NOW, allow_api_key=cred == "app:wrong")
        assert getattr(info.value, "code", None) == ErrorCode.UNAUTHORIZED
    assert bearer("Bearer abc") == "abc" and bearer("Basic abc") is None and bearer(None) is None


@pytest.mark.parametrize(
    ("query", "headers", "want"),
    [
        (b"token=abc", [], "abc"),
        (b"token=a%2Bb.c", [], "a+b.c"),  # percent-decoded
        (b"x=1&token=first&token=last", [], "last"),  # the last one given
        (b"token=q", [(b"authorization", b"Bearer h")], "q"),  # the query before the header
        (b"token=", [(b"authorization", b"Bearer h")], "h"),  # an empty one does not count
        (b"", [(b"authorization", b"Bearer one"), (b"authorization", b"Bearer two")], "one"),
        (b"", [(b"authorization", b"Basic xyz")], None),
        (b"", [(b"x-token", b"abc")], None),
        (b"", [], None),
    ],
)
def test_websocket_credential(
    query: bytes, headers: list[tuple[bytes, bytes]], want: str | None
) -> None:
    assert websocket_credential(query, headers) == want


# -- limits ------------------------------------------------------------------------


def test_token_bucket_burst_then_rate() -> None:
    b = TokenBucket(rate=10, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not b.take(0.09)
    assert b.take(0.1)  # one token refilled after 1/rate
    assert b.take(10.0) and b.take(10.0) and b.take(10.0) and not b.take(10.0)  # capped at burst


def test_publish_rate_guard_refuses_then_cuts_when_persistent() -> None:
    limits = Limits(publish_rate_per_s=1, publish_burst=2, rate_strikes=3, rate_strike_window_s=30)
    g = PublishRateGuard(limits, 0.0)
    decisions = [g.check(0.0) for _ in range(6)]
    assert decisions == [RateDecision.ALLOW] * 2 + [RateDecision.REFUSE] * 3 + [RateDecision.CUT]


def test_limits_from_env_and_validation() -> None:
    env = {"EDGEMESH_MAX_MESSAGE_BYTES": "10", "EDGEMESH_PUBLISH_RATE_PER_S": "2.5"}
    lim = Limits.from_env(env)
    assert lim.max_message_bytes == 10 and lim.publish_rate_per_s == 2.5
    assert Limits().max_message_bytes == 65536
    texts = Limits.from_env(
        {
            "EDGEMESH_MAX_NAME_BYTES": "7",
            "EDGEMESH_MAX_MESSAGE_ID_BYTES": "5",
            "EDGEMESH_MAX_REQUEST_ID_BYTES": "3",
            "EDGEMESH_MAX_TOKEN_TTL_S": "60",
        }
    )
    assert (texts.max_name_bytes, texts.max_message_id_bytes, texts.max_request_id_bytes) == (
        7,
        5,
        3,
    )
    assert texts.max_token_ttl_s == 60
    defaults = Limits()
    assert (defaults.max_name_bytes, defaults.max_message_id_bytes) == (200, 128)
    assert (defaults.max_request_id_bytes, defaults.max_token_ttl_s) == (128, 7 * 24 * 3600)
    with pytest.raises(ValueError, match="max_name_bytes"):
        Limits(max_name_bytes=0)
    with pytest.raises(ValueError, match="EDGEMESH_MAX_CONNECTIONS"):
        Limits.from_env({"EDGEMESH_MAX_CONNECTIONS": "many"})
    with pytest.raises(ValueError):
        Limits(max_connections=0)
    with pytest.raises(ValueError):
        Limits(max_message_bytes=100, max_frame_bytes=50)


# -- metrics -----------------------------------------------------------------------


def test_metrics_render_prometheus_text() -> None:
    m = EdgeMetrics()
    m.nacks.inc("50300")
    m.nacks.inc("50300")
    m.disconnects.inc('we"ird')
    m.publish_ack_seconds.observe(0.003)
    m.publish_ack_seconds.observe(7.0)
    text = m.render([Sample("edgemesh_connections", "Open connections.", 3)])
    assert 'edgemesh_nacks_total{code="50300"} 2' in text
    assert 'edgemesh_disconnects_total{reason="we\\"ird"} 1' in text
    assert 'edgemesh_publish_ack_seconds_bucket{le="0.002"} 0' in text
    assert 'edgemesh_publish_ack_seconds_bucket{le="0.005"} 1' in text
    assert 'edgemesh_publish_ack_seconds_bucket{le="+Inf"} 2' in text
    assert "edgemesh_publish_ack_seconds_count 2" in text
    assert "# TYPE edgemesh_connections gauge\nedgemesh_connections 3" in text


def test_edge_settings_from_env_reads_limits_and_mesh_settings() -> None:
    from edge.settings import EdgeSettings

    s = EdgeSettings.from_env(
        {
            "EDGEMESH_MAX_CONNECTIONS": "3",
            "EDGEMESH_MESH_MAX_MSGS_PER_CHANNEL": "500",
            "EDGEMESH_HEARTBEAT_INTERVAL_S": "5",
        }
    )
    assert (s.limits.max_connections, s.mesh.max_msgs_per_channel) == (3, 500)
    assert s.heartbeat_interval_s == 5
    with pytest.raises(ValueError, match="EDGEMESH_HEARTBEAT_INTERVAL_S"):
        EdgeSettings.from_env({"EDGEMESH_HEARTBEAT_INTERVAL_S": "soon"})
    # its bounds, 1..3600 s, at the boundary
    for ok in ("1", "3600"):
        assert EdgeSettings.from_env({"EDGEMESH_HEARTBEAT_INTERVAL_S": ok}).heartbeat_interval_s
    for bad in ("0.999", "3600.001", "0", "-5", "nan", "inf"):
        with pytest.raises(ValueError, match=r"EDGEMESH_HEARTBEAT_INTERVAL_S: must be 1\.\.3600"):
            EdgeSettings.from_env({"EDGEMESH_HEARTBEAT_INTERVAL_S": bad})


def test_drain_settings_from_env_their_bound_and_boundaries() -> None:
    from edge.settings import EXIT_SLACK_S, DrainSettings, EdgeSettings

    d = EdgeSettings.from_env(
        {"EDGEMESH_DRAIN_TIMEOUT_S": "4", "EDGEMESH_DRAIN_CLOSE_GRACE_S": "0.5"}
    ).drain
    assert (d.timeout_s, d.close_grace_s, d.stop_timeout_s, d.retry_after_ms) == (4, 0.5, 5, 500)
    # the exit bound: every phase at its limit (uvicorn's wait is whole seconds)
    assert d.exit_within_s == 4 + 1 + 5 + EXIT_SLACK_S
    assert DrainSettings().exit_within_s == 10 + 2 + 5 + EXIT_SLACK_S
    assert DrainSettings.from_env({"EDGEMESH_DRAIN_STOP_TIMEOUT_S": "0.001"}).stop_timeout_s > 0
    for value in ("0", "-1", "inf", "nan"):
        with pytest.raises(ValueError, match=r"EDGEMESH_DRAIN_.*stop_timeout_s"):
            DrainSettings.from_env({"EDGEMESH_DRAIN_STOP_TIMEOUT_S": value})
    with pytest.raises(ValueError, match="EDGEMESH_DRAIN_RETRY_AFTER_MS"):
        DrainSettings.from_env({"EDGEMESH_DRAIN_RETRY_AFTER_MS": "0.5"})
    with pytest.raises(ValueError, match="retry_after_ms"):
        DrainSettings(retry_after_ms=0)


def test_tokens_are_redacted_from_request_log_lines() -> None:
    import logging

    from edge.server import RedactTokens

    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s"', (
            "127.0.0.1:1", "/v1/connect?a=1&token=eyJ.abc.def&b=2",
        ), None,
    )  # fmt: skip
    assert RedactTokens().filter(record)
    assert record.getMessage() == '127.0.0.1:1 - "WebSocket /v1/connect?a=1&token=...&b=2"'
