"""The failover policy, pure: majority, isolation, hysteresis, hold-down, last region, drain."""

from __future__ import annotations

from dataclasses import replace

from control_plane.classify import Streaks
from control_plane.observation import ObserverReport, RegionReport, Status
from control_plane.policy import FailoverPolicy
from control_plane.settings import PolicySettings
from mesh.control import RegionState

REGIONS = ("eu", "us", "ap")
S = PolicySettings()  # down after 3, up after 6, ttl 5 s, 2 observers, 4 changes / 60 s
H, DG, D, DR = (
    RegionState.HEALTHY,
    RegionState.DEGRADED,
    RegionState.DOWN,
    RegionState.DRAINING,
)


class Sim:
    """Observers probing rounds one second apart; `bad[observer]` = regions it finds failing."""

    def __init__(self, settings: PolicySettings = S, regions: tuple[str, ...] = REGIONS) -> None:
        self.regions = regions
        self.now = 1_000_000
        self.policy = FailoverPolicy(regions, regions, settings, self.now)
        self.streaks = {o: Streaks() for o in regions}
        self.reports: dict[str, ObserverReport] = {}
        self.round = 0
        self.events: list = []

    def step(
        self,
        bad: dict[str, set[str]] | None = None,
        silent: set[str] = frozenset(),  # type: ignore[assignment]
        degraded: dict[str, set[str]] | None = None,
        drained: frozenset[str] = frozenset(),
    ) -> dict[str, RegionState]:
        self.now += 1000
        self.round += 1
        for o in self.regions:
            if o in silent:
                continue
            regions = {}
            for r in self.regions:
                status = Status.OK
                if r in (degraded or {}).get(o, set()):
                    status = Status.DEGRADED
                if r in (bad or {}).get(o, set()):
                    status = Status.FAILING
                fail, ok = self.streaks[o].record(r, status)
                regions[r] = RegionReport(status, fail, ok)
            self.reports[o] = ObserverReport(o, self.now, self.round, regions)
        self.events += self.policy.evaluate(self.now, self.reports, drained)
        return self.policy.states()

    def run(self, n: int, **kw: object) -> list[dict[str, RegionState]]:
        return [self.step(**kw) for _ in range(n)]  # type: ignore[arg-type]


def everyone_sees(region: str) -> dict[str, set[str]]:
    return {o: {region} for o in REGIONS}


def test_region_goes_down_after_three_failed_rounds_seen_by_two_observers() -> None:
    sim = Sim()
    history = sim.run(3, bad=everyone_sees("eu"))
    assert [h["eu"] for h in history] == [DG, DG, D]
    assert history[-1]["us"] == H and history[-1]["ap"] == H
    (change,) = [e for e in sim.events if e.state is D]
    assert change.kind == "state_change" and change.region == "eu" and change.required == 2
    said = {v.observer: (v.says, v.counted, v.ignored) for v in change.votes}
    assert said == {
        "us": ("down", True, None),
        "ap": ("down", True, None),
        "eu": ("down", False, "own region"),
    }


def test_one_observer_alone_never_takes_a_region_down() -> None:
    sim = Sim()
    history = sim.run(20, bad={"ap": {"eu"}})
    assert all(h["eu"] is H for h in history)
    votes = {v.observer: v for v in sim.policy.verdict("eu").votes}
    assert votes["ap"].says == "down" and votes["ap"].counted
    assert sim.policy.verdict("eu").required == 2


def test_the_region_itself_cannot_vote_with_one_other_observer() -> None:
    sim = Sim()
    assert all(h["eu"] is H for h in sim.run(10, bad={"ap": {"eu"}, "eu": {"eu"}}))


def test_a_silent_observer_expires_and_cannot_make_up_a_quorum() -> None:
    sim = Sim()
    sim.run(2, bad=everyone_sees("eu"))
    # ap's reports stop (its instance died); its last report said eu failing twice.
    history = sim.run(10, bad=everyone_sees("eu"), silent={"ap"})
    assert all(h["eu"] is not D for h in history)
    ap_vote = next(v for v in sim.policy.verdict("eu").votes if v.observer == "ap")
    assert ap_vote.ignored == "stale"


def test_an_isolated_observer_is_ignored() -> None:
    sim = Sim()
    # ap loses its own connectivity: it finds every region failing, including its own.
    history = sim.run(10, bad={"ap": set(REGIONS)})
    assert all(h == {"eu": H, "us": H, "ap": H} for h in history)
    assert sim.policy.isolated(sim.reports, sim.now) == {"ap"}
    # ...and an isolated observer does not even count toward "degraded".
    assert all(
        v.ignored in ("isolated", "own region")
        for v in sim.policy.verdict("eu").votes
        if v.observer == "ap"
    )


