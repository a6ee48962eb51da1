"""What the ASGI apps (campaignctl serve, the web layers) share."""

from __future__ import annotations

from typing import Awaitable, Callable


async def read_body(receive: Callable[[], Awaitable[dict]], limit: int) -> tuple[bytes, bool]:
    """The request body and whether it was longer than ``limit`` bytes; the
    rest of a longer body is read (so the client is not cut off) but not kept."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks), size > limit
