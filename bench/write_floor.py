"""The floor under the fan-out benchmark: one bare write per socket, two ways.

    python bench/write_floor.py [--sockets 500] [--rate 20] [--duration 10] [--size 150]

A uvloop server process (this one) accepts `sockets` loopback connections from a reader
process, then writes one `size`-byte frame to every socket `rate` times a second, with
nothing else on the path: no NATS, no JSON, no checks; first with uvloop's
``transport.write()``, then with ``os.write()`` to each socket's fd (the edge's direct
path, ``edge/direct.py``). For each it prints the server's CPU per write, twice: in
the write loop alone (the thread's CPU clock around each loop), and in all (user+sys
of the process over the run, its wake-ups included), the same measure
``bench/fanout.py`` takes of the edges. Run it in the same session as the fan-out
benchmark: on a shared virtual machine this floor moves from hour to hour, and the
edge's figure with it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import selectors
import socket
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def read_all(port: int, n: int) -> None:
    """The reader process: open `n` connections and drain them until they close."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    open_socks = n
    while open_socks:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                sock.close()
                open_socks -= 1


def process_cpu_s() -> float:
    fields = open(f"/proc/{os.getpid()}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def measure(args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """Per way of writing: (µs per write in the loop alone, µs per write in all)."""
    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []
    all_in = loop.create_future()

    class Accept(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transports.append(transport)  # type: ignore[arg-type]
            if len(transports) == args.sockets and not all_in.done():
                all_in.set_result(None)

    server = await loop.create_server(Accept, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    reader = multiprocessing.Process(target=read_all, args=(port, args.sockets))
    reader.start()
    try:
        await asyncio.wait_for(all_in, 60)
        targets = tuple(transports)
        fds = tuple(t.get_extra_info("socket").fileno() for t in targets)
        frame = b"\x81\x7e" + args.size.to_bytes(2, "big") + b"x" * args.size

        def through_transports() -> None:
            for t in targets:
                t.write(frame)

        def to_fds() -> None:  # what the edge's direct path does (edge/direct.py)
            write = os.write
            for fd in fds:
                write(fd, frame)

        results = {}
        for name, loop_once in (("transport.write()", through_transports), ("os.write()", to_fds)):
            writes = 0
            in_loop_ns = 0
            cpu0 = process_cpu_s()
            start = time.perf_counter()
            for k in range(int(args.rate * args.duration)):
                delay = start + k / args.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                t0 = time.thread_time_ns()
                loop_once()
                in_loop_ns += time.thread_time_ns() - t0
                writes += len(targets)
            cpu = process_cpu_s() - cpu0
            results[name] = (in_loop_ns / writes / 1000, cpu / writes * 1e6)
        return results
    finally:
        for t in transports:
            t.close()
        server.close()
        reader.join(10)
        if reader.is_alive():
            reader.kill()
            reader.join()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sockets", type=int, default=500, help="the fan-out bench: 500 per edge")
    p.add_argument("--rate", type=float, default=20.0, help="frames per second to each socket")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--size", type=int, default=150, help="frame payload bytes (126..65535)")
    args = p.parse_args()
    import uvloop

    results = uvloop.run(measure(args))
    print(
        f"write floor: {args.sockets} loopback sockets, {args.rate:g} frames/s each, "
        f"{args.size}-byte payload, {args.duration:g} s per way of writing"
    )
    for name, (in_loop, overall) in results.items():
        print(f"  {name:<18} us per write, loop alone: {in_loop:.2f}; in all: {overall:.2f}")


if __name__ == "__main__":
    main()