def test_hysteresis_back_only_after_six_good_rounds() -> None:
    sim = Sim()
    sim.run(3, bad=everyone_sees("eu"))
    assert sim.policy.states()["eu"] is D
    history = sim.run(6)
    assert [h["eu"] for h in history] == [D, D, D, D, D, H]
    up = sim.events[-1]
    assert up.state is H and up.previous is D
    assert all(v.ok_streak >= 6 for v in up.votes if v.counted)


def test_failures_that_do_not_last_three_rounds_never_take_a_region_down() -> None:
    sim = Sim()
    for _ in range(10):
        sim.run(2, bad=everyone_sees("eu"))
        sim.run(1)
    assert sim.policy.states()["eu"] is not D


def test_hold_down_bounds_changes_of_a_flapping_region() -> None:
    settings = replace(S, down_after=1, up_after=1, hold_down_max_changes=4)
    sim = Sim(settings)
    for _ in range(20):  # 40 s of flapping: down one second, up the next
        sim.step(bad=everyone_sees("eu"))
        sim.step()
    changes = [e for e in sim.events if e.kind == "state_change" and e.region == "eu"]
    assert len(changes) <= 4 + 2
    assert sim.policy.states()["eu"] is D  # held out, not back in rotation
    assert any(e.kind == "held_down" for e in sim.events)
    # The window passes with the region healthy: it returns.
    sim.run(61)
    assert sim.policy.states()["eu"] is H


def test_without_hold_down_the_same_flapping_would_change_every_round() -> None:
    settings = replace(S, down_after=1, up_after=1, hold_down_max_changes=1000)
    sim = Sim(settings)
    for _ in range(20):
        sim.step(bad=everyone_sees("eu"))
        sim.step()
    assert len([e for e in sim.events if e.region == "eu" and e.kind == "state_change"]) >= 40


def test_the_last_serving_region_is_never_ejected() -> None:
    sim = Sim()
    two_drained = frozenset({"us", "ap"})
    assert sim.step(drained=two_drained) == {"eu": H, "us": DR, "ap": DR}
    # eu now fails, as us and ap both see: it is the last serving region, so it stays.
    history = sim.run(10, bad={"us": {"eu"}, "ap": {"eu"}}, drained=two_drained)
    assert all(h["eu"].serves_clients for h in history)
    kept = [e for e in sim.events if e.kind == "kept_last_region"]
    assert len(kept) == 1 and kept[0].region == "eu" and kept[0].state is D


def test_two_of_three_regions_failing_looks_like_isolation_and_changes_nothing() -> None:
    # The price of the isolation rule: with three regions, an observer that sees the two
    # others failing cannot tell that from being cut off itself.
    sim = Sim()
    assert sim.run(10, bad={o: {"eu", "us"} for o in REGIONS})[-1] == {"eu": H, "us": H, "ap": H}


def test_last_region_rule_with_two_regions_and_simultaneous_failure() -> None:
    regions = ("eu", "us")
    sim = Sim(replace(S, min_observers=1), regions)
    sim.run(5, bad={"eu": {"us"}, "us": {"eu"}})
    states = sim.policy.states()
    assert sum(s.serves_clients for s in states.values()) == 1
    assert any(e.kind == "kept_last_region" for e in sim.events)


def test_drain_and_restore_bypass_votes_and_hold_down() -> None:
    sim = Sim()
    assert sim.step(drained=frozenset({"eu"}))["eu"] is DR
    assert sim.run(3, drained=frozenset({"eu"}))[-1]["eu"] is DR
    assert sim.step()["eu"] is H  # restore: healthy at once (no down votes)
    change = sim.events[-1]
    assert change.previous is DR and change.state is H and "restored" in change.reason


def test_restore_of_a_failing_region_goes_straight_to_down() -> None:
    sim = Sim()
    sim.run(4, bad=everyone_sees("eu"), drained=frozenset({"eu"}))
    assert sim.step(bad=everyone_sees("eu"))["eu"] is D


def test_draining_every_region_leaves_one_serving() -> None:
    sim = Sim()
    states = sim.step(drained=frozenset(REGIONS))
    assert [r for r, s in states.items() if s.serves_clients] == ["eu"]  # topology order
    assert [e.kind for e in sim.events].count("kept_last_region") == 1


def test_degraded_needs_the_same_quorum_and_still_serves() -> None:
    sim = Sim()
    assert sim.step(degraded={"us": {"eu"}})["eu"] is H
    assert sim.step(degraded={"us": {"eu"}, "ap": {"eu"}})["eu"] is DG
    assert sim.step()["eu"] is H


def test_five_regions_majority_of_four_outside() -> None:
    regions = ("eu", "us", "ap", "sa", "af")
    sim = Sim(S, regions)
    assert sim.run(5, bad={"us": {"eu"}, "ap": {"eu"}})[-1]["eu"] is H  # 2 of 4: no majority
    assert sim.run(3, bad={"us": {"eu"}, "ap": {"eu"}, "sa": {"eu"}})[-1]["eu"] is D
