"""The client frame parser and the server frame encoders (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import replies
from edge.errors import EdgeError, ErrorCode
from edge.frames import FrameError, Ping, Publish, Subscribe, check_publish_fields, parse_frame
from edge.limits import Limits
from mesh.cursor import FromCursor, Live, Rewind
from mesh.message import StoredMessage

MAX = 1024


def parse(doc: Any) -> Any:
    return parse_frame(doc if isinstance(doc, str) else json.dumps(doc), MAX, 1000)


def code_of(doc: Any) -> tuple[int, Any, bool]:
    with pytest.raises(FrameError) as info:
        parse(doc)
    return int(info.value.code), info.value.request_id, info.value.publish


def test_publish_frame_is_typed_and_data_compact() -> None:
    f = parse({"type": "publish", "id": 3, "channel": "chat:x", "data": {"a": [1, 2]}})
    assert f == Publish(3, "chat:x", b'{"a":[1,2]}', None, None)
    f = parse(
        {"type": "publish", "id": "r", "channel": "c", "data": None, "name": "n", "message_id": "m"}
    )
    assert (f.data, f.name, f.message_id) == (b"null", "n", "m")


def test_subscribe_starts() -> None:
    assert parse({"type": "subscribe", "channel": "c"}) == Subscribe(None, "c", Live())
    assert parse({"type": "subscribe", "channel": "c", "from": {"rewind": 5}}).start == Rewind(5)
    got = parse({"type": "subscribe", "channel": "c", "from": {"cursor": "abc"}})
    assert got.start == FromCursor("abc")
    assert parse({"type": "ping", "id": 7}) == Ping(7)


def test_data_size_boundary_is_41300_as_nack() -> None:
    at_limit = "x" * (MAX - 2)  # the JSON text of the string is MAX bytes
    parse({"type": "publish", "channel": "c", "data": at_limit})
    assert code_of({"type": "publish", "id": 1, "channel": "c", "data": at_limit + "x"}) == (
        41300,
        1,
        True,
    )


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        ("not json", 40000),
        ("[1]", 40000),
        ('{"type":"publish","channel":"c","data":NaN}', 40000),
        ("[" * 100_000 + "]" * 100_000, 40000),
        ({"id": 1}, 40000),
        ({"type": "fly", "id": 1}, 40000),
        ({"type": "ping", "id": True}, 40000),
        ({"type": "ping", "id": 2**60}, 40000),
        ({"type": "subscribe", "id": 1}, 40000),
        ({"type": "subscribe", "id": 1, "channel": "a b"}, 40001),
        ({"type": "subscribe", "id": 1, "channel": ""}, 40001),
        ({"type": "subscribe", "id": 1, "channel": "x" * 256}, 40001),
        ({"type": "subscribe", "id": 1, "channel": "c", "from": {"rewind": -1}}, 40000),
        ({"type": "subscribe", "id": 1, "channel": "c", "from": "x"}, 40000),
        ({"type": "publish", "id": 1, "channel": "c"}, 40000),
        ({"type": "publish", "id": 1, "channel": "c", "data": 1, "name": 5}, 40000),
        ({"type": "publish", "id": 1, "channel": "c", "data": 1, "message_id": "a\nb"}, 40000),
        ({"type": "history", "id": 1, "channel": "c", "limit": 0}, 40000),
        ({"type": "history", "id": 1, "channel": "c", "after": 5}, 40000),
    ],
)
def test_bad_frames_have_codes(doc: Any, code: int) -> None:
    assert code_of(doc)[0] == code


def test_channel_names_at_the_limit() -> None:
    name = "é" * 127 + "x"  # 255 bytes
    assert parse({"type": "subscribe", "channel": name}).channel == name
    for ok in (">", "*", "a.b", "a..b", "日本"):
        assert parse({"type": "unsubscribe", "channel": ok}).channel == ok


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        ["type", "id", "channel", "data", "from", "limit", "after", "x"]
                    ),
                    inner,
                    max_size=6,
                )
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v)),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["publish", "subscribe", "unsubscribe", "history", "ping"])},
            optional={
                "id": st.integers() | st.text(max_size=5) | st.none(),
                "channel": st.text(max_size=20),
                "data": st.integers() | st.text(max_size=30),
                "from": st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8)),
                "limit": st.integers(),
                "name": st.text(max_size=10),
                "message_id": st.text(max_size=10),
            },
        ).map(json.dumps),
    )
)
def test_fuzz_parser_only_raises_typed_errors(text: str) -> None:
    try:
        parse_frame(text, MAX, 1000)
    except EdgeError as exc:
        assert exc.code in set(ErrorCode)


def test_message_frame_embeds_data_and_is_valid_json() -> None:
    msg = StoredMessage(
        channel="日本",
        origin="eu",
        seq=42,
        last_seq=41,
        id="m-1",
        name=None,
        data=b'{"t":"\\u00e9"}',
        client_id="alice",
        timestamp_ms=1764400000123,
        dedup_key="k:m-1",
    )
    raw = replies.message_frame(msg, "CUR")
    assert raw[0] == 0x81 and raw[1] == 126  # extended length for payloads >= 126 bytes
    doc = json.loads(raw[4:])
    assert doc == {
        "type": "message",
        "channel": "日本",
        "id": "m-1",
        "name": None,
        "data": {"t": "é"},
        "client_id": "alice",
        "region": "eu",
        "serial": "eu:42",
        "cursor": "CUR",
        "timestamp": 1764400000123,
    }
    page = replies.history_page(4, "日本", [(msg, "C1"), (msg, "C2")], "C2")
    body = json.loads(page[4:])
    assert body["type"] == "history_page" and body["id"] == 4 and body["cursor"] == "C2"
    assert [m["cursor"] for m in body["messages"]] == ["C1", "C2"]


# -- length limits of `id`, `name`, `message_id` at their boundaries ---------------


def utf8_text(n: int) -> str:
    """A string of exactly `n` UTF-8 bytes, mostly two-byte characters (bytes, not
    characters, are counted)."""
    return "é" * (n // 2) + "x" * (n % 2)


@pytest.mark.parametrize(("field", "default"), [("name", 200), ("message_id", 128), ("id", 128)])
@pytest.mark.parametrize(
    "limits", [Limits(), Limits(max_name_bytes=7, max_message_id_bytes=5, max_request_id_bytes=3)]
)
def test_text_field_lengths_at_the_boundary(field: str, default: int, limits: Limits) -> None:
    top = {
        "name": limits.max_name_bytes,
        "message_id": limits.max_message_id_bytes,
        "id": limits.max_request_id_bytes,
    }[field]
    if limits == Limits():
        assert top == default
    frame = {"type": "publish", "channel": "c", "data": 1}
    at = parse_frame(json.dumps({**frame, field: utf8_text(top)}), MAX, 1000, limits)
    assert isinstance(at, Publish)
    assert len(str(getattr(at, "id" if field == "id" else field)).encode()) == top
    with pytest.raises(FrameError) as info:
        parse_frame(json.dumps({**frame, field: utf8_text(top + 1)}), MAX, 1000, limits)
    assert info.value.code == ErrorCode.BAD_REQUEST
    # a publish's bad name or message_id is a nack carrying the request id; an id
    # too long cannot be repeated, so the error carries none
    assert info.value.publish == (field != "id")
    if field != "id":
        with pytest.raises(FrameError) as info:
            parse_frame(
                json.dumps({**frame, "id": 9, field: utf8_text(top + 1)}), MAX, 1000, limits
            )
        assert info.value.request_id == 9


def test_text_field_limits_apply_to_rest_bodies() -> None:
    limits = Limits(max_name_bytes=4, max_message_id_bytes=4)
    doc = {"data": 1, "name": "abcd", "message_id": "wxyz"}
    assert check_publish_fields(doc, MAX, limits=limits) == (b"1", "abcd", "wxyz")
    for field in ("name", "message_id"):
        with pytest.raises(FrameError) as info:
            check_publish_fields({**doc, field: "abcde"}, MAX, limits=limits)
        assert info.value.code == ErrorCode.BAD_REQUEST
