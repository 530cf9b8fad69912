"""The geoip2 locator over a real City database built by the test fixture."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from control_plane.dns.geoip import GeoIpError, GeoIpLocator
from tests.geoip_fixture import CLIENTS, UNKNOWN_ADDRESS, build_city_db


@pytest.fixture(scope="module")
def city_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_city_db(tmp_path_factory.mktemp("geoip") / "city.mmdb", {"127.0.0.0/8": None})


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_known_addresses_have_their_location(city_db: Path, name: str) -> None:
    locator = GeoIpLocator(city_db)
    try:
        assert locator(CLIENTS[name].address) == CLIENTS[name].location
    finally:
        locator.close()


@pytest.mark.parametrize("address", [UNKNOWN_ADDRESS, "127.0.0.1", "::1", "not an address", ""])
def test_unknown_or_unplaced_addresses_are_none(city_db: Path, address: str) -> None:
    locator = GeoIpLocator(city_db)
    try:
        assert locator(address) is None
        assert locator.failures == 0
    finally:
        locator.close()


def test_read_failure_is_logged_not_raised(city_db: Path, caplog: pytest.LogCaptureFixture) -> None:
    locator = GeoIpLocator(city_db)
    locator.close()  # every read now fails inside the reader
    with caplog.at_level(logging.WARNING, logger="edgemesh.dns.geoip"):
        assert locator(CLIENTS["paris"].address) is None
    assert locator.failures == 1
    assert "geoip lookup" in caplog.text


def test_a_country_database_is_rejected(tmp_path: Path) -> None:
    db = build_city_db(tmp_path / "country.mmdb", database_type="GeoLite2-Country")
    with pytest.raises(GeoIpError, match="a City database is needed"):
        GeoIpLocator(db)


@pytest.mark.parametrize("content", [None, b"", b"not a maxmind database at all" * 10])
def test_missing_or_corrupt_files_are_rejected_naming_the_path(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "city.mmdb"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(GeoIpError) as err:
        GeoIpLocator(path)
    assert str(path) in str(err.value) and err.value.code == "dns.geoip_unavailable"
