"""History page building and mirror staleness (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from control_plane.settings import ProbeSettings
from mesh.cursor import Cursor, decode_cursor
from mesh.history import build_page, mirror_status
from mesh.message import StoredMessage
from mesh.settings import MeshSettings

REGIONS = ("eu", "us", "ap")


def msg(origin: str, seq: int, ts: int, key: str | None = None) -> StoredMessage:
    return StoredMessage("c", origin, seq, None, f"{origin}{seq}", None, b"1", None, ts, key)


def runs_after(
    stored: dict[str, list[StoredMessage]], after: Cursor, limit: int
) -> list[list[StoredMessage]]:
    """What the per-origin batch reads return: the first `limit` after the cursor."""
    return [[m for m in ms if m.seq > after.get(o)][:limit] for o, ms in stored.items()]


@given(
    st.dictionaries(st.sampled_from(REGIONS), st.lists(st.integers(0, 1000), max_size=30)),
    st.integers(1, 7),
)
def test_paging_yields_every_message_once_in_time_order(
    times: dict[str, list[int]], limit: int
) -> None:
    stored = {
        o: [msg(o, 2 * i + 1, t) for i, t in enumerate(sorted(ts))] for o, ts in times.items()
    }
    after, seen, pages = Cursor(), [], 0
    while True:
        page = build_page("c", after, runs_after(stored, after, limit), limit, 0)
        if not page.entries:
            break
        pages += 1
        ts = [e.message.timestamp_ms for e in page.entries]
        assert ts == sorted(ts) and len(page.entries) <= limit
        seen += [(e.message.origin, e.message.seq) for e in page.entries]
        after = decode_cursor("c", page.cursor, REGIONS)
        assert decode_cursor("c", page.entries[-1].cursor, REGIONS) == after
    want = sorted((m.origin, m.seq) for ms in stored.values() for m in ms)
    assert sorted(seen) == want and len(seen) == len(set(seen))
    assert pages == -(-len(want) // limit)


def test_a_retry_in_another_region_appears_once_but_moves_the_cursor() -> None:
    stored = {"eu": [msg("eu", 5, 1000, "k:1")], "us": [msg("us", 9, 1500, "k:1")]}
    page = build_page("c", Cursor(), runs_after(stored, Cursor(), 10), 10, 120_000)
    assert [e.message.serial for e in page.entries] == ["eu:5"]
    assert decode_cursor("c", page.cursor, REGIONS) == Cursor({"eu": 5, "us": 9})
    outside = build_page("c", Cursor(), runs_after(stored, Cursor(), 10), 10, 100)
    assert len(outside.entries) == 2


def test_mirror_staleness() -> None:
    assert not mirror_status("eu", "EM_eu_IN_us", 700_000_000, 0, 5, 5.0).stale
    s = mirror_status("eu", "EM_eu_IN_us", 12_000_000_000, 0, 5, 5.0)
    assert s.stale and s.active_s == 12.0
    assert mirror_status("eu", "x", None, 0, 0, 5.0).stale


def test_a_retry_of_a_message_on_an_earlier_page_is_left_out() -> None:
    stored = {"us": [msg("us", 9, 1500, "k:1"), msg("us", 10, 1600, "k:2")]}
    before = {"k:1": 1000}  # eu:5 with the same id was on the previous page
    page = build_page("c", Cursor({"eu": 5}), runs_after(stored, Cursor(), 1), 1, 120_000, before)
    assert page.entries == []  # History.page then reads on from the cursor to fill the page
    assert decode_cursor("c", page.cursor, REGIONS) == Cursor({"eu": 5, "us": 9})


def test_the_edge_reports_a_stale_mirror_before_the_control_plane_acts_on_it() -> None:
    """docs/mesh.md: two settings on purpose; the edge's report comes first."""
    assert MeshSettings().mirror_stale_after_s < ProbeSettings().mirror_stale_s
