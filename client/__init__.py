"""A Python client for edgemesh protocol v1 that reconnects, resumes and retries.

    from client import Client

    async with Client(token, urls=["ws://eu-edge/v1/connect", "ws://us-edge/v1/connect"]) as c:
        sub = await c.subscribe("chat:lobby")
        ack = await c.publish("chat:lobby", {"text": "hi"})
        async for message in sub:
            ...

See docs/client.md.
"""

from client.client import Client
from client.errors import ClientError, PublishTimeout, ServerError
from client.frames import Ack, Connected, HistoryPage, Message
from client.settings import ClientSettings
from client.subscription import Subscription

__all__ = [
    "Ack",
    "Client",
    "ClientError",
    "ClientSettings",
    "Connected",
    "HistoryPage",
    "Message",
    "PublishTimeout",
    "ServerError",
    "Subscription",
]
