"""Geo-DNS: an authoritative server for the edge zone, answering with the nearest usable region.

Pure parts: :mod:`names`, :mod:`ecs`, :mod:`message` (the wire codec), :mod:`policy`
(which records answer a question), :mod:`responder` (bytes in, bytes out).
I/O adapters: :mod:`geoip` (MaxMind City lookups), :mod:`server` (asyncio UDP and
TCP), :mod:`cli` (``edgemesh dns``).
"""
