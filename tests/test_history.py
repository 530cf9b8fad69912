"""Issue 4 history through real edges: the `history` frame and REST agree, paging yields
every message exactly once merged across origins, and a retry in another region is
acknowledged as the first copy and shows once."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import httpx

from mesh.channels import channel_token
from mesh.directget import DirectReader
from mesh.replies import ReplyMux
from mesh.subjects import mirror_name, stored_subject, stream_name
from tests.conftest import NatsClients
from tests.edge_fixture import EdgeCluster, WsClient, edges_fixture
from tests.test_recovery import publish_many

ENV = {"EDGEMESH_PUBLISH_RATE_PER_S": "1000000", "EDGEMESH_PUBLISH_BURST": "1000000"}


edges = edges_fixture(env=ENV)


async def mirrored(nats_client: NatsClients, origin: str, region: str, seq: int) -> None:
    """Until `region`'s mirror of `origin` holds `seq` (history reads local copies)."""
    js = (await nats_client(region)).jetstream(timeout=5)
    for _ in range(1200):
        if (await js.stream_info(mirror_name(origin, region))).state.last_seq >= seq:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"mirror of {origin} in {region} did not reach {seq}")


def seq_of(ack: dict[str, Any]) -> int:
    return int(ack["serial"].split(":")[1])


async def test_frame_and_rest_agree_and_paging_yields_each_message_once(
    edges: EdgeCluster, nats_client: NatsClients
) -> None:
    ch = "history:2000"
    async with (
        WsClient.open(edges.ws_url("eu", edges.token("p-eu"))) as pub_eu,
        WsClient.open(edges.ws_url("us", edges.token("p-us"))) as pub_us,
    ):
        acks_eu, acks_us = await asyncio.gather(
            publish_many(pub_eu, ch, "eu", 1000), publish_many(pub_us, ch, "us", 1000)
        )
    t_mirror = time.monotonic()
    await mirrored(nats_client, "us", "eu", seq_of(acks_us[-1]))
    print(f"mirror wait {time.monotonic() - t_mirror:.2f} s")
    url = f"{edges.url('eu')}/v1/channels/{quote(ch, safe='')}/messages"
    auth = {"Authorization": f"Bearer {edges.api_key}"}
    seen: list[str] = []
    after: str | None = None
    pages = 0
    async with (
        httpx.AsyncClient(timeout=20) as http,
        WsClient.open(edges.ws_url("eu", edges.token("reader"))) as reader,
    ):
        while True:
            extra = {"after": after} if after else {}
            rest = (await http.get(url, params={"limit": "150", **extra}, headers=auth)).json()
            frame = await reader.request({"type": "history", "channel": ch, "limit": 150, **extra})
            assert frame["type"] == "history_page" and frame["channel"] == ch
            assert frame["messages"] == rest["messages"] and frame["cursor"] == rest["cursor"]
            if not rest["messages"]:
                break
            pages += 1
            stamps = [m["timestamp"] for m in rest["messages"]]
            assert stamps == sorted(stamps)
            seen += [m["serial"] for m in rest["messages"]]
            assert rest["messages"][-1]["cursor"] == rest["cursor"]
            after = rest["cursor"]
    assert pages == 14
    assert len(seen) == len(set(seen)) == 2000
    assert set(seen) == {a["serial"] for a in acks_eu + acks_us}
    # Each publisher's messages in its order.
    eu = [s for s in seen if s.startswith("eu:")]
    assert eu == [a["serial"] for a in acks_eu]


