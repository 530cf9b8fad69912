"""Pure control-plane parts: probe classification, drains, route, tokens, settings, wire types."""

from __future__ import annotations

import jwt
import pytest

from control_plane.classify import (
    GATEWAYZ,
    JSZ,
    NATS_HEALTHZ,
    PUBLISH,
    READYZ,
    WEBSOCKET,
    RegionProbe,
    Streaks,
    classify_round,
)
from control_plane.drains import DrainBook, DrainRecord
from control_plane.errors import Forbidden, SettingsError, Unauthorized
from control_plane.observation import CheckResult, ObserverReport, RegionReport, Status
from control_plane.route import route
from control_plane.settings import ControlPlaneSettings, build_settings, env_name
from control_plane.subjects import observation_subject, observer_of
from control_plane.tokens import ApiKey, check_bearer, mint_token
from mesh.control import RegionState
from mesh.topology import dev_topology

# -- classification -------------------------------------------------------------


def healthy_probe(region: str, others: tuple[str, ...] = ()) -> RegionProbe:
    server, edge = f"{region}-n1", f"{region}-e1"
    return RegionProbe(
        region,
        (
            CheckResult(NATS_HEALTHZ, server, True),
            CheckResult(JSZ, server, True),
            CheckResult(GATEWAYZ, server, True),
            CheckResult(READYZ, edge, True),
            CheckResult(WEBSOCKET, edge, True),
            CheckResult(PUBLISH, edge, True),
        ),
        servers=(server,),
        mirrors_active_s={o: 0.5 for o in others},
    )


def fail(probe: RegionProbe, check: str) -> RegionProbe:
    checks = tuple(
        CheckResult(c.check, c.target, False, "x") if c.check == check else c for c in probe.checks
    )
    return RegionProbe(
        probe.region,
        checks,
        probe.servers,
        probe.servers_unreachable,
        probe.gateways_missing,
        probe.mirrors_active_s,
    )


def three() -> dict[str, RegionProbe]:
    names = ("eu", "us", "ap")
    return {n: healthy_probe(n, tuple(o for o in names if o != n)) for n in names}


def test_all_good_is_ok() -> None:
    out = classify_round(three(), mirror_stale_s=10)
    assert {n: a.status for n, a in out.items()} == dict.fromkeys(("eu", "us", "ap"), Status.OK)


@pytest.mark.parametrize("check", [READYZ, WEBSOCKET, PUBLISH])
def test_a_critical_check_failing_everywhere_is_failing(check: str) -> None:
    probes = three()
    probes["eu"] = fail(probes["eu"], check)
    out = classify_round(probes, mirror_stale_s=10)
    assert out["eu"].status is Status.FAILING and out["us"].status is Status.OK


@pytest.mark.parametrize(("check", "words"), [(NATS_HEALTHZ, "healthz"), (JSZ, "jetstream")])
def test_nats_healthz_or_jsz_alone_is_only_degraded(check: str, words: str) -> None:
    probes = three()
    probes["eu"] = fail(probes["eu"], check)
    out = classify_round(probes, mirror_stale_s=10)
    assert out["eu"].status is Status.DEGRADED
    assert words in out["eu"].reasons[0]


def test_unreachable_nats_is_failing_and_others_missing_gateways_to_it_are_not_degraded() -> None:
    probes = three()
    eu = probes["eu"]
    probes["eu"] = RegionProbe("eu", eu.checks, eu.servers, servers_unreachable=eu.servers)
    for n in ("us", "ap"):
        p = probes[n]
        probes[n] = RegionProbe(
            n, p.checks, p.servers, (), {f"{n}-n1": ("eu",)}, {"eu": 30.0, **p.mirrors_active_s}
        )
    out = classify_round(probes, mirror_stale_s=10)
    assert out["eu"].status is Status.FAILING
    assert out["us"].status is Status.OK and out["ap"].status is Status.OK


