"""The client's pure parts: protocol state (client/core.py), frames, endpoints, backoff,
settings. No I/O, no event loop."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client import core as ev
from client.core import ClientCore
from client.endpoints import SENDS_AWAY, Backoff, Endpoints, RegionEdges, from_route
from client.errors import PENDING_FULL, ClientError
from client.frames import Disconnect, Message
from client.settings import ClientSettings


def message(channel: str, cursor: str, i: int = 0) -> dict[str, Any]:
    return {
        "type": "message",
        "channel": channel,
        "id": f"m{i}",
        "name": None,
        "data": i,
        "client_id": "a",
        "region": "eu",
        "serial": f"eu:{i}",
        "cursor": cursor,
        "timestamp": 1,
    }


def connected_core(max_pending: int = 10) -> ClientCore:
    c = ClientCore(max_pending)
    assert c.opened() == []
    return c


def test_publish_gets_a_message_id_and_is_acked_by_its_request_id() -> None:
    c = connected_core()
    key, mid, frame = c.publish("ch", {"x": 1}, "say", None)
    assert frame is not None and mid.startswith("c-") and frame["message_id"] == mid
    assert frame["name"] == "say" and frame["data"] == {"x": 1}
    ack = {"type": "ack", "id": frame["id"], "serial": "eu:1", "message_id": mid}
    [event] = c.receive(ack)
    assert isinstance(event, ev.Acked) and event.key == key and event.ack.serial == "eu:1"
    assert not c.pending
    assert c.receive(ack) == []  # a second reply to the same id means nothing


def test_pending_publishes_are_sent_again_in_order_with_the_same_ids() -> None:
    c = ClientCore(10)  # not connected: publishes wait
    made = [c.publish("ch", i, None, "k" if i == 1 else None) for i in range(3)]
    assert all(frame is None for _, _, frame in made)
    frames = c.opened()
    assert [f["data"] for f in frames] == [0, 1, 2]
    assert [f["message_id"] for f in frames] == [mid for _, mid, _ in made]
    assert frames[1]["message_id"] == "k"
    # The connection goes before any ack: on the next one, the same again, new request ids.
    assert c.lost() == []
    again = c.opened()
    assert [f["message_id"] for f in again] == [f["message_id"] for f in frames]
    assert {f["id"] for f in again}.isdisjoint({f["id"] for f in frames})
    # A reply with an id of the old connection is not taken for the new one's.
    assert c.receive({"type": "ack", "id": frames[0]["id"], "serial": "x", "message_id": "y"}) == []


def test_pending_limit_boundary() -> None:
    c = connected_core(max_pending=3)
    sent = [c.publish("ch", i, None, None) for i in range(3)]
    with pytest.raises(ClientError) as err:
        c.publish("ch", 3, None, None)
    assert err.value.code == PENDING_FULL
    first = sent[0][2]
    assert first is not None
    c.receive({"type": "ack", "id": first["id"], "serial": "eu:1", "message_id": sent[0][1]})
    c.publish("ch", 3, None, None)  # room again after one ack


def test_nacks_by_code() -> None:
    c = connected_core()
    k1, _, f1 = c.publish("ch", 1, None, None)
    k2, _, f2 = c.publish("ch", 2, None, None)
    k3, _, f3 = c.publish("ch", 3, None, None)
    assert f1 and f2 and f3

    def nack(frame: dict[str, Any], code: int) -> list[ev.Event]:
        return c.receive(
            {"type": "nack", "id": frame["id"], "error": {"code": code, "message": "m"}}
        )

    assert nack(f1, 40300) == [ev.PublishRefused(k1, 40300, "m")]
    assert k1 not in c.pending  # refused for good
    assert nack(f2, 42900) == [ev.RetryLater(k2)]
    again = c.resend(k2)
    assert again is not None and again["message_id"] == f2["message_id"]
    assert nack(f3, 50300) == [ev.Unavailable(50300, "m")]
    assert k3 in c.pending and c.pending[k3].rid is None  # goes out on the next connection


def test_abandoned_publish_is_not_sent_again() -> None:
    c = ClientCore(10)
    key, _, _ = c.publish("ch", 1, None, None)
    c.abandon(key)
    assert c.opened() == []


def test_subscription_resumes_from_the_last_cursor() -> None:
    c = connected_core()
    frame = c.subscribe("ch", None, 5)
    assert frame is not None and frame["from"] == {"rewind": 5}
    [ok] = c.receive({"type": "subscribed", "id": frame["id"], "channel": "ch", "cursor": "c0"})
    assert ok == ev.Subscribed("ch", None, False)
    [got] = c.receive(message("ch", "c1", 1))
    assert isinstance(got, ev.Delivered) and got.message.data == 1
    c.lost()
    [again] = c.opened()
    assert again["from"] == {"cursor": "c1"}  # not the rewind again
    # Before `subscribed` on the new connection, messages of that channel are not taken.
    assert c.receive(message("ch", "c9", 9)) == []
    [ok] = c.receive(
        {
            "type": "subscribed",
            "id": again["id"],
            "channel": "ch",
            "cursor": "c5",
            "recovered": False,
        }
    )
    assert ok == ev.Subscribed("ch", False, True)
    assert c.subs["ch"].cursor == "c1"  # a resume keeps its own position, not the head's
    c.receive(message("ch", "c2", 2))
    assert c.subs["ch"].cursor == "c2"


def test_first_subscribe_takes_the_cursor_subscribed_gives() -> None:
    c = connected_core()
    frame = c.subscribe("ch", None, None)
    assert frame is not None and "from" not in frame
    c.receive({"type": "subscribed", "id": frame["id"], "channel": "ch", "cursor": "c7"})
    c.lost()
    [again] = c.opened()
    assert again["from"] == {"cursor": "c7"}


def test_subscribe_refused_and_unavailable() -> None:
    c = connected_core()
    f = c.subscribe("no", None, None)
    assert f is not None
    err = {"type": "error", "id": f["id"], "error": {"code": 40300, "message": "forbidden"}}
    assert c.receive(err) == [ev.SubscribeRefused("no", 40300, "forbidden")]
    assert "no" not in c.subs
    f = c.subscribe("later", None, None)
    assert f is not None
    err = {"type": "error", "id": f["id"], "error": {"code": 50300, "message": "down"}}
    assert c.receive(err) == [ev.Unavailable(50300, "down")]
    assert "later" in c.subs  # subscribed again on the next connection


def test_plain_requests_fail_with_the_connection_and_unknown_frames_are_reported() -> None:
    c = connected_core()
    rid, frame = c.request({"type": "ping"})
    assert frame == {"type": "ping", "id": rid}
    assert c.lost() == [rid]
    c.opened()
    assert c.receive({"type": "pong", "id": rid}) == []
    [odd] = c.receive({"type": "error", "error": {"code": 40000, "message": "bad"}})
    assert odd == ev.Unexpected(40000, "bad")
    [bad] = c.receive({"type": "message", "channel": "ch"})  # no fields
    assert isinstance(bad, ev.Unexpected) and bad.code == 50000
    for odd in ([1, 2], "text", None, 7):
        [e] = c.receive(odd)  # type: ignore[arg-type]
        assert isinstance(e, ev.Unexpected) and e.code == 50000


def test_message_and_disconnect_frames() -> None:
    m = Message.from_frame(message("ch", "c1", 3))
    assert (m.serial, m.cursor, m.data) == ("eu:3", "c1", 3)
    d = Disconnect.from_frame(
        {
            "type": "disconnect",
            "reason": "draining",
            "retry_after_ms": 500,
            "fallback_regions": ["us"],
        }
    )
    assert d == Disconnect("draining", True, 0.5, ("us",))


def test_endpoints_rotate_then_start_over_after_success() -> None:
    e = Endpoints([RegionEdges("eu", ("e1", "e2")), RegionEdges("us", ("u1",))])
    assert [e.next()[1] for _ in range(3)] == ["e1", "e2", "u1"]
    assert e.tried_all
    e.next()
    e.worked()
    assert e.next() == ("eu", "e1") and not e.tried_all


def test_endpoints_prefer_what_the_server_names_and_avoid_the_sender() -> None:
    e = Endpoints(
        [RegionEdges("eu", ("e1", "e2")), RegionEdges("us", ("u1",)), RegionEdges("ap", ("a1",))]
    )
    e.prefer(["eu", "ap"], avoid="e1")
    assert [e.next()[1] for _ in range(4)] == ["e2", "a1", "u1", "e1"]


def test_only_a_drain_a_shutdown_or_a_full_edge_sends_the_client_away() -> None:
    assert SENDS_AWAY == {"draining", "shutdown", "edge_full"}
    assert not {"slow_consumer", "rate_limited", "token_expired"} & SENDS_AWAY


def test_route_reply() -> None:
    doc = {
        "region": "eu",
        "edges": ["ws://e/v1/connect"],
        "fallbacks": [
            {"region": "us", "edges": ["ws://u/v1/connect"]},
            {"region": "ap", "edges": []},
        ],
    }
    assert from_route(doc) == [
        RegionEdges("eu", ("ws://e/v1/connect",)),
        RegionEdges("us", ("ws://u/v1/connect",)),
    ]
    with pytest.raises(ValueError):
        Endpoints([])


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    b = Backoff(0.1, 1.0, draw=lambda: 1.0)
    assert [round(b.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next() == pytest.approx(0.1)
    assert Backoff(0.1, 1.0, draw=lambda: 0.5).next() == pytest.approx(0.05)


@pytest.mark.parametrize(
    "bad",
    [{"max_pending_publishes": 0}, {"publish_timeout_s": -1}, {"reconnect_max_s": 0.01}],
)
def test_settings_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ClientSettings(**bad)
    assert ClientSettings(max_pending_publishes=1).max_pending_publishes == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
frame_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(
            ["message", "ack", "nack", "subscribed", "error", "disconnect", "pong", "history_page"]
        )
        | st.text(),
        "id": st.integers(0, 6) | json_values,
        "channel": st.sampled_from(["ch", "other"]) | json_values,
        "cursor": json_values,
        "error": json_values,
        "serial": json_values,
        "message_id": json_values,
        "fallback_regions": json_values,
        "retry_after_ms": json_values,
    },
)


@settings(max_examples=400, deadline=None)
@given(st.lists(frame_like | json_values, max_size=8))
def test_no_server_frame_breaks_the_core(frames: list[Any]) -> None:
    """Whatever the server sends, `receive` returns events and never raises; the
    publishes and subscriptions it keeps stay consistent."""
    c = connected_core()
    c.publish("ch", 1, None, None)
    c.subscribe("ch", None, None)
    for frame in frames:
        events = c.receive(frame)
        assert isinstance(events, list)
    assert all(p.channel == "ch" for p in c.pending.values())
    c.lost()
    c.opened()  # a new connection can still be set up
