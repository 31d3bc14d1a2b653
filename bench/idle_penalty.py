"""How much dearer the same Python work is after a pause, on this machine (no server involved).

    .venv/bin/python -m bench.idle_penalty

One unit of work (parse a chat request with pydantic, one SQLite transaction, an orjson round
trip; ×20) is timed back to back, then after pausing 0.2-20 ms — sleeping, sleeping in 1 ms
steps, or spinning. On the 2-vCPU AMD EPYC VM of issue 10 the unit cost 0.13 ms back to back
and 0.27-0.42 ms after a 20 ms sleep (also pinned with taskset; also when the pause is twenty 1 ms
sleeps; 0.24 ms after 20 ms of spinning): CPU state (caches, predictors) decays with wall-clock
time while others run, whether or not the process sleeps. A gateway waiting 20 ms on its
upstream pays this on every request; the ratio printed here is the factor by which its
per-request CPU grows at c=1 against the 20 ms mock (bench/gateway_quiet.py).
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Callable

import orjson

from tokendock.protocol.chat import ChatCompletionRequest

BODY = (
    b'{"model":"m","messages":[{"role":"user","content":"Say hello in one short sentence."}],'
    b'"max_tokens":64}'
)


def unit(conn: sqlite3.Connection) -> None:
    for _ in range(20):
        ChatCompletionRequest.model_validate_json(BODY)
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (1, 2)")
        conn.execute("COMMIT")
        orjson.loads(orjson.dumps({"a": [1, 2, 3], "b": "x" * 100}))


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def median_ms(conn: sqlite3.Connection, pause: Callable[[], object], n: int = 150) -> float:
    times = []
    for _ in range(n):
        pause()
        t = time.perf_counter()
        unit(conn)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def sleep_in_steps() -> None:
    """20 ms of sleep as twenty 1 ms sleeps (each wake-up may land on another CPU)."""
    for _ in range(20):
        time.sleep(0.001)


def main() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (a, b)")
    base = median_ms(conn, lambda: None)
    print(f"{'back to back':28s} {base:.3f} ms")
    pauses: list[tuple[str, Callable[[], object]]] = [
        *((f"sleep {ms:g} ms", lambda s=ms / 1000: time.sleep(s)) for ms in (0.2, 1, 3, 10, 20)),
        ("sleep 20 ms in 1 ms steps", sleep_in_steps),
        ("spin 20 ms", lambda: spin(0.02)),
    ]
    for label, pause in pauses:
        ms = median_ms(conn, pause)
        print(f"{label:28s} {ms:.3f} ms  ×{ms / base:.2f}", flush=True)


if __name__ == "__main__":
    main()
