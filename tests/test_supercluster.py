"""The foundation against real nats-server processes: gateways, JetStream placement, auth."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats.errors import NoServersError
from nats.js.api import StreamConfig

from mesh.process import wait_until
from mesh.supercluster import Supercluster
from tests.conftest import NatsClients, start_supercluster


def test_every_region_has_gateways_to_the_others(supercluster: Supercluster) -> None:
    for h in supercluster.servers.values():
        gw = supercluster.monitor(h.server.name, "/gatewayz")
        others = {r for r in supercluster.topology.names if r != h.region.name}
        assert set(gw["outbound_gateways"]) == others
        assert set(gw["inbound_gateways"]) == others


async def test_message_published_in_eu_reaches_subscriber_in_us(
    nats_client: NatsClients,
) -> None:
    us = await nats_client("us")
    eu = await nats_client("eu")
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        await got.put(msg.data)

    await us.subscribe("foundation.hello", cb=on_msg)
    await us.flush()
    # Interest crosses the gateway asynchronously: publish until the first one arrives.
    for _ in range(100):
        await eu.publish("foundation.hello", b"hi")
        await eu.flush()
        try:
            assert await asyncio.wait_for(got.get(), 0.05) == b"hi"
            return
        except TimeoutError:
            continue
    pytest.fail("no message crossed the eu -> us gateway in 5 s")


async def test_stream_in_cluster_eu_accepts_publishes_from_us(nats_client: NatsClients) -> None:
    us = await nats_client("us")
    js = us.jetstream(timeout=10)
    info = await js.add_stream(
        config=StreamConfig.from_response(
            {
                "name": "FOUNDATION_EU",
                "subjects": ["foundation.eu.>"],
                "placement": {"cluster": "eu"},
            }
        )
    )
    assert info.cluster is not None and info.cluster.name == "eu"
    # The stream's interest reaches us over the gateway asynchronously: until it has,
    # a publish from us finds no responders. The msg id makes a retry idempotent.
    for _ in range(200):
        try:
            ack = await js.publish("foundation.eu.x", b"from us", headers={"Nats-Msg-Id": "x1"})
            break
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.05)
    else:
        pytest.fail("the eu stream's subjects never became reachable from us")
    assert ack.stream == "FOUNDATION_EU" and ack.seq == 1
    msg = await js.get_msg("FOUNDATION_EU", 1)
    assert msg.data == b"from us"


async def test_nats_refuses_clients_without_credentials(supercluster: Supercluster) -> None:
    url = supercluster.topology.region("eu").nats[0].client_url
    with pytest.raises((NoServersError, nats.errors.Error, OSError)):
        await nats.connect(
            servers=[url], max_reconnect_attempts=0, connect_timeout=2, allow_reconnect=False
        )
    with pytest.raises((NoServersError, nats.errors.Error, OSError)):
        await nats.connect(
            servers=[url],
            user="edge",
            password="wrong-password-123456",
            max_reconnect_attempts=0,
            connect_timeout=2,
            allow_reconnect=False,
        )


async def test_three_server_region_survives_losing_one(tmp_path: Path) -> None:
    sc = await asyncio.to_thread(
        start_supercluster, tmp_path, 3, 0, (("eu", 50.11, 8.68), ("us", 39.04, -77.49))
    )
    clients = NatsClients(sc)
    try:
        nc = await clients("us")
        js = nc.jetstream(timeout=10)
        await js.add_stream(
            config=StreamConfig.from_response(
                {
                    "name": "R3",
                    "subjects": ["r3.>"],
                    "num_replicas": 3,
                    "placement": {"cluster": "eu"},
                }
            )
        )
        transient = (
            nats.errors.TimeoutError,
            nats.js.errors.NoStreamResponseError,
            nats.js.errors.APIError,
        )

        async def publish_acked(i: int) -> None:
            # Leader elections make the first tries fail; the msg id makes retries idempotent.
            for _ in range(100):
                try:
                    await js.publish(
                        "r3.x", str(i).encode(), timeout=2, headers={"Nats-Msg-Id": f"m{i}"}
                    )
                    return
                except transient:
                    await asyncio.sleep(0.1)
            pytest.fail(f"publish {i} never acked")

        for i in range(10):
            await publish_acked(i)
        victim = "eu-n1"
        await asyncio.to_thread(sc.kill_server, victim)
        # The stream keeps quorum with two of three servers: publishes still ack.
        for i in range(10, 20):
            await publish_acked(i)
        for _ in range(100):
            try:
                info = await js.stream_info("R3")
                break
            except transient:
                await asyncio.sleep(0.1)
        assert info.state.messages == 20
        # and the survivors still reach the other region (a gateway that went to the
        # victim reconnects to another eu server: wait for it)
        problems: list[str] = []

        def survivors_formed() -> bool:
            nonlocal problems
            problems = [p for p in sc.formed_problems(None) if victim not in p]
            return not problems

        assert await asyncio.to_thread(wait_until, survivors_formed, 60, 0.2), problems
    finally:
        await clients.close()
        await asyncio.to_thread(sc.stop)
