"""Client locations from a MaxMind City database (GeoLite2-City, GeoIP2-City or our own).

A :class:`GeoIpLocator` is a :data:`~control_plane.dns.policy.Locator`: it maps an
address to ``(latitude, longitude)`` and never raises on a lookup. An address the
database does not know, or knows without coordinates, is None (the caller then
uses its default region). A failing read (a corrupt or replaced file) is logged
and is None too: a DNS answer for the default region beats no answer.
"""

from __future__ import annotations

import ipaddress
import logging
import os

import geoip2.database
import geoip2.errors
import maxminddb

from control_plane.dns.policy import Location

log = logging.getLogger("edgemesh.dns.geoip")


class GeoIpError(RuntimeError):
    """The database cannot be used (missing, unreadable, not a City database)."""

    code = "dns.geoip_unavailable"


class GeoIpLocator:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open the database. Raises :class:`GeoIpError` with the path and the reason."""
        self.path = os.fspath(path)
        try:
            self._reader = geoip2.database.Reader(self.path)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise GeoIpError(f"{self.path}: cannot open the GeoIP database: {exc}") from None
        self.database_type = str(self._reader.metadata().database_type)
        if "City" not in self.database_type:
            self._reader.close()
            raise GeoIpError(
                f"{self.path}: a City database is needed, this one is {self.database_type!r}"
            )
        self._failures = 0

    @property
    def failures(self) -> int:
        """Lookups that failed for another reason than an unknown address."""
        return self._failures

    def __call__(self, address: str) -> Location | None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        try:
            location = self._reader.city(ip).location
        except geoip2.errors.AddressNotFoundError:
            return None
        except Exception as exc:  # corrupt data, closed reader, I/O error
            self._failures += 1
            log.warning("geoip lookup of %s in %s failed: %s", address, self.path, exc)
            return None
        if location.latitude is None or location.longitude is None:
            return None
        return (float(location.latitude), float(location.longitude))

    def close(self) -> None:
        self._reader.close()
