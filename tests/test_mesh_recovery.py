"""The channel ledger, replay merge and completeness rule (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from mesh.message import StoredMessage, parse_timestamp_ms
from mesh.recovery import (
    ChannelLedger,
    Verdict,
    dedup_keys,
    drop_duplicates,
    lookbehind_start,
    merge_by_time,
    run_is_complete,
)
from mesh.settings import MeshSettings


def msg(
    origin: str, seq: int, last: int | None, ts: int = 0, key: str | None = None
) -> StoredMessage:
    return StoredMessage("c", origin, seq, last, f"{origin}{seq}", None, b"1", None, ts, key)


def test_chain_gap_and_old() -> None:
    led = ChannelLedger({"eu": 5, "us": None}, 120_000, 100)
    assert led.classify(msg("eu", 7, 5)) is Verdict.DELIVER
    assert led.classify(msg("eu", 9, 7)) is Verdict.GAP
    assert led.gap(msg("eu", 9, 7)).after == 5 and led.gap(msg("eu", 9, 7)).upto == 7
    assert led.classify(msg("eu", 5, 3)) is Verdict.OLD
    # A deleted message shortens the chain: last_seq below delivered is no gap.
    assert led.classify(msg("eu", 9, 4)) is Verdict.DELIVER
    # Unknown baseline: the first message is accepted as is.
    assert led.classify(msg("us", 50, 49)) is Verdict.DELIVER
    assert led.accept(msg("us", 50, 49)) and not led.accept(msg("us", 50, 49))
    assert led.positions() == {"eu": 5, "us": 50}


def test_duplicate_key_across_origins_within_window() -> None:
    led = ChannelLedger({"eu": 0, "us": 0}, 1000, 100)
    assert led.accept(msg("eu", 1, 0, ts=10_000, key="k:1"))
    assert not led.accept(msg("us", 1, 0, ts=10_900, key="k:1"))  # retried elsewhere
    assert led.positions() == {"eu": 1, "us": 1}  # still advanced past it
    assert led.accept(msg("us", 2, 1, ts=20_000, key="k:1"))  # outside the window


def test_seeded_keys_are_duplicates_within_the_window() -> None:
    led = ChannelLedger({"eu": 3, "us": 0}, 1000, 100)
    led.seed({"k:1": 10_000, "k:2": 5_000})
    assert not led.accept(msg("us", 1, 0, ts=10_900, key="k:1"))  # retry of a stored one
    assert led.accept(msg("us", 2, 1, ts=10_950, key="k:2"))  # stored too long before
    assert led.duplicates == 1 and led.positions() == {"eu": 3, "us": 2}


def test_drop_duplicates_of_what_the_reader_had_before() -> None:
    a, b = msg("us", 1, 0, ts=10_500, key="k:1"), msg("us", 2, 1, ts=10_600, key="k:2")
    assert drop_duplicates([a, b], 1000, {"k:1": 10_000}) == [b]
    assert drop_duplicates([a, b], 100, {"k:1": 10_000}) == [a, b]  # outside the window


def test_look_behind_keys_and_start() -> None:
    ms = [msg("eu", 1, 0, ts=5, key="k"), msg("us", 1, 0, ts=9, key="k"), msg("eu", 2, 1, ts=3)]
    assert dedup_keys(ms) == {"k": 9}
    assert lookbehind_start(ms, 100) == 5 - 100  # the earliest keyed message
    assert lookbehind_start([msg("eu", 2, 1, ts=3)], 100) is None  # nothing to dedup


def test_dedup_memory_is_bounded() -> None:
    led = ChannelLedger({"eu": 0}, 10**9, 3)
    for i in range(1, 10):
        led.accept(msg("eu", i, i - 1, ts=i, key=f"k{i}"))
    assert len(led._seen) == 3


@given(st.lists(st.lists(st.integers(0, 50), max_size=8), max_size=4))
def test_merge_keeps_each_origin_in_order_and_everything(runs: list[list[int]]) -> None:
    per_origin = [
        [msg(f"r{i}", seq + 1, seq, ts=t) for seq, t in enumerate(sorted(times))]
        for i, times in enumerate(runs)
    ]
    merged = merge_by_time(per_origin)
    assert sorted((m.origin, m.seq) for m in merged) == sorted(
        (m.origin, m.seq) for run in per_origin for m in run
    )
    for i in range(len(runs)):
        seqs = [m.seq for m in merged if m.origin == f"r{i}"]
        assert seqs == sorted(seqs)
    ts = [m.timestamp_ms for m in merged]
    assert ts == sorted(ts)


def test_drop_duplicates_keeps_first_copy() -> None:
    a, b = msg("eu", 1, 0, ts=1, key="k"), msg("us", 1, 0, ts=2, key="k")
    assert drop_duplicates([a, b, msg("us", 2, 1, ts=3)], 10) == [a, msg("us", 2, 1, ts=3)]


def test_run_is_complete() -> None:
    assert run_is_complete(5, [], 5, anchored=False)  # nothing after the cursor
    assert not run_is_complete(5, [], 8, anchored=True)
    assert run_is_complete(5, [msg("eu", 7, None), msg("eu", 8, None)], 8, anchored=True)
    assert not run_is_complete(5, [msg("eu", 7, None), msg("eu", 8, None)], 8, anchored=False)
    assert not run_is_complete(5, [msg("eu", 7, None)], 8, anchored=True)  # copy behind


def test_timestamp_parse() -> None:
    assert parse_timestamp_ms("1970-01-01T00:00:01.5Z") == 1500
    want = datetime(2026, 11, 29, 11, 52, 43, 819000, tzinfo=UTC).timestamp() * 1000
    assert parse_timestamp_ms("2026-11-29T11:52:43.819897152Z") == round(want)


def test_settings_validate() -> None:
    MeshSettings()
    for bad in (
        {"max_age_s": 0.0},
        {"replay_batch": 0},
        {"dedup_lookbehind": 0},
        {"replicas": 6},
        {"duplicate_window_s": 200.0, "max_age_s": 100.0},
    ):
        try:
            MeshSettings(**bad)  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")
    assert MeshSettings().replicas_for(1) == 1 and MeshSettings().replicas_for(5) == 3
    assert MeshSettings(dedup_lookbehind=1).dedup_lookbehind == 1


def test_settings_from_env() -> None:
    s = MeshSettings.from_env(
        {
            "EDGEMESH_MESH_MAX_MSGS_PER_CHANNEL": "50",
            "EDGEMESH_MESH_MAX_AGE_S": "600",
            "EDGEMESH_MESH_SWEEP_DELAYS_S": "0.1,1",
            "EDGEMESH_MESH_REPLICAS": "auto",
            "OTHER": "x",
        }
    )
    assert (s.max_msgs_per_channel, s.max_age_s, s.sweep_delays_s) == (50, 600.0, (0.1, 1.0))
    assert s.replicas is None and s.cross_region_dedup
    for text, flag in (("0", False), ("off", False), ("False", False), ("1", True), ("yes", True)):
        env = {"EDGEMESH_MESH_CROSS_REGION_DEDUP": text}
        assert MeshSettings.from_env(env).cross_region_dedup is flag
    for bad in (
        {"EDGEMESH_MESH_MAX_REWIND": "x"},
        {"EDGEMESH_MESH_MAX_REWIND": "0"},
        {"EDGEMESH_MESH_CROSS_REGION_DEDUP": "maybe"},
        {"EDGEMESH_MESH_REGION_CHECK_TIMEOUT_S": "0"},
    ):
        try:
            MeshSettings.from_env(bad)
        except ValueError as exc:
            assert "EDGEMESH_MESH" in str(exc)
            continue
        raise AssertionError(f"accepted {bad}")


@given(
    st.lists(st.tuples(st.sampled_from(["eu", "ap"]), st.booleans()), max_size=60),
    st.sets(st.integers(0, 59)),
)
def test_live_drops_repaired_by_the_chain_deliver_everything_once(
    plan: list[tuple[str, bool]], dropped: set[int]
) -> None:
    """Messages of two origins (interleaved with other channels' seqs) arrive live with
    some dropped; gaps revealed by the chain are repaired from the store, as the hub does.
    Everything but a dropped tail is delivered once, in each origin's order."""
    store: dict[str, list[StoredMessage]] = {"eu": [], "ap": []}
    seqs = {"eu": 0, "ap": 0}
    live = []
    for i, (origin, other_channel_first) in enumerate(plan):
        seqs[origin] += 2 if other_channel_first else 1  # other channels share the stream
        prev = store[origin][-1].seq if store[origin] else 0
        m = msg(origin, seqs[origin], prev, ts=i)
        store[origin].append(m)
        if i not in dropped:
            live.append(m)
    led = ChannelLedger({"eu": 0, "ap": 0}, 1000, 100)
    out: list[StoredMessage] = []
    for m in live:
        verdict = led.classify(m)
        if verdict is Verdict.OLD:
            continue
        if verdict is Verdict.GAP:
            gap = led.gap(m)
            for r in store[gap.origin]:
                if gap.after < r.seq <= gap.upto and led.accept(r):
                    out.append(r)
        if led.accept(m):
            out.append(m)
    for origin, stored in store.items():
        got = [m.seq for m in out if m.origin == origin]
        last_live = max((m.seq for m in live if m.origin == origin), default=0)
        assert got == [m.seq for m in stored if m.seq <= last_live]
