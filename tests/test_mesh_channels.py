"""Channel names and subject tokens (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.channels import MAX_CHANNEL_BYTES, channel_token, token_channel, validate_channel
from mesh.errors import ChannelError
from mesh.subjects import live_wildcard, split_stored_subject, stored_subject

# Legal channel names: any text without whitespace/control characters, 1-255 bytes.
names = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters="\x85\xa0"
    ),
    min_size=1,
    max_size=80,
).filter(lambda s: 0 < len(s.encode()) <= MAX_CHANNEL_BYTES and not any(c.isspace() for c in s))


@pytest.mark.parametrize("name", [">", "*", "a.b", "a..b", "日本", "chat:lobby", "~7E", "x" * 255])
def test_token_is_wildcard_free_and_reversible(name: str) -> None:
    token = channel_token(name)
    assert token and "." not in token and "*" not in token and ">" not in token
    assert not any(c.isspace() for c in token)
    assert token.isascii()
    assert token_channel(token) == name
    assert split_stored_subject(stored_subject("eu", token)) == ("eu", token)


def test_readable_names_stay_readable() -> None:
    assert channel_token("chat:lobby-1_x") == "chat:lobby-1_x"
    assert channel_token("a.b") == "a~2Eb"
    assert live_wildcard(channel_token(">")) == "em.live.*.~3E"


@given(names, names)
def test_encoding_is_injective(a: str, b: str) -> None:
    assert (channel_token(a) == channel_token(b)) == (a == b)
    assert token_channel(channel_token(a)) == a


@pytest.mark.parametrize(
    "bad", ["", "a b", "tab\there", "nl\n", "\x00", "x" * 256, "é" * 128, "\u2028", "\ud800"]
)
def test_invalid_names_are_refused_with_40001(bad: str) -> None:
    with pytest.raises(ChannelError) as exc:
        channel_token(bad)
    assert exc.value.code == 40001


def test_name_length_boundary_is_255_bytes() -> None:
    validate_channel("é" * 127 + "x")  # 255 bytes
    with pytest.raises(ChannelError):
        validate_channel("é" * 128)  # 256 bytes
    assert len(channel_token("x" * 255)) == 255


@pytest.mark.parametrize("bad", ["", "a.b", "~2e", "~41", "~", "~G0", "~FF", "a b", "é"])
def test_token_channel_refuses_non_canonical_tokens(bad: str) -> None:
    with pytest.raises(ChannelError):
        token_channel(bad)


def test_non_string_is_refused() -> None:
    with pytest.raises(ChannelError):
        validate_channel(42)