def test_a_stale_mirror_elsewhere_degrades_the_origin() -> None:
    probes = three()
    us = probes["us"]
    probes["us"] = RegionProbe("us", us.checks, us.servers, mirrors_active_s={"eu": 11.0})
    out = classify_round(probes, mirror_stale_s=10)
    assert out["eu"].status is Status.DEGRADED and "mirror in us" in out["eu"].reasons[0]
    assert out["us"].status is Status.OK


def test_a_region_cut_from_every_gateway_is_failing() -> None:
    probes = three()
    eu = probes["eu"]
    probes["eu"] = RegionProbe("eu", eu.checks, eu.servers, (), {"eu-n1": ("us", "ap")})
    assert classify_round(probes, mirror_stale_s=10)["eu"].status is Status.FAILING


def test_one_of_two_edges_failing_is_degraded() -> None:
    probes = three()
    eu = probes["eu"]
    probes["eu"] = RegionProbe(
        "eu",
        (*eu.checks, CheckResult(READYZ, "eu-e2", False, "503")),
        eu.servers,
    )
    out = classify_round(probes, mirror_stale_s=10)
    assert out["eu"].status is Status.DEGRADED and "eu-e2" in out["eu"].reasons[0]


def test_streaks() -> None:
    s = Streaks()
    assert s.record("eu", Status.FAILING) == (1, 0)
    assert s.record("eu", Status.FAILING) == (2, 0)
    assert s.record("eu", Status.DEGRADED) == (0, 1)
    assert s.record("eu", Status.OK) == (0, 2)
    assert s.record("us", Status.OK) == (0, 1)


# -- drains ---------------------------------------------------------------------------


def test_drain_book_is_last_writer_wins_in_any_order() -> None:
    a = DrainRecord("eu", True, 100, "us")
    b = DrainRecord("eu", False, 200, "ap")
    c = DrainRecord("eu", True, 200, "eu")  # same time: the instance name breaks the tie
    orders = [(a, b, c), (c, b, a), (b, a, c), (c, a, b)]
    results = {DrainBook(o).records() for o in orders}
    assert results == {(c,)}  # "eu" > "ap"
    book = DrainBook((a,))
    assert book.drained() == {"eu"}
    assert not book.merge(a)  # idempotent
    assert book.merge(b) and book.drained() == frozenset()
    assert DrainBook.decode(book.encode()).records() == book.records()
    with pytest.raises(ValueError):
        DrainBook.decode(b'[{"region": "eu"}]')


# -- route ----------------------------------------------------------------------------

PARIS, TOKYO, NEW_YORK = (48.85, 2.35), (35.68, 139.69), (40.71, -74.0)


def test_route_nearest_usable_then_fallbacks_by_distance() -> None:
    t = dev_topology()
    healthy = dict.fromkeys(t.names, RegionState.HEALTHY)
    a = route(t, healthy, PARIS)
    assert a.region == "eu" and [f.region for f in a.fallbacks] == ["us", "ap"]
    assert a.edges == (t.region("eu").edges[0].ws_url,)
    assert route(t, healthy, TOKYO).region == "ap"
    assert route(t, healthy, NEW_YORK).region == "us"
    for state in (RegionState.DOWN, RegionState.DRAINING):
        b = route(t, {**healthy, "eu": state}, PARIS)
        assert b.region == "us" and [f.region for f in b.fallbacks] == ["ap"]
    assert route(t, {**healthy, "eu": RegionState.DEGRADED}, PARIS).region == "eu"


def test_route_unknown_address_goes_to_default_region_or_nearest_to_it() -> None:
    t = dev_topology()
    healthy = dict.fromkeys(t.names, RegionState.HEALTHY)
    assert route(t, healthy, None).region == t.default_region == "eu"
    assert route(t, {**healthy, "eu": RegionState.DOWN}, None).region == "us"
    assert not route(t, healthy, None).located


# -- tokens and keys -----------------------------------------------------------------


