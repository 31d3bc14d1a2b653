"""Rate-limiter benchmark: the in-process and the Redis limiter side by side, in one run.

For each backend: admissions per second (sequential, and from 64 concurrent tasks) and the
latency one admission adds (p50 / p99), for a request with both subjects (key and account)
limited on requests, tokens and concurrency — the full work of a real admission. Each admission
is settled (token refund, concurrency release) like a real request; settlement is timed apart.

    .venv/bin/python -m bench.limits [--redis-url redis://127.0.0.1:6399/0] [--n 20000]
    .venv/bin/python -m bench.limits --smoke   # 1,000 admissions each, no targets judged

Targets (issue 4): in-process < 20 µs per admission; Redis one round trip, < 0.3 ms p50.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time

from tokendock.limits.base import Limiter, Limits, Subject
from tokendock.limits.memory import MemoryLimiter

HUGE = Limits(rpm=10**9, tpm=10**12, concurrent=10**6)


def subjects(i: int) -> tuple[Subject, ...]:
    # 16 keys over 4 accounts: realistic key spread, some shared account state.
    return (Subject(f"key:{i % 16}", HUGE), Subject(f"account:{i % 4}", HUGE))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


async def sequential(limiter: Limiter, n: int) -> dict[str, float]:
    admit_s: list[float] = []
    settle_s: list[float] = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        adm = await limiter.admit(subjects(i), 500, f"t{i}")
        t1 = time.perf_counter()
        await limiter.settle(adm, 120)
        settle_s.append(time.perf_counter() - t1)
        admit_s.append(t1 - t0)
    total = time.perf_counter() - start
    return {
        "admissions_per_s": n / sum(admit_s),
        "requests_per_s": n / total,
        "admit_p50_us": pct(admit_s, 0.5) * 1e6,
        "admit_p99_us": pct(admit_s, 0.99) * 1e6,
        "settle_p50_us": pct(settle_s, 0.5) * 1e6,
        "settle_p99_us": pct(settle_s, 0.99) * 1e6,
    }


async def concurrent(limiter: Limiter, n: int, tasks: int) -> float:
    per_task = n // tasks

    async def worker(w: int) -> None:
        for j in range(per_task):
            i = w * per_task + j
            adm = await limiter.admit(subjects(i), 500, f"c{i}")
            await limiter.settle(adm, 120)

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(tasks)))
    return per_task * tasks / (time.perf_counter() - start)


async def run(args: argparse.Namespace) -> int:
    import uvloop

    results: dict[str, dict[str, float]] = {}
    backends: list[tuple[str, Limiter]] = [("in-process", MemoryLimiter())]
    redis_n = max(args.n // 4, 1000)
    try:
        from tokendock.limits.redis import RedisLimiter

        redis = RedisLimiter(args.redis_url, prefix=f"td:bench:{secrets.token_hex(4)}:")
        if await redis.ping():
            backends.append(("redis", redis))
        else:
            print(f"Redis at {args.redis_url} is unreachable: skipping it", file=sys.stderr)
    except ImportError:
        pass
    for name, limiter in backends:
        n = args.n if name == "in-process" else redis_n
        await sequential(limiter, min(n // 10, 1000))  # warm-up
        seq = await sequential(limiter, n)
        seq["concurrent64_per_s"] = await concurrent(limiter, n, 64)
        seq["n"] = n
        results[name] = seq
        await limiter.close()
    load = os.getloadavg()
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {os.cpu_count()} CPUs · "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} · loop {uvloop.__name__}"
    )
    print(
        "\n| limiter | admissions/s (1 task) | admit p50 | admit p99 | settle p50 | "
        "settle p99 | admit+settle/s, 64 tasks |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['admissions_per_s']:,.0f} | {r['admit_p50_us']:.1f} µs | "
            f"{r['admit_p99_us']:.1f} µs | {r['settle_p50_us']:.1f} µs | "
            f"{r['settle_p99_us']:.1f} µs | {r['concurrent64_per_s']:,.0f} |"
        )
    if args.smoke:
        print("\n- smoke run: targets not judged")
        return 0
    mem = results["in-process"]
    print(
        f"\n- in-process admission p50 < 20 µs: "
        f"{'PASS' if mem['admit_p50_us'] < 20 else 'FAIL'} ({mem['admit_p50_us']:.1f} µs)"
    )
    if "redis" in results:
        red = results["redis"]
        print(
            f"- Redis admission p50 < 0.3 ms (one round trip): "
            f"{'PASS' if red['admit_p50_us'] < 300 else 'FAIL'} ({red['admit_p50_us']:.0f} µs)"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("TOKENDOCK_TEST_REDIS_URL", "redis://127.0.0.1:6399/0"),
    )
    parser.add_argument("--n", type=int, default=20000, help="admissions per measurement")
    parser.add_argument("--smoke", action="store_true", help="n = 1000, no targets judged")
    args = parser.parse_args()
    if args.smoke:
        args.n = 1000
    import uvloop

    return uvloop.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
