"""The Redis limiter: exact across any number of processes and machines.

One Lua script per admission (one round trip) checks every subject of the request and commits
only if all admit, using Redis's own clock so processes with skewed clocks agree. Settlement is
a second script: hand back unused tokens, leave the concurrency sets. In-flight entries carry an
expiry, so a crashed process cannot hold concurrency slots forever.

When Redis cannot be reached the policy is a setting: fail closed (503, the default) or fail
open (admit, and log loudly on every such request).
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from tokendock.errors import ServiceUnavailable
from tokendock.limits.base import Admission, Refusal, Subject, Window, refused, tighter

log = logging.getLogger(__name__)

# KEYS: per subject 3 keys (requests TAT, tokens TAT, in-flight zset).
# ARGV: tokens, ticket, inflight_ttl_s, then per subject rpm, tpm, concurrent.
# Returns {0, kind_index, subject_index, retry_after_ms, limit, w_limit, w_remaining, w_reset_ms}
#      or {1, req_limit, req_remaining, req_reset_ms, tok_limit, tok_remaining, tok_reset_ms, ...}
#         (one sextuple per subject; limit 0 = not limited).
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local tokens = tonumber(ARGV[1])
local ticket = ARGV[2]
local ttl = tonumber(ARGV[3])
local n = #KEYS / 3
local period = 60.0
local new = {}
local out = {1}
for i = 1, n do
  local rpm = tonumber(ARGV[3 + (i - 1) * 3 + 1])
  local tpm = tonumber(ARGV[3 + (i - 1) * 3 + 2])
  local conc = tonumber(ARGV[3 + (i - 1) * 3 + 3])
  local zkey = KEYS[(i - 1) * 3 + 3]
  if conc > 0 then
    redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
    if redis.call('ZCARD', zkey) >= conc then
      return {0, 3, i, 1000, conc, 0, 0, 0}
    end
  end
  for d = 1, 2 do
    local limit = (d == 1) and rpm or tpm
    local cost = (d == 1) and 1 or tokens
    local key = KEYS[(i - 1) * 3 + d]
    if limit > 0 then
      local interval = period / limit
      local tat = tonumber(redis.call('GET', key) or now)
      if tat < now then tat = now end
      local nt = tat + cost * interval
      if nt - now > period + 1e-9 then
        local retry = -1
        if cost <= limit then retry = math.ceil((nt - period - now) * 1000) end
        local ahead = tat - now
        local remaining = math.floor((period - ahead + 1e-9) / interval)
        return {0, d, i, retry, limit, limit, remaining, math.ceil(ahead * 1000)}
      end
      new[#new + 1] = {key, nt}
      local ahead = nt - now
      out[#out + 1] = limit
      out[#out + 1] = math.floor((period - ahead + 1e-9) / interval)
      out[#out + 1] = math.ceil(ahead * 1000)
    else
      out[#out + 1] = 0
      out[#out + 1] = 0
      out[#out + 1] = 0
    end
  end
end
for _, kv in ipairs(new) do
  redis.call('SET', kv[1], string.format('%.6f', kv[2]), 'EX', 120)
end
for i = 1, n do
  if tonumber(ARGV[3 + (i - 1) * 3 + 3]) > 0 then
    redis.call('ZADD', KEYS[(i - 1) * 3 + 3], now + ttl, ticket)
    redis.call('EXPIRE', KEYS[(i - 1) * 3 + 3], ttl)
  end
end
return out
"""

# KEYS: per subject 2 keys (tokens TAT, in-flight zset). ARGV: refund, ticket, per subject tpm.
SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local refund = tonumber(ARGV[1])
for i = 1, #KEYS / 2 do
  local tpm = tonumber(ARGV[2 + i])
  local key = KEYS[(i - 1) * 2 + 1]
  if tpm > 0 and refund > 0 then
    local tat = tonumber(redis.call('GET', key) or now)
    local nt = tat - refund * 60.0 / tpm
    if nt < now then nt = now end
    redis.call('SET', key, string.format('%.6f', nt), 'EX', 120)
  end
  redis.call('ZREM', KEYS[(i - 1) * 2 + 2], ARGV[2])
