"""A cheap HTTP load generator: one asyncio process (uvloop when installed), one keep-alive
HTTP/1.1 connection per simulated client, h11 for the protocol, no threads.

Why not httpx: with 50 concurrent connections in one ``httpx.AsyncClient`` the client itself cost
about 60 ms of CPU per request on this 2-core box (measured: 4.2 CPU-s for 690 requests), more than
the server it was measuring, so it stole the cores it shared with the API, Redis and the S3
server. Here a request costs the generator about 0.1-0.3 ms of CPU; :func:`run` reports the
generator's own CPU time so every result can state it.

Two ways to drive clients:

* closed loop (:func:`closed`): each client sends its next request when the previous one is
  answered: the saturation throughput; latency then follows from Little's law (clients /
  throughput) and says little about one request;
* paced (:func:`paced`): each client sends requests as a Poisson process of a given rate (a
  person's pace) and latency is measured from the *scheduled* send time, so a slow answer that
  delays the next request is charged to that request too (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import numpy as np

#: (method, target, headers, body) of one request.
Request = tuple[str, str, list[tuple[str, str]], bytes]


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time; reconnects when the server closes."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._h11: h11.Connection | None = None

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._h11 = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = self._h11 = None

    async def request(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> tuple[int, bytes]:
        """Send one request and read the whole answer: (status, body)."""
        if self._reader is not None and self._reader.at_eof():  # the server closed the idle connection
            self.close()
        if self._h11 is None:
            await self._connect()
        assert self._h11 is not None and self._reader is not None and self._writer is not None
        conn = self._h11
        all_headers = [("host", f"{self.host}:{self.port}"), ("content-length", str(len(body))), *headers]
        data = conn.send(h11.Request(method=method, target=target, headers=all_headers)) or b""
        if body:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        self._writer.write(data)
        status, chunks = 0, []
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await self._reader.read(262144))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionResetError("the server closed the connection")
        except BaseException:
            self.close()
            raise
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:  # the server asked to close
            self.close()
        return status, b"".join(chunks)


@dataclass
class Tally:
    """Latencies (s) of successful requests and counts of failures, by name."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, dict[str, int]] = field(default_factory=dict)

    def record(self, name: str, seconds: float, outcome: int | str) -> None:
        if isinstance(outcome, int) and outcome < 400:
            self.latencies.setdefault(name, []).append(seconds)
        else:
            bucket = self.errors.setdefault(name, {})
            bucket[str(outcome)] = bucket.get(str(outcome), 0) + 1
            self.latencies.setdefault(name, [])


async def _send(connection: Connection, request: Request) -> int | str:
    method, target, headers, body = request
    try:
        status, _ = await connection.request(method, target, headers, body)
    except (OSError, h11.ProtocolError, asyncio.IncompleteReadError) as error:
        return type(error).__name__
    return status


#: Makes the n-th request of client ``client``: (name for the results, request).
Maker = Callable[[int, int], tuple[str, Request]]


async def closed(host: str, port: int, makers: list[Maker], seconds: float, tally: Tally) -> float:
    """One closed-loop client per maker for ``seconds``; returns the elapsed time."""

    async def client(number: int, make: Maker, stop: float) -> None:
        connection = Connection(host, port)
        n = 0
        try:
            while time.monotonic() < stop:
                name, request = make(number, n)
                n += 1
                started = time.perf_counter()
                outcome = await _send(connection, request)
                tally.record(name, time.perf_counter() - started, outcome)
        finally:
            connection.close()

    started = time.monotonic()
    await asyncio.gather(*(client(i, make, started + seconds) for i, make in enumerate(makers)))
    return time.monotonic() - started


async def paced(host: str, port: int, makers: list[Maker], seconds: float, rate: float, tally: Tally,
                seed: int = 0) -> float:
    """One client per maker, each sending a Poisson process of ``rate`` requests/s for ``seconds``;
    latency counts from the scheduled send time. Returns the elapsed time."""
    connections = [Connection(host, port) for _ in makers]

    async def act(number: int, n: int) -> tuple[str, int | str]:
        name, request = makers[number](number, n)
        return name, await _send(connections[number], request)

    try:
        return await poisson(len(makers), seconds, rate, act, tally, seed)
    finally:
        for connection in connections:
            connection.close()


#: One action of a paced client: (client number, its n-th action) -> (name, status or error name).
Action = Callable[[int, int], Awaitable[tuple[str, int | str]]]


async def poisson(clients: int, seconds: float, rate: float, act: Action, tally: Tally, seed: int = 0) -> float:
    """``clients`` clients, each acting as a Poisson process of ``rate`` per second for ``seconds``;
    each action's latency counts from its scheduled time. Returns the elapsed time."""

    async def client(number: int, begin: float, stop: float) -> None:
        rng = random.Random(seed * 100_003 + number)
        scheduled = begin + rng.expovariate(rate)
        n = 0
        while scheduled < stop:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            name, outcome = await act(number, n)
            n += 1
            tally.record(name, time.perf_counter() - scheduled, outcome)
            scheduled += rng.expovariate(rate)

    begin = time.perf_counter()
    await asyncio.gather(*(client(i, begin, begin + seconds) for i in range(clients)))
    return time.perf_counter() - begin


def summary(latencies: list[float], errors: dict[str, int], seconds: float) -> dict[str, Any]:
    """Throughput and latency percentiles (ms) of one kind of request."""
    values = np.asarray(latencies, dtype=np.float64) * 1000.0
    out: dict[str, Any] = {"requests": int(values.size),
                           "throughput_per_s": round(values.size / seconds, 1) if seconds > 0 else 0.0,
                           "errors": dict(errors)}
    if values.size:
        out.update({f"p{q}_ms": round(float(np.percentile(values, q)), 2) for q in (50, 95, 99)})
        out["max_ms"] = round(float(values.max()), 2)
    return out


def run(coroutine: Awaitable[float]) -> tuple[float, float]:
    """Run one scenario on a fresh event loop (uvloop when installed): (elapsed s, CPU s of this process)."""
    cpu = time.process_time()
    try:
        import uvloop

        elapsed = uvloop.run(coroutine)  # type: ignore[arg-type]
    except ImportError:
        elapsed = asyncio.run(coroutine)  # type: ignore[arg-type]
    return elapsed, time.process_time() - cpu
