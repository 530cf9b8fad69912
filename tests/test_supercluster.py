"""The foundation against real nats-server processes: gateways, JetStream placement, auth."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import nats
import pytest
from nats.errors import NoServersError
from nats.js.api import PubAck, StreamConfig
from nats.js.client import JetStreamContext

from mesh.natsconn import tls_options
from mesh.process import wait_until
from mesh.supercluster import Supercluster, server_env, shared_gomaxprocs
from tests.conftest import NatsClients, start_supercluster

TRANSIENT = (
    nats.errors.TimeoutError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.APIError,
)


async def publish_acked(js: JetStreamContext, subject: str, data: bytes, msg_id: str) -> PubAck:
    """Publish until acknowledged. A new stream's leader election and its interest crossing
    the gateways make the first tries fail; the message id makes retries idempotent."""
    for _ in range(100):
        try:
            return await js.publish(subject, data, timeout=2, headers={"Nats-Msg-Id": msg_id})
        except TRANSIENT:
            await asyncio.sleep(0.1)
    pytest.fail(f"publish {msg_id} to {subject} never acked")


def test_servers_sharing_a_machine_share_its_cores() -> None:
    assert shared_gomaxprocs(2, 3) == 1
    assert shared_gomaxprocs(8, 3) == 2
    assert shared_gomaxprocs(8, 2) == 4
    assert shared_gomaxprocs(1, 9) == 1
    assert server_env(1, {"PATH": "/bin"}) is None  # alone: Go's default
    assert server_env(3, {"GOMAXPROCS": "7"}) is None  # the operator's choice stands
    env = server_env(3, {"PATH": "/bin"})
    assert env is not None and env["PATH"] == "/bin" and int(env["GOMAXPROCS"]) >= 1


def test_running_servers_got_their_share(supercluster: Supercluster) -> None:
    share = os.environ.get("GOMAXPROCS") or shared_gomaxprocs(
        len(os.sched_getaffinity(0)), len(supercluster.servers)
    )
    for h in supercluster.servers.values():
        assert h.process.pid is not None
        environ = Path(f"/proc/{h.process.pid}/environ").read_bytes().split(b"\0")
        assert f"GOMAXPROCS={share}".encode() in environ, h.server.name


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
    ack = await publish_acked(js, "foundation.eu.x", b"from us", "m1")
    assert ack.stream == "FOUNDATION_EU" and ack.seq == 1 and not ack.duplicate
    msg = await js.get_msg("FOUNDATION_EU", 1)
    assert msg.data == b"from us"


async def test_nats_refuses_clients_without_credentials(supercluster: Supercluster) -> None:
    url = supercluster.topology.region("eu").nats[0].client_url
    # Over TLS, as a component would connect: only the credentials are missing or wrong.
    tls = tls_options(supercluster.topology)
    assert tls, "the fixture's NATS speaks TLS"
    with pytest.raises((NoServersError, nats.errors.Error, OSError)):
        await nats.connect(
            servers=[url],
            max_reconnect_attempts=0,
            connect_timeout=2,
            allow_reconnect=False,
            **tls,
        )
    with pytest.raises((NoServersError, nats.errors.Error, OSError)):
        await nats.connect(
            servers=[url],
            user="edge",
            password="wrong-password-123456",
            max_reconnect_attempts=0,
            connect_timeout=2,
            allow_reconnect=False,
            **tls,
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
        for i in range(10):
            await publish_acked(js, "r3.x", str(i).encode(), f"m{i}")
        victim = "eu-n1"
        await asyncio.to_thread(sc.kill_server, victim)
        # The stream keeps quorum with two of three servers: publishes still ack.
        for i in range(10, 20):
            await publish_acked(js, "r3.x", str(i).encode(), f"m{i}")
        for _ in range(100):
            try:
                info = await js.stream_info("R3")
                break
            except TRANSIENT:
                await asyncio.sleep(0.1)
        assert info.state.messages == 20

        # and the survivors still reach the other region: gateways that went through the
        # victim reconnect to another server of its cluster.
        def survivors_formed() -> bool:
            problems = sc.formed_problems(None)
            return not [p for p in problems if not p.startswith(victim) and victim not in p]

        assert await asyncio.to_thread(wait_until, survivors_formed, 60, 0.2), sc.formed_problems()
    finally:
        await clients.close()
        await asyncio.to_thread(sc.stop)


async def test_edge_user_cannot_publish_control_plane_subjects(nats_client: NatsClients) -> None:
    errors: asyncio.Queue[Exception] = asyncio.Queue()

    async def on_error(exc: Exception) -> None:
        await errors.put(exc)

    control = await nats_client("eu", user="control")
    edge = await nats_client("eu", user="edge", error_cb=on_error)
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        await got.put(msg.data)

    await control.subscribe("em.ctl.regions", cb=on_msg)
    await control.flush()
    await edge.publish("em.ctl.regions", b"forged")
    await edge.flush()
    err = await asyncio.wait_for(errors.get(), 10)
    assert "permissions violation" in str(err).lower()
    # the control user's own announcement still goes through, and the forged one never came
    await control.publish("em.ctl.regions", b"real")
    assert await asyncio.wait_for(got.get(), 10) == b"real"
    assert got.empty()
