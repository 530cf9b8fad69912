"""The failover policy: region states from the reports of all observers. Pure (time is passed in).

Every instance runs this same policy over the same reports, so they agree up to the
delay of the report exchange. Rules, in order:

1. **Fresh reports only.** A report older than `observation_ttl_s` is ignored: its
   observer is gone or cut off.
2. **Isolation.** An observer whose latest round finds most regions failing (more than
   half, its own included) is treated as isolated and ignored: it is far more likely that
   it lost its own view than that most of the world is down.
3. **Votes.** An observer votes a region *down* after `down_after` failed rounds in a
   row and *up* after `up_after` good rounds in a row (hysteresis); in between it does
   not vote. An observer never votes on its own region.
4. **Quorum.** A region changes between serving and `down` only when a majority of
   the eligible (fresh, not isolated) observers outside it agree, and never on fewer
   than `min_observers` of them where the topology has that many outside it. Without a
   quorum either way, the region keeps its state. `degraded` (still serving) needs the
   same quorum of observers reporting it not ok.
5. **Drain.** A manually drained region is `draining`, whatever the votes.
6. **Hold-down.** After `hold_down_max_changes` automatic changes of a region within
   `hold_down_window_s`, the region may still get worse (healthy -> degraded -> down)
   but not better until the window has room: a flapping region is kept out, and its
   changes per window are bounded by max + 2.
7. **Last region.** A change that would leave no region serving clients is refused:
   the last serving region is never ejected (not by votes, not by a drain).

Every change, refusal and hold-down is an `Event` carrying its evidence: each
observer's status, streaks, report age, and whether (and why not) it was counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from control_plane.observation import ObserverReport, Status
from control_plane.settings import PolicySettings
from mesh.control import RegionState

_RANK = {RegionState.HEALTHY: 0, RegionState.DEGRADED: 1, RegionState.DOWN: 2}


@dataclass(frozen=True)
class Vote:
    """What one observer said about one region, and whether it counted."""

    observer: str
    says: str  # "down", "up" or "undecided"
    status: Status | None = None
    fail_streak: int = 0
    ok_streak: int = 0
    age_ms: int | None = None
    ignored: str | None = None  # "own region", "stale", "isolated", "no report"

    @property
    def counted(self) -> bool:
        return self.ignored is None

    def to_dict(self) -> dict[str, object]:
        return {
            "observer": self.observer,
            "says": self.says,
            "status": self.status.value if self.status else None,
            "fail_streak": self.fail_streak,
            "ok_streak": self.ok_streak,
            "age_ms": self.age_ms,
            "counted": self.counted,
            "ignored": self.ignored,
        }


@dataclass(frozen=True)
class Event:
    """A state change (kind "state_change"), or one the policy refused ("held_down",
    "kept_last_region"), with the votes behind it."""

    kind: str
    region: str
    at_ms: int
    previous: RegionState
    state: RegionState
    reason: str
    required: int
    votes: tuple[Vote, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "region": self.region,
            "at_ms": self.at_ms,
            "previous": self.previous.value,
            "state": self.state.value,
            "reason": self.reason,
            "required": self.required,
            "votes": [v.to_dict() for v in self.votes],
        }


@dataclass(frozen=True)
class Verdict:
    """A region's current state and the evidence of the latest evaluation."""

    state: RegionState
    since_ms: int
    required: int = 0
    votes: tuple[Vote, ...] = ()


@dataclass
class _Track:
    state: RegionState
    since_ms: int
    changes_ms: list[int] = field(default_factory=list)
    held: bool = False
    kept: bool = False


@dataclass(frozen=True)
class _Proposal:
    region: str
    target: RegionState
    reason: str
    manual: bool
    required: int
    votes: tuple[Vote, ...]


