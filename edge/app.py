"""The edge's ASGI app: the WebSocket endpoint and the REST API, over one EdgeNode.

WebSocket connections go straight to :func:`websocket_endpoint`, a plain ASGI
callable; everything else (REST, the lifespan) to FastAPI. A connection lives as long
as its client stays, so its handler keeps only what it needs: through FastAPI's
routing it kept ~12 KiB more per connection (the router's and middlewares' frames,
their exit stacks, the `WebSocket` object), ~35% of an idle connection's memory.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from edge import replies
from edge.capabilities import Capabilities, CapabilityError, Operation
from edge.errors import CloseCode, EdgeError, ErrorCode, bad_request, mesh_code
from edge.frames import check_publish_fields, parse_json
from edge.node import EdgeNode, refusal_frame
from edge.session import ClientSession
from edge.tokens import (
    MAX_CLIENT_ID_BYTES,
    Principal,
    authenticate,
    bearer,
    websocket_credential,
)
from edge.wsprotocol import SOCKET_EXTENSION, RawSocket
from mesh.channels import validate_channel
from mesh.errors import MeshError
from mesh.publisher import Publication

HTTP_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.INVALID_CHANNEL: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
}


WS_PATH = "/v1/connect"


def error_response(err: EdgeError) -> JSONResponse:
    return JSONResponse({"error": err.as_dict()}, status_code=HTTP_STATUS[err.code])


async def websocket_endpoint(node: EdgeNode, scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /v1/connect``: authenticate, admit, then run the client's session."""
    if scope["path"] != WS_PATH:
        await send({"type": "websocket.close", "code": 1000, "reason": ""})  # a 403 handshake
        return
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    socket: RawSocket = scope["extensions"][SOCKET_EXTENSION]
    grace = node.settings.drain.close_grace_s
    try:
        credential = websocket_credential(scope["query_string"], scope["headers"])
        who = authenticate(node.keys, credential, time.time(), allow_api_key=False)
    except EdgeError as exc:
        node.metrics.errors.inc(str(int(exc.code)))
        node.metrics.disconnects.inc("unauthorized")
        socket.close_now(CloseCode.UNAUTHORIZED, exc.message, grace, replies.error(None, exc))
        return
    refusal = None
    if not node.accepting_connections():
        refusal = "draining"
    elif len(node.sessions) >= node.settings.limits.max_connections:
        refusal = "edge_full"
    if refusal is not None:
        node.metrics.disconnects.inc(refusal)
        socket.close_now(CloseCode.REGION_UNAVAILABLE, refusal, grace, refusal_frame(node, refusal))
        return
    session = ClientSession(node, socket, who)
    node.add_session(session)
    node.metrics.connections_opened.inc()
    try:
        session.start()
        reason = await session.run(receive)
    finally:
        node.remove_session(session)
    node.metrics.disconnects.inc(reason)


def create_app(node: EdgeNode) -> ASGIApp:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        node.start()
        try:
            yield
        finally:
            await node.stop()

    app = FastAPI(title="edgemesh edge", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(EdgeError)
    async def _edge_error(_request: Request, exc: EdgeError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(MeshError)
    async def _mesh_error(_request: Request, exc: MeshError) -> JSONResponse:
        return error_response(EdgeError(mesh_code(exc), str(exc)))

    def principal(request: Request, allow_api_key: bool = True) -> Principal:
        return authenticate(
            node.keys, bearer(request.headers.get("authorization")), time.time(), allow_api_key
        )

    async def json_body(request: Request) -> dict[str, Any]:
        body = await request.body()
        if len(body) > node.settings.limits.max_frame_bytes:
            raise EdgeError(ErrorCode.TOO_LARGE, "request body too large")
        try:
            doc = parse_json(body)
        except ValueError as exc:
            raise bad_request(f"body is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise bad_request("body must be a JSON object")
        return doc

    def allow(p: Principal, op: Operation, channel: str) -> None:
        validate_channel(channel)
        if not p.capabilities.allows(op, channel):
            raise EdgeError(ErrorCode.FORBIDDEN, f"credential does not allow {op} here")

    @app.post("/v1/channels/{channel:path}/messages", status_code=201)
    async def publish(channel: str, request: Request) -> JSONResponse:
        who = principal(request)
        allow(who, Operation.PUBLISH, channel)
        doc = await json_body(request)
        node.metrics.publishes.inc()
        try:
            limits = node.settings.limits
            data, name, message_id = check_publish_fields(
                doc, limits.max_message_bytes, limits=limits
            )
            future = node.submit(
                Publication(channel, data, name, message_id, who.client_id, who.key_id)
            )
            ack = await future
        except Exception as exc:  # typed errors keep their code; anything else is 50000
            err = node.publish_error(exc)
            node.metrics.nacks.inc(str(int(err.code)))
            return error_response(err)
        node.metrics.acks.inc("true" if ack.duplicate else "false")
        return JSONResponse(
            {"serial": ack.serial, "id": ack.message_id, "duplicate": ack.duplicate},
            status_code=201,
        )

    @app.get("/v1/channels/{channel:path}/messages")
    async def history(channel: str, request: Request) -> Response:
        who = principal(request)
        allow(who, Operation.HISTORY, channel)
        raw_limit = request.query_params.get("limit")
        limit = None
        if raw_limit is not None:
            try:
                limit = int(raw_limit)
            except ValueError:
                raise bad_request("limit must be an integer") from None
            if limit < 1:
                raise bad_request("limit must be a positive integer")
        page = await node.history_page(channel, limit, request.query_params.get("after"))
        body = replies.messages_json(((e.message, e.cursor) for e in page.entries), page.cursor)
        return Response(body, media_type="application/json")

    @app.post("/v1/tokens")
    async def mint_token(request: Request) -> JSONResponse:
        who = principal(request)
        if who.expires_at is not None:
            raise EdgeError(ErrorCode.FORBIDDEN, "minting a token needs an API key, not a token")
        doc = await json_body(request)
        client_id = doc.get("client_id")
        if not isinstance(client_id, str) or not 0 < len(client_id.encode()) <= MAX_CLIENT_ID_BYTES:
            raise bad_request(f"client_id must be a string of 1-{MAX_CLIENT_ID_BYTES} bytes")
        ttl = doc.get("ttl_s", 3600)
        max_ttl = node.settings.limits.max_token_ttl_s
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= max_ttl:
            raise bad_request(f"ttl_s must be a number of seconds in (0, {max_ttl}]")
        try:
            caps = Capabilities.parse(doc.get("capabilities", {}))
        except CapabilityError as exc:
            raise bad_request(str(exc)) from None
        token, exp = node.keys.mint(who.key_id, client_id, caps, time.time(), float(ttl))
        return JSONResponse({"token": token, "expires_at": exp})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "edge": node.edge_name, "region": node.region})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready, detail = await node.readiness()
        return JSONResponse(detail, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            node.render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def edge_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await websocket_endpoint(node, scope, receive, send)
        else:
            await app(scope, receive, send)

    return edge_app