def test_minted_token_follows_the_protocol() -> None:
    key = ApiKey("k1", "s" * 32)
    tok = mint_token(key, "cp-us", {"_edgemesh:probe:*": ["subscribe", "publish"]}, 1000, 60)
    assert jwt.get_unverified_header(tok)["kid"] == "k1"
    claims = jwt.decode(tok, key.secret, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {
        "sub": "cp-us",
        "iat": 1000,
        "exp": 1060,
        "cap": {"_edgemesh:probe:*": ["subscribe", "publish"]},
    }


def test_bearer_api_key_check() -> None:
    keys = (ApiKey("k1", "s" * 32),)
    assert check_bearer("Bearer k1:" + "s" * 32, keys) == keys[0]
    for missing in (None, "", "Basic abc", "Bearer ", "Bearer nocolon"):
        with pytest.raises(Unauthorized):
            check_bearer(missing, keys)
    for wrong in ("Bearer k1:" + "t" * 32, "Bearer k2:" + "s" * 32):
        with pytest.raises(Forbidden):
            check_bearer(wrong, keys)


# -- settings ------------------------------------------------------------------------


def test_settings_defaults_are_fast_and_env_then_cli_override() -> None:
    d = build_settings({}, env={})
    assert d == ControlPlaneSettings()
    assert d.probe.interval_s == 1.0 and d.policy.down_after == 3 and d.policy.up_after == 6
    env = {env_name("down-after"): "5", env_name("probe-interval-s"): "2"}
    s = build_settings({"down-after": "7", "up-after": None}, env=env)
    assert s.policy.down_after == 7 and s.probe.interval_s == 2.0 and s.policy.up_after == 6


@pytest.mark.parametrize(
    ("name", "ok", "bad"),
    [
        ("probe-interval-s", "0.05", "0.04"),
        ("probe-interval-s", "3600", "3601"),
        ("probe-timeout-s", "1.0", "1.01"),  # never longer than the interval (1 s)
        ("down-after", "1", "0"),
        ("up-after", "1000", "1001"),
        ("observation-ttl-s", "1.01", "1.0"),
        ("hold-down-max-changes", "1", "0"),
        ("min-observers", "1", "0"),
        ("hold-down-window-s", "0", "-1"),
        ("announce-interval-s", "0.1", "0.09"),
    ],
)
def test_settings_boundaries(name: str, ok: str, bad: str) -> None:
    # Room for the setting under test: a short timeout, a long observation TTL.
    base = {"probe-timeout-s": "0.01", "observation-ttl-s": "4000"}
    if name in base:
        base = {}
    build_settings({**base, name: ok}, env={})
    with pytest.raises(SettingsError) as exc:
        build_settings({**base, name: bad}, env={})
    assert exc.value.code == 40000 and name in str(exc.value)


def test_settings_reject_garbage() -> None:
    for overrides in ({"down-after": "three"}, {"probe-interval-s": "nan"}, {"nope": "1"}):
        with pytest.raises(SettingsError):
            build_settings(overrides, env={})


# -- wire types ----------------------------------------------------------------------


def test_observer_report_round_trip_and_garbage() -> None:
    rep = ObserverReport(
        "us",
        123,
        7,
        {"eu": RegionReport(Status.FAILING, 3, 0, ("x",), (CheckResult(JSZ, "eu-n1", False),))},
        (DrainRecord("ap", True, 5, "us"),),
    )
    assert ObserverReport.decode(rep.encode()) == rep
    for raw in (b"", b"[]", b'{"observer":"us"}', rep.encode().replace(b"failing", b"sleepy")):
        with pytest.raises(ValueError):
            ObserverReport.decode(raw)
    assert observer_of(observation_subject("us")) == "us"
    assert observer_of("em.ctl.obs.a.b") is None and observer_of("em.other") is None


# -- API documents, metrics, status table ----------------------------------------------


def test_region_views_metrics_and_status_table() -> None:
    from control_plane.metrics import MetricsSnapshot, render
    from control_plane.policy import Verdict, Vote
    from control_plane.status import format_table
    from control_plane.views import region_detail, region_summary

    t = dev_topology()
    eu = t.region("eu")
    checks = (
        CheckResult(READYZ, "eu-e1", True),
        CheckResult(WEBSOCKET, "eu-e1", False, "timeout"),
        CheckResult(NATS_HEALTHZ, "eu-n1", True),
    )
    own = ObserverReport(
        "us", 1000, 3, {"eu": RegionReport(Status.DEGRADED, 0, 3, ("ws fails",), checks)}
    )
    verdict = Verdict(
        RegionState.DEGRADED, 900, 2, (Vote("us", "undecided", Status.DEGRADED, 0, 3, 0),)
    )
    doc = region_summary(eu, verdict, own)
    assert doc["state"] == "degraded" and doc["since"] == 900
    assert doc["edges"] == [{"name": "eu-e1", "url": eu.edges[0].url, "healthy": False}]
    assert doc["checks"]["websocket"] == {"ok": False, "failed": {"eu-e1": "timeout"}}
    assert doc["checks"]["readyz"] == {"ok": True, "failed": {}}
    assert region_summary(eu, verdict, None)["edges"][0]["healthy"] is None
    detail = region_detail(eu, verdict, {"us": own}, "us", [{"round": 3}], None, 1500)
    assert detail["observers"]["us"]["age_ms"] == 500 and detail["votes"][0]["observer"] == "us"

    text = render(
        MetricsSnapshot(
            "us",
            {"eu": RegionState.DOWN},
            7,
            0.25,
            {("eu", "readyz"): 2},
            {"eu": 1},
            {"ap": 5},
            2,
            frozenset({"ap"}),
            3,
            True,
        )
    )
    assert 'edgemesh_cp_region_state{region="eu",state="down"} 1' in text
    assert 'edgemesh_cp_region_state{region="eu",state="healthy"} 0' in text
    assert 'edgemesh_cp_check_failures_total{region="eu",check="readyz"} 2' in text
    assert "edgemesh_cp_isolated_observers 1" in text and text.endswith("\n")

    table = format_table("http://x", {"observer": "us", "regions": [doc]})
    lines = table.splitlines()
    assert lines[0] == "regions as seen by us (http://x)"
    assert lines[2].split()[:2] == ["eu", "degraded"] and "0/1" in lines[2]
    assert lines[2].endswith("degraded: ws fails")


def test_reading_nats_monitoring_answers() -> None:
    from control_plane.probes import missing_gateways, read_jsz

    regions = ("eu", "us", "ap")
    jsz = {
        "config": {"max_memory": 1},
        "meta_cluster": {"name": "us", "leader": "eu-n1"},
        "account_details": [
            {
                "name": "EM",
                "stream_detail": [
                    {"name": "EM_us", "config": {}},
                    {
                        "name": "EM_eu_IN_us",
                        "mirror": {"name": "EM_eu", "lag": 0, "active": 2_956_941_558},
                    },
                    {
                        "name": "EM_ap_IN_us",
                        "mirror": {"name": "EM_ap", "lag": 0, "active": 204_173_363},
                    },
                    {"name": "KV_EM_CTL_us"},
                ],
            }
        ],
    }
    ok, detail, mirrors = read_jsz(200, jsz, regions)
    assert ok and detail == "" and mirrors == pytest.approx({"eu": 2.957, "ap": 0.204}, abs=1e-3)
    no_leader = {**jsz, "meta_cluster": {"name": "us"}}
    assert read_jsz(200, no_leader, regions)[:2] == (False, "no meta leader")
    assert read_jsz(200, {"disabled": True}, regions)[:2] == (False, "jetstream disabled")
    assert read_jsz(503, None, regions)[0] is False
    gw = {"outbound_gateways": {"ap": {"configured": True}}}
    assert missing_gateways(200, gw, ["eu", "ap"]) == ("eu",)
    assert missing_gateways(500, gw, ["eu", "ap"]) == ("eu", "ap")


def test_status_reports_every_instance_that_did_not_answer() -> None:
    from control_plane.status import NoInstanceAnswered, fetch_regions
    from mesh.process import FreePorts

    free = FreePorts()
    urls = [f"http://127.0.0.1:{free()}", f"http://127.0.0.1:{free()}"]  # nothing listens
    with pytest.raises(NoInstanceAnswered) as exc:
        fetch_regions(urls, timeout=1.0)
    assert all(u in str(exc.value) for u in urls)