end
return 1
"""

KINDS = {1: "requests", 2: "tokens", 3: "concurrency"}


class RedisLimiter:
    def __init__(
        self, url: str, *, fail_open: bool = False, prefix: str = "td:rl:", ttl: int = 3600
    ):
        # A blocking pool: a burst of admissions waits for a connection instead of failing.
        pool = BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=5, socket_timeout=2, socket_connect_timeout=2
        )
        self._redis: Redis = Redis(connection_pool=pool)
        self._admit = self._redis.register_script(ADMIT)
        self._settle = self._redis.register_script(SETTLE)
        self._fail_open = fail_open
        self._prefix = prefix
        self._ttl = ttl

    def _keys(self, s: Subject) -> list[str]:
        base = self._prefix + s.name
        return [base + ":r", base + ":t", base + ":c"]

    async def admit(self, subjects: tuple[Subject, ...], tokens: int, ticket: str) -> Admission:
        limited = tuple(s for s in subjects if s.limits.rpm or s.limits.tpm or s.limits.concurrent)
        if not limited:
            return Admission(ticket, subjects, tokens)
        keys: list[str] = []
        args: list[Any] = [tokens, ticket, self._ttl]
        for s in limited:
            keys += self._keys(s)
            args += [s.limits.rpm, s.limits.tpm, s.limits.concurrent]
        try:
            out = [int(x) for x in await self._admit(keys=keys, args=args)]
        except (RedisError, OSError) as exc:
            return self._unreachable(exc, subjects, tokens, ticket)
        if out[0] == 0:
            _, kind_i, subj_i, retry_ms, limit, w_limit, w_rem, w_reset = out
            kind = KINDS[kind_i]
            current = Window(w_limit, w_rem, w_reset / 1000) if w_limit else None
            raise refused(
                Refusal(
                    kind,  # type: ignore[arg-type]
                    limited[subj_i - 1].name,
                    limit,
                    float("inf") if retry_ms < 0 else retry_ms / 1000,
                    requests=current if kind == "requests" else None,
                    token_window=current if kind == "tokens" else None,
                )
            )
        req_w: Window | None = None
        tok_w: Window | None = None
        for i in range(len(limited)):
            r_lim, r_rem, r_reset, t_lim, t_rem, t_reset = out[1 + i * 6 : 7 + i * 6]
            if r_lim:
                req_w = tighter(req_w, Window(r_lim, r_rem, r_reset / 1000))
            if t_lim:
                tok_w = tighter(tok_w, Window(t_lim, t_rem, t_reset / 1000))
        return Admission(ticket, limited, tokens, req_w, tok_w)

    def _unreachable(
        self, exc: Exception, subjects: tuple[Subject, ...], tokens: int, ticket: str
    ) -> Admission:
        if not self._fail_open:
            log.error("rate limiter: Redis unreachable (%s); refusing (fail closed)", exc)
            raise ServiceUnavailable(
                "The rate limiter is unavailable; retry shortly.", code="rate_limiter_unavailable"
            ) from exc
        log.error("rate limiter: Redis unreachable (%s); ADMITTING WITHOUT LIMITS (fail open)", exc)
        return Admission(ticket, (), tokens)

    async def settle(self, admission: Admission, used_tokens: int) -> None:
        if not admission.subjects:
            return
        keys: list[str] = []
        args: list[Any] = [max(admission.tokens - used_tokens, 0), admission.ticket]
        for s in admission.subjects:
            k = self._keys(s)
            keys += [k[1], k[2]]
            args.append(s.limits.tpm)
        try:
            await self._settle(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            log.error("rate limiter: could not settle %s in Redis: %s", admission.ticket, exc)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()
