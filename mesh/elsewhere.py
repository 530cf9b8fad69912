"""Was this publish already stored in another region? The cross-region half of idempotency.

JetStream deduplicates ``Nats-Msg-Id`` within one stream, so a retry in the region that
stored the first attempt is acknowledged as a duplicate by JetStream itself. A retry in
another region (the publisher failed over: its first attempt was stored, its ack lost)
reaches a stream that never saw it. Before storing such a retry, the publisher looks in
this region's copies (mirrors) of the other regions' streams for the same dedup key on
the same channel within the dedup window, and acknowledges the first copy when it finds
one. A copy that has not received the first attempt yet (mirror lag, or an origin that
failed before its mirrors had it) cannot show it: then the retry is stored, and the
hub's dedup delivers it once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mesh.directget import DirectReader
from mesh.errors import MeshUnavailable
from mesh.message import StoredMessage
from mesh.subjects import stored_subject, stream_name


def may_retry_elsewhere(opened_ms: int | None, now_ms: int, window_ms: int) -> bool:
    """Whether a publish with a ``message_id`` made at `now_ms` on a connection opened at
    `opened_ms` can be a retry, within the dedup window, of an attempt made in another
    region.

    That attempt was made on another connection (to another region), before this one
    opened; a retry more than `window_ms` after it is a new message anyway. So only a
    connection younger than the window can carry such a retry. A REST request
    (`opened_ms` None) can come from anywhere at any time.
    """
    return opened_ms is None or now_ms - opened_ms <= window_ms


async def _in_copy(
    reader: DirectReader, origin: str, token: str, channel: str, key: str, since_ms: int, cap: int
) -> StoredMessage | None:
    stream, subject = stream_name(origin), stored_subject(origin, token)
    newest = await reader.last(stream, subject, channel)
    if newest is None or newest.timestamp_ms < since_ms:
        return None  # nothing of this channel from `origin` within the window
    if newest.dedup_key == key:
        return newest
    run, _capped = await reader.since(stream, subject, channel, since_ms, newest.seq, cap)
    return next((m for m in run if m.dedup_key == key), None)


async def find_elsewhere(
    reader: DirectReader,
    origins: Sequence[str],
    token: str,
    channel: str,
    key: str,
    since_ms: int,
    cap: int,
) -> tuple[StoredMessage | None, bool]:
    """The first stored copy of dedup key `key` on `channel` (subject token `token`)
    among the messages the local copies of `origins`' streams hold from `since_ms` on
    (at most the newest `cap` per origin), and whether every copy answered.

    A copy that does not answer is skipped: the caller stores the publish (best effort,
    as before this check existed).
    """
    results = await asyncio.gather(
        *(_in_copy(reader, o, token, channel, key, since_ms, cap) for o in origins),
        return_exceptions=True,
    )
    found: StoredMessage | None = None
    answered = True
    for result in results:
        if isinstance(result, MeshUnavailable):
            answered = False
        elif isinstance(result, BaseException):
            raise result
        elif result is not None and (found is None or result.timestamp_ms < found.timestamp_ms):
            found = result
    return found, answered
