"""Cursors and `from` parsing (pure, with hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.cursor import (
    Cursor,
    FromCursor,
    Live,
    Rewind,
    decode_cursor,
    encode_cursor,
    parse_start,
)
from mesh.errors import CursorError

REGIONS = ("eu", "us", "ap", "sa-east-1")
positions = st.dictionaries(
    st.sampled_from(REGIONS), st.integers(min_value=0, max_value=(1 << 64) - 1), max_size=4
)


@given(positions, st.text(min_size=1, max_size=20))
def test_round_trip(pos: dict[str, int], channel: str) -> None:
    c = Cursor(pos)
    text = encode_cursor(channel, c)
    assert text.isascii() and all(ch.isalnum() or ch in "-_" for ch in text)
    assert decode_cursor(channel, text, REGIONS) == c


@given(positions, st.data())
def test_any_single_character_change_is_detected(pos: dict[str, int], data: st.DataObject) -> None:
    text = encode_cursor("chat", Cursor(pos))
    i = data.draw(st.integers(0, len(text) - 1))
    ch = data.draw(st.sampled_from("0123456789abcdefABCDEF-_xyz"))
    forged = text[:i] + ch + text[i + 1 :]
    if forged != text:
        with pytest.raises(CursorError):
            decode_cursor("chat", forged, REGIONS)


@given(st.text(max_size=60))
def test_garbage_never_crashes(text: str) -> None:
    try:
        decode_cursor("chat", text, REGIONS)
    except CursorError as exc:
        assert exc.code == 40000


def test_cursor_of_another_channel_is_refused() -> None:
    text = encode_cursor("a", Cursor({"eu": 5}))
    with pytest.raises(CursorError, match="another channel"):
        decode_cursor("b", text, REGIONS)


def test_unknown_region_is_refused() -> None:
    text = encode_cursor("a", Cursor({"eu": 5, "mars": 1}))
    with pytest.raises(CursorError, match="unknown region 'mars'"):
        decode_cursor("a", text, ("eu", "us"))


def test_cursor_is_compact() -> None:
    text = encode_cursor("chat:lobby", Cursor({"eu": 123456, "us": 99, "ap": 1}))
    assert len(text) < 40


def test_zero_positions_vanish_and_vector_ops() -> None:
    assert Cursor({"eu": 0}) == Cursor()
    c = Cursor({"eu": 3}).advanced("us", 2).advanced("eu", 1)
    assert c == Cursor({"eu": 3, "us": 2})
    assert c.merged(Cursor({"eu": 1, "ap": 4})) == Cursor({"eu": 3, "us": 2, "ap": 4})
    assert c.covers(Cursor({"eu": 3})) and not c.covers(Cursor({"ap": 1}))


def test_parse_start() -> None:
    assert parse_start(None, 10) == Live()
    assert parse_start({"cursor": "1abc"}, 10) == FromCursor("1abc")
    assert parse_start({"rewind": 10}, 10) == Rewind(10)
    assert parse_start({"rewind": 0}, 10) == Rewind(0)


@pytest.mark.parametrize(
    "bad",
    [
        {"rewind": -1},
        {"rewind": 11},
        {"rewind": True},
        {"rewind": 1.5},
        {"cursor": ""},
        {"cursor": 5},
        {},
        {"cursor": "x", "rewind": 1},
        [],
        "cursor",
    ],
)
def test_parse_start_refuses_with_40000(bad: object) -> None:
    with pytest.raises(CursorError) as exc:
        parse_start(bad, 10)
    assert exc.value.code == 40000
