"""Issue 4's frames through real edges: history paging (frame and REST), resume, rewind."""

from __future__ import annotations

from typing import Any

import httpx

from tests.edge_fixture import EdgeCluster, WsClient, edges_fixture

edges = edges_fixture()


async def publish(pub: WsClient, channel: str, values: list[Any]) -> list[dict[str, Any]]:
    acks = []
    for v in values:
        ack = await pub.request({"type": "publish", "channel": channel, "data": v})
        assert ack["type"] == "ack", ack
        acks.append(ack)
    return acks


async def test_history_frame_and_rest_page_the_same_messages(edges: EdgeCluster) -> None:
    channel = "hist:pages"
    async with WsClient.open(edges.ws_url("eu", edges.token("h"))) as c:
        await publish(c, channel, list(range(250)))
        frames: list[dict[str, Any]] = []
        after = None
        for _ in range(10):
            req: dict[str, Any] = {"type": "history", "channel": channel, "limit": 100}
            if after is not None:
                req["after"] = after
            page = await c.request(req)
            assert page["type"] == "history_page" and page["channel"] == channel, page
            frames += page["messages"]
            after = page["cursor"]
            if not page["messages"]:
                break
    assert [m["data"] for m in frames] == list(range(250))
    key = {"Authorization": f"Bearer {edges.api_key}"}
    rest: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    async with httpx.AsyncClient(base_url=edges.url("us"), timeout=20) as http:
        for _ in range(10):
            r = await http.get("/v1/channels/hist%3Apages/messages", params=params, headers=key)
            assert r.status_code == 200, r.text
            body = r.json()
            rest += body["messages"]
            params["after"] = body["cursor"]
            if not body["messages"]:
                break
    assert [m["serial"] for m in rest] == [m["serial"] for m in frames]


async def test_resume_with_a_cursor_in_another_region(edges: EdgeCluster) -> None:
    channel = "hist:resume"
    async with (
        WsClient.open(edges.ws_url("us", edges.token("r"))) as sub,
        WsClient.open(edges.ws_url("eu", edges.token("p-eu"))) as p_eu,
        WsClient.open(edges.ws_url("ap", edges.token("p-ap"))) as p_ap,
    ):
        await sub.subscribe(channel)
        await publish(p_eu, channel, ["first"])
        (seen,) = await sub.messages(1)
        cursor = seen["cursor"]
        await sub.ws.close()
        await publish(p_eu, channel, [f"eu-{i}" for i in range(20)])
        await publish(p_ap, channel, [f"ap-{i}" for i in range(20)])
        async with WsClient.open(edges.ws_url("ap", edges.token("r2"))) as again:
            reply = await again.subscribe(channel, **{"from": {"cursor": cursor}})
            assert reply["recovered"] is True
            missed = await again.messages(40)
            eu = [m["data"] for m in missed if m["region"] == "eu"]
            ap = [m["data"] for m in missed if m["region"] == "ap"]
            assert eu == [f"eu-{i}" for i in range(20)] and ap == [f"ap-{i}" for i in range(20)]
            await publish(p_eu, channel, ["live"])
            (live,) = await again.messages(1)
            assert live["data"] == "live"


async def test_rewind_and_bad_starts(edges: EdgeCluster) -> None:
    channel = "hist:rewind"
    async with WsClient.open(edges.ws_url("eu", edges.token("w"))) as c:
        await publish(c, channel, list(range(10)))
        await c.send({"type": "subscribe", "id": "rw", "channel": channel, "from": {"rewind": 3}})
        first = await c.recv()
        assert first["type"] == "subscribed" and first["id"] == "rw"
        assert [m["data"] for m in await c.messages(3)] == [7, 8, 9]
        for start in ({"rewind": -1}, {"cursor": "AAAA"}, {"cursor": 5}, {"rewind": 10**9}):
            reply = await c.request({"type": "subscribe", "channel": "hist:other", "from": start})
            assert reply["type"] == "error" and reply["error"]["code"] == 40000, (start, reply)
        assert (await c.request({"type": "ping"}))["type"] == "pong"
