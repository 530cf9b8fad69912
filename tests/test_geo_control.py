import pytest

from mesh.control import RegionState, RegionStates
from mesh.geo import by_distance, fallback_order, great_circle_km
from mesh.topology import dev_topology


def test_great_circle_known_distance() -> None:
    # Frankfurt to Ashburn is about 6,500 km
    assert 6400 < great_circle_km(50.11, 8.68, 39.04, -77.49) < 6600
    assert great_circle_km(1.0, 2.0, 1.0, 2.0) == 0


def test_by_distance_orders_nearest_first() -> None:
    t = dev_topology()
    paris = (48.85, 2.35)
    assert [r.name for r in by_distance(*paris, t.regions)] == ["eu", "us", "ap"]
    tokyo = (35.68, 139.69)
    assert by_distance(*tokyo, t.regions)[0].name == "ap"


def test_fallback_order_skips_origin_and_unusable() -> None:
    t = dev_topology()
    assert fallback_order(t.region("eu"), t.regions, ["eu", "us", "ap"]) == ["us", "ap"]
    assert fallback_order(t.region("eu"), t.regions, ["eu", "ap"]) == ["ap"]


def test_region_states_round_trip_and_reject_garbage() -> None:
    s = RegionStates("us", 123, {"eu": RegionState.DRAINING, "us": RegionState.HEALTHY})
    assert RegionStates.decode(s.encode()) == s
    assert s.usable() == ["us"]
    for raw in (b"", b"{}", b'{"observer":"x","ts_ms":1,"regions":{"eu":"sleepy"}}'):
        with pytest.raises(ValueError):
            RegionStates.decode(raw)
