"""The operator API (FastAPI; OpenAPI docs at /docs). A thin adapter over an instance."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from control_plane import metrics
from control_plane.errors import BadRequest, ControlPlaneError, UnknownRegion
from control_plane.instance import ControlPlaneInstance
from control_plane.tokens import check_bearer
from control_plane.views import region_detail, region_summary


def create_app(cp: ControlPlaneInstance) -> FastAPI:
    app = FastAPI(
        title=f"edgemesh control plane ({cp.region})",
        description="Region states, failover events, routing, and manual drain/restore.",
        version="1",
    )

    @app.exception_handler(ControlPlaneError)
    async def _error(_request: Request, exc: ControlPlaneError) -> JSONResponse:
        return JSONResponse(
            {"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status
        )

    def _region(name: str) -> Any:
        if name not in cp.topology.names:
            raise UnknownRegion(f"unknown region {name!r}")
        return cp.topology.region(name)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "region": cp.region, "nats": cp.exchange.usable}

    @app.get("/v1/regions", summary="Every region's state, as this instance sees it")
    async def regions() -> dict[str, Any]:
        own = cp.reports.get(cp.region)
        return {
            "observer": cp.region,
            "regions": [
                region_summary(r, cp.policy.verdict(r.name), own) for r in cp.topology.regions
            ],
        }

    @app.get("/v1/regions/{name}", summary="One region: recent probes, what each observer said")
    async def region(name: str) -> dict[str, Any]:
        r = _region(name)
        return region_detail(
            r,
            cp.policy.verdict(name),
            cp.reports,
            cp.region,
            cp.recent[name],
            cp.book.get(name),
            cp.now_ms(),
        )

    async def _set(name: str, drained: bool, authorization: str | None) -> dict[str, Any]:
        check_bearer(authorization, cp.api_keys)
        _region(name)
        record = await cp.set_drained(name, drained)
        return {
            "region": name,
            "state": cp.policy.verdict(name).state.value,
            "drain": record.to_dict(),
            "persisted": cp.drains_persisted,
        }

    @app.post("/v1/regions/{name}/drain", summary="Take a region out of service (API key)")
    async def drain(
        name: str, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        return await _set(name, True, authorization)

    @app.post("/v1/regions/{name}/restore", summary="Put a drained region back (API key)")
    async def restore(
        name: str, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        return await _set(name, False, authorization)

    @app.get("/v1/events", summary="Region state changes and refusals, newest first")
    async def events(limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> dict[str, Any]:
        return {"events": [e.to_dict() for e in list(cp.events)[:limit]]}

    @app.get("/v1/route", summary="The nearest usable region for a client address")
    async def route(request: Request, response: Response, ip: str | None = None) -> dict[str, Any]:
        # Public, read-only and the same as geo-DNS tells anyone: a browser client on any
        # origin may ask it (a simple GET, no credentials, so no preflight).
        response.headers["Access-Control-Allow-Origin"] = "*"
        address = ip if ip is not None else (request.client.host if request.client else None)
        if address is not None:
            try:
                address = str(ipaddress.ip_address(address))
            except ValueError:
                raise BadRequest(f"not an IP address: {address!r}") from None
        return cp.route(address).to_dict()

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def get_metrics() -> PlainTextResponse:
        now = cp.now_ms()
        fresh = [
            o
            for o, rep in cp.reports.items()
            if now - rep.ts_ms <= cp.settings.policy.observation_ttl_s * 1000
        ]
        snap = metrics.MetricsSnapshot(
            observer=cp.region,
            states=cp.states(),
            rounds=cp.round,
            round_seconds=cp.round_seconds,
            check_failures=cp.check_failures,
            state_changes=cp.state_changes,
            reports_received=cp.reports_received,
            fresh_observers=len(fresh),
            isolated_observers=cp.policy.isolated(cp.reports, now),
            announcements=cp.announcements,
            nats_connected=cp.exchange.usable,
        )
        return PlainTextResponse(metrics.render(snap), media_type=metrics.CONTENT_TYPE)

    return app
