"""An open-loop HTTP load generator: requests leave at their scheduled times, answered or not.

``python -m bench.openloop URL --rate R --duration S [--path P] [--body signup|none]``
prints one JSON object: latency quantiles counted from each request's *scheduled* time (so
a server that falls behind shows its queue), answers, errors, and the generator's own lag
(how late each request actually left). Closed-loop clients wait for an answer before the
next request, so a slow server only slows them down; this one does not.

One asyncio loop, raw HTTP/1.1 over a pool of keep-alive connections (a new one whenever
all are busy, up to ``--connections``): httpx's async client costs ~1 ms of CPU a request,
too much to hold 200+/s on a shared 2-core machine. A request that gets no answer within
``--timeout`` seconds counts as an error ("timeout").
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


#: Seconds a connection may stay idle before the pool drops it: below uvicorn's
#: keep-alive timeout (5 s), so no request goes out on a connection the server is closing.
IDLE_LIMIT = 2.0


class Pool:
    """Idle keep-alive connections to one host; at most ``limit`` open at a time."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[Connection, float]] = []  # (connection, idle since), newest last
        self.slots = asyncio.Semaphore(limit)

    async def get(self) -> Connection:
        await self.slots.acquire()
        now = time.monotonic()
        while self.idle:
            conn, since = self.idle.pop()
            if now - since < IDLE_LIMIT:
                return conn
            conn[1].close()
        try:
            return await asyncio.open_connection(self.host, self.port)
        except BaseException:
            self.slots.release()
            raise

    def put(self, conn: Connection, reusable: bool) -> None:
        if reusable:
            self.idle.append((conn, time.monotonic()))
        else:
            conn[1].close()
        self.slots.release()


async def exchange(conn: Connection, request: bytes) -> tuple[int, bool]:
    """Send ``request``, read the answer: (status, whether the connection stays usable)."""
    reader, writer = conn
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").lower() != "close"


def signup_body(i: int, run: str) -> bytes:
    return json.dumps(
        {"email": f"ol{i}-{run}@example.com", "name": "Bench", "phone": "+821012345678"}
    ).encode()


async def load(args: argparse.Namespace) -> dict[str, Any]:
    url = urlsplit(args.url)
    pool = Pool(url.hostname or "127.0.0.1", url.port or 80, args.connections)
    run = args.run
    loop = asyncio.get_running_loop()
    total = int(args.rate * args.duration)
    latencies: list[float] = []
    lags: list[float] = []
    errors: Counter[str] = Counter()
    codes: Counter[int] = Counter()

    async def one(i: int, due: float) -> None:
        lags.append(loop.time() - due)
        body = signup_body(i, run) if args.body == "signup" else b""
        method = "POST" if body else "GET"
        request = (
            f"{method} {args.path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        try:
            async with asyncio.timeout(args.timeout):
                conn = await pool.get()
                reusable = False
                try:
                    status, reusable = await exchange(conn, request)
                finally:
                    pool.put(conn, reusable)
        except TimeoutError:
            errors["timeout"] += 1
            return
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors[type(exc).__name__] += 1
            return
        latencies.append(loop.time() - due)
        codes[status] += 1

    start = loop.time() + 0.05
    tasks = []
    for i in range(total):
        due = start + i / args.rate
        if (wait := due - loop.time()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(i, due)))
    sent_by = loop.time()
    await asyncio.gather(*tasks)
    for conn, _ in pool.idle:
        conn[1].close()
    ok = codes.get(args.expect, 0)
    for code, n in codes.items():
        if code != args.expect:
            errors[f"HTTP {code}"] += n
    return {
        "rate": args.rate,
        "duration_s": args.duration,
        "requests": total,
        "achieved_rate": round(total / max(sent_by - start, 1e-9), 1),
        **quantiles("", latencies),
        "answered": ok,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        **quantiles("lag_", lags),
    }


def quantiles(prefix: str, values: list[float]) -> dict[str, float | None]:
    """p50/p99/max in ms (None if there are no values)."""
    if len(values) < 2:
        return {f"{prefix}p50_ms": None, f"{prefix}p99_ms": None, f"{prefix}max_ms": None}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        f"{prefix}p50_ms": round(cuts[49] * 1000, 2),
        f"{prefix}p99_ms": round(cuts[98] * 1000, 2),
        f"{prefix}max_ms": round(max(values) * 1000, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of arrivals")
    parser.add_argument("--path", default="/users/signup")
    parser.add_argument("--body", choices=("signup", "none"), default="signup")
    parser.add_argument("--expect", type=int, default=201, help="the status that counts")
    parser.add_argument("--connections", type=int, default=512, help="most open at once")
    parser.add_argument("--run", default=uuid.uuid4().hex[:8], help="tag in each e-mail address")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = asyncio.run(load(args))
    result["wall_s"] = round(time.perf_counter() - started, 2)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