async def test_retry_in_another_region_is_acked_as_the_first_copy_and_appears_once(
    edges: EdgeCluster, nats_client: NatsClients
) -> None:
    """PROTOCOL: a retry within the dedup window is acknowledged `duplicate: true` and
    delivered once, also when the publisher failed over to another region: once that
    region's mirror holds the first copy, the retry is acknowledged as it (WebSocket in
    us, REST in ap) and not stored again."""
    ch = "history:failover"
    found = 'edgemesh_region_checks_total{result="found"}'
    before = {r: edges.metrics(r).get(found, 0) for r in ("us", "ap")}
    async with WsClient.open(edges.ws_url("us", edges.token("s"))) as sub:
        await sub.subscribe(ch)
        async with WsClient.open(edges.ws_url("eu", edges.token("p"))) as eu:
            first = await eu.request(
                {"type": "publish", "channel": ch, "data": 1, "message_id": "pay-7"}
            )
        assert first["type"] == "ack" and not first["duplicate"]
        await mirrored(nats_client, "eu", "us", seq_of(first))
        async with WsClient.open(edges.ws_url("us", edges.token("p"))) as us:
            retry = await us.request(
                {"type": "publish", "channel": ch, "data": 1, "message_id": "pay-7"}
            )
            # Again: this edge follows the channel live (the subscriber) and has seen
            # nothing new from eu or ap since the lookup read them, so nothing is read.
            spared = "edgemesh_region_check_reads_spared_total"
            spared_before = edges.metrics("us")[spared]
            again = await us.request(
                {"type": "publish", "channel": ch, "data": 1, "message_id": "pay-7"}
            )
            assert again["duplicate"] is True and again["serial"] == first["serial"]
            assert edges.metrics("us")[spared] == spared_before + 2  # eu's copy and ap's
            other = await us.request({"type": "publish", "channel": ch, "data": 2})
        assert retry["type"] == "ack" and retry["duplicate"] is True
        assert (retry["serial"], retry["message_id"]) == (first["serial"], "pay-7")
        assert other["type"] == "ack"
        # not stored again: us's stream holds only the other message of the channel
        nc = await nats_client("us")
        stored = await DirectReader(nc, ReplyMux(nc), 5).after(
            stream_name("us"), stored_subject("us", channel_token(ch)), ch, 0, 10
        )
        assert [m.id for m in stored] == [other["message_id"]]
        # The subscriber got the message once, then the next one.
        assert [m["id"] for m in await sub.messages(2)] == ["pay-7", other["message_id"]]
    await mirrored(nats_client, "eu", "ap", seq_of(first))
    url = f"{edges.url('ap')}/v1/channels/{quote(ch, safe='')}/messages"
    auth = {"Authorization": f"Bearer {edges.api_key}"}
    async with httpx.AsyncClient(timeout=10) as http:
        rest = await http.post(url, json={"data": 1, "message_id": "pay-7"}, headers=auth)
    assert rest.status_code == 201, rest.text
    assert rest.json() == {"serial": first["serial"], "id": "pay-7", "duplicate": True}
    assert edges.metrics("us")[found] == before["us"] + 2  # the retry, and again
    assert edges.metrics("ap")[found] == before["ap"] + 1
    await mirrored(nats_client, "us", "ap", seq_of(other))
    async with WsClient.open(edges.ws_url("ap", edges.token("r"))) as reader:
        page = await reader.request({"type": "history", "channel": ch, "limit": 10})
    assert [m["id"] for m in page["messages"]] == ["pay-7", other["message_id"]]
    assert page["messages"][0]["serial"] == first["serial"]


async def test_bad_history_requests_are_refused(edges: EdgeCluster) -> None:
    async with WsClient.open(edges.ws_url("eu", edges.token("r"))) as c:
        for bad in ({"after": "1garbage"}, {"limit": 10**6}, {"limit": 0}):
            frame = {"type": "history", "channel": "history:x", "limit": 5, **bad}
            reply = await c.request(frame)
            assert reply["type"] == "error" and reply["error"]["code"] == 40000, reply
        assert (await c.request({"type": "ping"}))["type"] == "pong"
    url = f"{edges.url('eu')}/v1/channels/history:x/messages"
    auth = {"Authorization": f"Bearer {edges.api_key}"}
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(url, params={"after": "1garbage"}, headers=auth)
        assert r.status_code == 400 and r.json()["error"]["code"] == 40000
