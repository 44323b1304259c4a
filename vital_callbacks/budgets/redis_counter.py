"""The spend counter on Redis: reservations and settled spend as hashes and sorted sets, checked and
written by one Lua script per call, so replicas never both take the last dollar (see ``counter``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from vital_callbacks.budgets.counter import RESERVATION_TTL_S, Claim, Held, Refusal, bucket_of, budget_id, periods
from vital_callbacks.budgets.model import Budget

NANO = Decimal("1e-9")
"""Redis keeps amounts as integer nano-dollars (its Lua numbers are doubles: integers stay exact to
$9,007,199 a bucket and period: a larger Redis-counted limit compares approximately)."""

_RESERVE = """
-- KEYS, per claim: spend hash, reservations zset (by expiry), reservation amounts hash
-- ARGV: now, expires, id, n, then per claim: limit, amount, k, k period fields, the settle field
local now, expires, id, n = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local pos, plan = 5, {}
for i = 1, n do
  local spend, zset, amounts = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local limit, amount, k = tonumber(ARGV[pos]), ARGV[pos + 1], tonumber(ARGV[pos + 2])
  pos = pos + 3
  local settled = 0
  for j = 1, k do
    settled = settled + tonumber(redis.call('HGET', spend, ARGV[pos]) or '0')
    pos = pos + 1
  end
  pos = pos + 1
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', zset, '-inf', now)) do redis.call('HDEL', amounts, member) end
  redis.call('ZREMRANGEBYSCORE', zset, '-inf', now)
  local reserved = 0
  for _, v in ipairs(redis.call('HVALS', amounts)) do reserved = reserved + tonumber(v) end
  if settled + reserved + tonumber(amount) > limit then return {i, tostring(settled + reserved)} end
  plan[i] = {zset, amounts, amount}
end
for i = 1, n do
  redis.call('ZADD', plan[i][1], expires, id)
  redis.call('HSET', plan[i][2], id, plan[i][3])
end
return {0, '0'}
"""

_SETTLE = """
-- KEYS, per claim: spend hash, reservations zset, amounts hash; ARGV: id, actual (or ''), keep_s, n fields
local id, actual, keep = ARGV[1], ARGV[2], tonumber(ARGV[3])
for i = 1, #KEYS / 3 do
  local spend, zset, amounts = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  redis.call('ZREM', zset, id)
  redis.call('HDEL', amounts, id)
  if actual ~= '' then
    redis.call('HINCRBY', spend, ARGV[3 + i], actual)
    redis.call('EXPIRE', spend, keep)
  end
end
return 0
"""


def _nano(amount: Decimal, *, up: bool) -> int:
    scaled = amount / NANO
    whole = int(scaled)
    return whole + 1 if up and scaled > whole else whole


class RedisCounter:
    """Counters in Redis (``VITAL_BUDGET_REDIS_URL``): for many replicas, the engine teams already run
    for rate limits. One Lua script checks and reserves every claim of a call atomically."""

    def __init__(self, url: str, *, timeout_s: float = 2.0, prefix: str = "vital:budget:") -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No retries of its own: the wait of a call is bounded by one timeout, then on_store_error decides.
        self._client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                            retry=Retry(NoBackoff(), 0))
        self._prefix = prefix
        self._reserve = self._client.register_script(_RESERVE)
        self._settle = self._client.register_script(_SETTLE)

    def _keys(self, claim: Claim) -> list[str]:
        base = f"{self._prefix}{budget_id(claim.budget)}:{bucket_of(claim.key)}"
        return [f"{base}:spend", f"{base}:held", f"{base}:amounts"]

    def reserve(self, claims: Sequence[Claim], now: datetime) -> Held | Refusal:
        held = Held(uuid.uuid4().hex, tuple(claims), tuple(periods(c.budget, now)[0] for c in claims))
        keys: list[str] = []
        args: list[Any] = [now.timestamp(), now.timestamp() + RESERVATION_TTL_S, held.reservation_id, len(claims)]
        for claim, start in zip(claims, held.period_starts, strict=True):
            keys += self._keys(claim)
            fields = [str(int(p.timestamp())) for p in periods(claim.budget, now)[1]]
            args += [_nano(claim.budget.amount_usd, up=False), _nano(claim.amount, up=True), len(fields), *fields,
                     str(int(start.timestamp()))]
        refused, spend = self._reserve(keys=keys, args=args)
        if int(refused):
            return Refusal(claims[int(refused) - 1], Decimal(int(float(spend))) * NANO)
        return held

    def settle(self, held: Held, actual: Decimal) -> None:
        self._finish(held, str(_nano(actual, up=True)))

    def release(self, held: Held) -> None:
        self._finish(held, "")

    def _finish(self, held: Held, actual: str) -> None:
        keys: list[str] = []
        for claim in held.claims:
            keys += self._keys(claim)
        longest = max((c.budget.hours or 0 for c in held.claims), default=0)
        keep_s = int(timedelta(days=40).total_seconds()) + longest * 3600  # at least the longest window
        self._settle(keys=keys, args=[held.reservation_id, actual, keep_s,
                                      *(str(int(p.timestamp())) for p in held.period_starts)])

    def spent(self, budget: Budget, key: str, now: datetime) -> tuple[Decimal, Decimal]:
        spend, zset, amounts = self._keys(Claim(budget, key, Decimal(0)))
        fields = [str(int(p.timestamp())) for p in periods(budget, now)[1]]
        settled = sum(int(v) for v in self._client.hmget(spend, fields) if v is not None)
        live = set(self._client.zrangebyscore(zset, now.timestamp(), "+inf"))
        reserved = sum(int(v) for member, v in self._client.hgetall(amounts).items() if member in live)
        return Decimal(settled) * NANO, Decimal(reserved) * NANO

    def after_fork(self) -> None:
        self._client.connection_pool.reset()