class FailoverPolicy:
    """Region states of one instance, advanced by `evaluate()`."""

    def __init__(
        self,
        regions: tuple[str, ...],
        observers: tuple[str, ...],
        settings: PolicySettings,
        now_ms: int,
    ) -> None:
        self.regions = regions
        self.observers = observers
        self.settings = settings
        self._tracks = {r: _Track(RegionState.HEALTHY, now_ms) for r in regions}
        self._verdicts = {r: Verdict(RegionState.HEALTHY, now_ms) for r in regions}

    # -- queries ---------------------------------------------------------------

    def verdict(self, region: str) -> Verdict:
        return self._verdicts[region]

    def states(self) -> dict[str, RegionState]:
        return {r: t.state for r, t in self._tracks.items()}

    def serving(self) -> list[str]:
        return [r for r, t in self._tracks.items() if t.state.serves_clients]

    def isolated(self, reports: Mapping[str, ObserverReport], now_ms: int) -> frozenset[str]:
        """Observers whose fresh report finds more than half of all regions failing."""
        out = set()
        for name, rep in self._fresh(reports, now_ms).items():
            failing = sum(1 for r in rep.regions.values() if r.status is Status.FAILING)
            if failing * 2 > len(self.regions):
                out.add(name)
        return frozenset(out)

    # -- evaluation ------------------------------------------------------------

    def _fresh(
        self, reports: Mapping[str, ObserverReport], now_ms: int
    ) -> dict[str, ObserverReport]:
        ttl_ms = self.settings.observation_ttl_s * 1000
        return {
            o: rep
            for o, rep in reports.items()
            if o in self.observers and now_ms - rep.ts_ms <= ttl_ms
        }

    def _votes(
        self,
        region: str,
        reports: Mapping[str, ObserverReport],
        fresh: Mapping[str, ObserverReport],
        isolated: frozenset[str],
        now_ms: int,
    ) -> tuple[Vote, ...]:
        s = self.settings
        votes = []
        for o in self.observers:
            rep = reports.get(o)
            rr = rep.regions.get(region) if rep is not None else None
            if rep is None or rr is None:
                votes.append(Vote(o, "undecided", ignored="no report"))
                continue
            if rr.fail_streak >= s.down_after:
                says = "down"
            elif rr.ok_streak >= s.up_after:
                says = "up"
            else:
                says = "undecided"
            ignored = None
            if o == region:
                ignored = "own region"
            elif o not in fresh:
                ignored = "stale"
            elif o in isolated:
                ignored = "isolated"
            votes.append(
                Vote(o, says, rr.status, rr.fail_streak, rr.ok_streak, now_ms - rep.ts_ms, ignored)
            )
        return tuple(votes)

    def _required(self, region: str, eligible: int) -> int:
        outside = sum(1 for o in self.observers if o != region)
        return max(min(self.settings.min_observers, outside), eligible // 2 + 1)

    def _propose(self, region: str, votes: tuple[Vote, ...], drained: frozenset[str]) -> _Proposal:
        current = self._tracks[region].state
        counted = [v for v in votes if v.counted]
        required = self._required(region, len(counted))
        down = sum(1 for v in counted if v.says == "down")
        up = sum(1 for v in counted if v.says == "up")
        not_ok = sum(1 for v in counted if v.status is not Status.OK)
        serving_state = RegionState.DEGRADED if not_ok >= required else RegionState.HEALTHY
        tally = f"{down} down, {up} up, {not_ok} not ok of {len(counted)} counted; need {required}"
        if region in drained:
            return _Proposal(
                region, RegionState.DRAINING, "drained by an operator", True, required, votes
            )
        if current is RegionState.DRAINING:
            target = RegionState.DOWN if down >= required else serving_state
            return _Proposal(
                region, target, f"restored by an operator ({tally})", True, required, votes
            )
        if current is RegionState.DOWN:
            target = serving_state if up >= required else RegionState.DOWN
        elif down >= required:
            target = RegionState.DOWN
        else:
            target = serving_state
        return _Proposal(region, target, tally, False, required, votes)

    def _held_down(self, track: _Track, p: _Proposal, now_ms: int) -> bool:
        if p.manual:
            return False
        window_ms = self.settings.hold_down_window_s * 1000
        track.changes_ms = [t for t in track.changes_ms if now_ms - t < window_ms]
        if len(track.changes_ms) < self.settings.hold_down_max_changes:
            return False
        return _RANK[p.target] < _RANK[track.state]

    def evaluate(
        self,
        now_ms: int,
        reports: Mapping[str, ObserverReport],
        drained: frozenset[str] = frozenset(),
    ) -> list[Event]:
        """Apply the rules to the latest report of each observer; return what happened."""
        fresh = self._fresh(reports, now_ms)
        isolated = self.isolated(reports, now_ms)
        proposals = []
        for region in self.regions:
            votes = self._votes(region, reports, fresh, isolated, now_ms)
            proposals.append(self._propose(region, votes, drained))
        events: list[Event] = []
        accepted: dict[str, _Proposal] = {}
        for p in proposals:
            track = self._tracks[p.region]
            self._verdicts[p.region] = Verdict(track.state, track.since_ms, p.required, p.votes)
            if p.target is track.state:
                track.held = False
                continue
            if self._held_down(track, p, now_ms):
                if not track.held:
                    events.append(self._event("held_down", p, now_ms, "hold-down: " + p.reason))
                track.held = True
                continue
            track.held = False
            accepted[p.region] = p
        events += self._keep_last_serving(accepted, now_ms)
        for p in accepted.values():
            track = self._tracks[p.region]
            events.append(self._event("state_change", p, now_ms, p.reason))
            if not p.manual:
                track.changes_ms.append(now_ms)
            track.state, track.since_ms, track.kept = p.target, now_ms, False
            self._verdicts[p.region] = Verdict(p.target, now_ms, p.required, p.votes)
        return events

    def _keep_last_serving(self, accepted: dict[str, _Proposal], now_ms: int) -> list[Event]:
        """Drop ejections from `accepted` as needed so that one region still serves."""
        after = {
            r: (accepted[r].target if r in accepted else t.state).serves_clients
            for r, t in self._tracks.items()
        }
        if any(after.values()):
            for t in self._tracks.values():
                t.kept = False
            return []
        ejected = [p for p in accepted.values() if self._tracks[p.region].state.serves_clients]
        if not ejected:
            return []

        def keep_order(p: _Proposal) -> tuple[int, int, int]:
            downs = sum(1 for v in p.votes if v.counted and v.says == "down")
            return (0 if p.manual else 1, downs, self.regions.index(p.region))

        # Prefer keeping a drained region (it is healthy; only the operator wanted it out),
        # then the one with the fewest down votes, then topology order.
        keep = min(ejected, key=keep_order)
        del accepted[keep.region]
        track = self._tracks[keep.region]
        if track.kept:
            return []
        track.kept = True
        return [
            self._event("kept_last_region", keep, now_ms, "last serving region: " + keep.reason)
        ]

    def _event(self, kind: str, p: _Proposal, now_ms: int, reason: str) -> Event:
        previous = self._tracks[p.region].state
        return Event(kind, p.region, now_ms, previous, p.target, reason, p.required, p.votes)
