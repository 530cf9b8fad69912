"""One observer's judgement of one probe round: each region ok, degraded or failing. Pure.

`failing` means users of the region are not served: no NATS server answers, every edge
fails `/readyz` or the WebSocket handshake, the
synthetic publish did not come through, or the region's servers have no gateway to any
other region. `degraded` means something is wrong but users are still served: some
edges or servers fail, a server's `/healthz` is not ok (a signal, never the verdict:
it says ok through real failures), JetStream has no meta leader (streams still work; only
creating them does not), a gateway is missing, or a mirror of the region's
stream elsewhere has lost contact with it. A missing gateway to, or a stale mirror of,
a region that is itself failing is that region's problem, not the observer's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from control_plane.observation import CheckResult, Status

READYZ = "readyz"
WEBSOCKET = "websocket"
PUBLISH = "publish"
NATS_HEALTHZ = "nats_healthz"
JSZ = "jsz"
GATEWAYZ = "gatewayz"


@dataclass(frozen=True)
class RegionProbe:
    """Everything one round of probes learnt about one region."""

    region: str
    checks: tuple[CheckResult, ...]
    servers: tuple[str, ...] = ()
    """The region's NATS servers (all of them, reachable or not)."""
    servers_unreachable: tuple[str, ...] = ()
    gateways_missing: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Server -> the other regions it has no outbound gateway to."""
    mirrors_active_s: Mapping[str, float] = field(default_factory=dict)
    """Origin region -> seconds since a mirror hosted here last heard from it (worst seen)."""


@dataclass(frozen=True)
class Assessment:
    status: Status
    reasons: tuple[str, ...]


def _of(probe: RegionProbe, check: str) -> list[CheckResult]:
    return [c for c in probe.checks if c.check == check]


def _all_fail(results: list[CheckResult]) -> bool:
    return bool(results) and not any(c.ok for c in results)


def _some_fail(results: list[CheckResult]) -> bool:
    return any(not c.ok for c in results)


def _failing_reasons(probe: RegionProbe, others: tuple[str, ...]) -> list[str]:
    reasons: list[str] = []
    reachable = [s for s in probe.servers if s not in probe.servers_unreachable]
    if probe.servers and not reachable:
        reasons.append("nats: no server answers monitoring")
    for check, what in (
        (READYZ, "edges: every /readyz fails"),
        (WEBSOCKET, "edges: every WebSocket handshake fails"),
        (PUBLISH, "synthetic publish did not arrive"),
    ):
        if _all_fail(_of(probe, check)):
            reasons.append(what)
    if others and reachable:
        cut = [s for s in reachable if set(probe.gateways_missing.get(s, ())) >= set(others)]
        if len(cut) == len(reachable):
            reasons.append("gateways: no gateway to any other region")
    return reasons


def _degraded_reasons(
    probe: RegionProbe, probes: Mapping[str, RegionProbe], failing: set[str], stale_s: float
) -> list[str]:
    reasons: list[str] = []
    if probe.servers_unreachable:
        reasons.append(f"nats: {', '.join(probe.servers_unreachable)} not answering")
    unreachable = set(probe.servers_unreachable)
    for check, what in (
        (NATS_HEALTHZ, "nats /healthz not ok"),
        (JSZ, "jetstream not ok"),
        (READYZ, "/readyz fails"),
        (WEBSOCKET, "WebSocket handshake fails"),
        (PUBLISH, "synthetic publish failed"),
    ):
        # An unreachable server is reported once above, not once per check.
        bad = sorted({c.target for c in _of(probe, check) if not c.ok} - unreachable)
        if bad:
            reasons.append(f"{what}: {', '.join(bad)}")
    for server, missing in sorted(probe.gateways_missing.items()):
        relevant = sorted(set(missing) - failing)
        if relevant:
            reasons.append(f"gateways: {server} has none to {', '.join(relevant)}")
    for host, other in sorted(probes.items()):
        if host == probe.region or host in failing:
            continue
        active = other.mirrors_active_s.get(probe.region)
        if active is not None and active > stale_s:
            reasons.append(f"mirror in {host}: no contact for {active:.0f}s")
    return reasons


def classify_round(
    probes: Mapping[str, RegionProbe], mirror_stale_s: float
) -> dict[str, Assessment]:
    """Assess every probed region from one round of probes of all regions."""
    names = tuple(probes)
    failing_reasons = {
        name: _failing_reasons(p, tuple(n for n in names if n != name))
        for name, p in probes.items()
    }
    failing = {name for name, reasons in failing_reasons.items() if reasons}
    out: dict[str, Assessment] = {}
    for name, probe in probes.items():
        if failing_reasons[name]:
            out[name] = Assessment(Status.FAILING, tuple(failing_reasons[name]))
            continue
        degraded = _degraded_reasons(probe, probes, failing, mirror_stale_s)
        out[name] = Assessment(Status.DEGRADED if degraded else Status.OK, tuple(degraded))
    return out


class Streaks:
    """Per region, how many rounds in a row failed and how many in a row did not."""

    def __init__(self) -> None:
        self._fail: dict[str, int] = {}
        self._ok: dict[str, int] = {}

    def record(self, region: str, status: Status) -> tuple[int, int]:
        """Count one round; returns (fail_streak, ok_streak). Degraded counts as good."""
        if status is Status.FAILING:
            self._fail[region] = self._fail.get(region, 0) + 1
            self._ok[region] = 0
        else:
            self._ok[region] = self._ok.get(region, 0) + 1
            self._fail[region] = 0
        return self._fail[region], self._ok[region]
