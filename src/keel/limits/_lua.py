"""The Redis backend's server-side scripts.

Each operation is one script, so it is atomic (Redis runs one script at a
time) and one round trip. They restate ``_rules`` in Lua. Layout, every key
under ``<prefix>{<scope>}:`` so a script touches one Cluster slot:

- ``r:<key>`` rate bucket, string ``<tokens> <at>`` (tokens may be negative);
  expires once it would be full again (absent = full). One string, so a take
  is one SET with its TTL.
- ``c:<key>`` concurrency, sorted set of ticket ids scored by lease end; only
  unexpired leases count. It outlives its newest lease by 0.5 to 1 s: when an
  admit finds less margin it pushes the TTL out and sweeps expired leases,
  so that work happens about twice a second per busy key, not on every admit.
- ``b:<key>`` budget, hash ``spent`` / ``reserved`` (integer nano-USD),
  ``seeded``, and ``exp``: the ``expires_at`` (ms) its TTL was last set to,
  so the TTL is set only when it changes, not on every call. ``l:<key>`` its
  reservations, sorted set of ``<ticket>:<nano>`` scored by lease end. Both
  expire at the budget's ``expires_at``.
- ``t:<ticket>`` an unsettled ticket (settle deletes it: idempotence); it
  expires after the lease.
- ``suspended`` the kill switch: the reason.

Admit and settle take their arguments as ONE JSON array of strings
(``ARGV[1]``, decoded by ``cjson.decode``): the client encodes one argument
instead of dozens, which was most of a call's client-side cost, and cjson
splits it faster than Lua string code would. They reply with one
comma-separated string, for the same reason. KEYS stay declared, one argument
each, for Redis Cluster.

Numbers cross as strings: floats via ``%.17g`` or Python ``repr`` (exact
round trip), nano-USD straight into HINCRBY, never through a Lua double on the
way to storage. The budget check itself (and the reserved total an admit
reports) uses Lua doubles, exact up to 2**53 nano-USD (about 9 million USD
per counter).
"""

from __future__ import annotations

PRELUDE = """
local EPSILON = 1e-6
local function num(x) return string.format('%.17g', x) end
local function int(x) return string.format('%d', x) end
local function neg(s) if s == '0' then return s end return '-' .. s end
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function refill(key, limit, rate, now)
  local b = redis.call('GET', key)
  if not b then return limit end
  local sp = string.find(b, ' ', 1, true)
  local tokens, at = tonumber(string.sub(b, 1, sp - 1)), tonumber(string.sub(b, sp + 1))
  return math.min(limit, tokens + math.max(0, now - at) * rate)
end
local function store_bucket(key, tokens, limit, rate, now_s)
  local ttl = int(math.ceil(math.max(0, limit - tokens) / rate * 1000) + 1000)
  redis.call('SET', key, num(tokens) .. ' ' .. now_s, 'PX', ttl)
end
-- Expired reservations become spending: the call may well have been billed.
local function reclaim(hkey, lkey, now_s)
  local gone = redis.call('ZRANGEBYSCORE', lkey, '-inf', now_s)
  for _, member in ipairs(gone) do
    local amount = string.match(member, ':(%d+)$')
    redis.call('HINCRBY', hkey, 'reserved', neg(amount))
    redis.call('HINCRBY', hkey, 'spent', amount)
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', lkey, '-inf', now_s) end
end
-- A budget counter's TTL, and the 'exp' field that says which it is.
local function expire_budget(hkey, exp)
  redis.call('HSET', hkey, 'exp', exp)
  redis.call('PEXPIREAT', hkey, exp)
end
"""

# KEYS: suspended, ticket, nr buckets, nc concurrency sets, nb budgets, nb lease sets.
# ARGV[1], a JSON array of strings: now ('' = server TIME), check_suspended '1'|'0',
#       ticket, lease_s, nr, nc, nb, then per rate (limit, amount, period_s), per concurrency
#       (limit), per budget (limit_nano, reserve_nano, expires_at_ms).
# Returns, comma-separated: 'suspended,<reason>' | 'budget|concurrency,<i>'
#       | 'rate,<i>,<wait or empty>' | 'ok' then spent, reserved, seeded per budget.
ADMIT = (
    PRELUDE
    + """
local A = cjson.decode(ARGV[1])
local now = clock(A[1])
local now_s = num(now)
local ticket, lease = A[3], tonumber(A[4])
local nr, nc, nb = tonumber(A[5]), tonumber(A[6]), tonumber(A[7])
local rk, ck, bk, lk = 2, 2 + nr, 2 + nr + nc, 2 + nr + nc + nb
local ra, ca, ba = 7, 7 + 3 * nr, 7 + 3 * nr + nc
if A[2] == '1' then
  local reason = redis.call('GET', KEYS[1])
  if reason then return 'suspended,' .. reason end
end
local counters = {}
for i = 1, nb do
  local hkey, exp = KEYS[bk + i], A[ba + 3 * i]
  reclaim(hkey, KEYS[lk + i], now_s)
  local b = redis.call('HMGET', hkey, 'spent', 'reserved', 'seeded', 'exp')
  -- An existing counter (it always has 'reserved') whose TTL is another expires_at.
  if b[2] and b[4] ~= exp then
    expire_budget(hkey, exp)
    redis.call('PEXPIREAT', KEYS[lk + i], exp)
  end
  counters[i] = b
end
for i = 1, nb do
  local o = ba + 3 * (i - 1)
  local b = counters[i]
  local used = tonumber(b[1] or '0') + tonumber(b[2] or '0')
  if used + tonumber(A[o + 2]) > tonumber(A[o + 1]) then return 'budget,' .. i end
end
local tokens, worst, worst_wait = {}, 0, -1
for i = 1, nr do
  local o = ra + 3 * (i - 1)
  local limit, amount = tonumber(A[o + 1]), tonumber(A[o + 2])
  local rate = limit / tonumber(A[o + 3])
  tokens[i] = refill(KEYS[rk + i], limit, rate, now)
  if tokens[i] + EPSILON < amount then
    local wait = math.huge
    if amount <= limit then
      wait = math.ceil((amount - tokens[i]) / rate * 1000 - EPSILON) / 1000
    end
    if wait > worst_wait then worst, worst_wait = i, wait end
  end
end
if worst > 0 then
  if worst_wait == math.huge then return 'rate,' .. worst .. ',' end
  return 'rate,' .. worst .. ',' .. num(worst_wait)
end
-- Only unexpired leases count; expired ones are swept below, now and then.
local live = '(' .. now_s
for i = 1, nc do
  if redis.call('ZCOUNT', KEYS[ck + i], live, '+inf') >= tonumber(A[ca + i]) then
    return 'concurrency,' .. i
  end
end

local lease_ms = math.ceil(lease * 1000)
local until_ = num(now + lease)
redis.call('SET', KEYS[2], '1', 'PX', int(lease_ms))
for i = 1, nr do
  local o = ra + 3 * (i - 1)
  local limit = tonumber(A[o + 1])
  local rate = limit / tonumber(A[o + 3])
  store_bucket(KEYS[rk + i], tokens[i] - tonumber(A[o + 2]), limit, rate, now_s)
end
for i = 1, nc do
  local k = KEYS[ck + i]
  redis.call('ZADD', k, until_, ticket)
  if redis.call('PTTL', k) < lease_ms + 500 then
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now_s)
    redis.call('PEXPIRE', k, int(lease_ms + 1000))
  end
end
local out = {'ok'}
for i = 1, nb do
  local o = ba + 3 * (i - 1)
  local reserve, exp = A[o + 2], A[o + 3]
  local b = counters[i]
  local reserved = redis.call('HINCRBY', KEYS[bk + i], 'reserved', reserve)
  if not b[2] then expire_budget(KEYS[bk + i], exp) end -- the HINCRBY created it
  redis.call('ZADD', KEYS[lk + i], until_, ticket .. ':' .. reserve)
  redis.call('PEXPIREAT', KEYS[lk + i], exp) -- the ZADD may have created it
  out[#out + 1] = b[1] or '0'
  out[#out + 1] = int(reserved)
  out[#out + 1] = b[3] or '0'
end
return table.concat(out, ',')
"""
)

# KEYS: ticket, nr buckets, nc concurrency sets, nb budgets, nb lease sets.
# ARGV[1], a JSON array of strings: now, ticket, nr, nc, nb, then per rate (limit, period_s,
#       correction or empty), per budget (reserve_nano, charge_nano, expires_at_ms).
# Returns spent, reserved per budget, comma-separated, after settling or, when settled
# already, as is.
SETTLE = (
    PRELUDE
    + """
local A = cjson.decode(ARGV[1])
local ticket = A[2]
local nr, nc, nb = tonumber(A[3]), tonumber(A[4]), tonumber(A[5])
local rk, ck, bk, lk = 1, 1 + nr, 1 + nr + nc, 1 + nr + nc + nb
local ra, ba = 5, 5 + 3 * nr
local out = {}
local settling = redis.call('DEL', KEYS[1]) == 1
if settling then
  for i = 1, nc do redis.call('ZREM', KEYS[ck + i], ticket) end
  local now, now_s
  for i = 1, nr do
    local o = ra + 3 * (i - 1)
    if A[o + 3] ~= '' then
      if not now then now = clock(A[1]); now_s = num(now) end
      local limit = tonumber(A[o + 1])
      local rate = limit / tonumber(A[o + 2])
      local have = refill(KEYS[rk + i], limit, rate, now)
      store_bucket(KEYS[rk + i], math.min(limit, have - tonumber(A[o + 3])), limit, rate, now_s)
    end
  end
end
for i = 1, nb do
  local o = ba + 3 * (i - 1)
  local hkey = KEYS[bk + i]
  -- No lease left means it was reclaimed, and already counted as spent.
  if settling and redis.call('ZREM', KEYS[lk + i], ticket .. ':' .. A[o + 1]) == 1 then
    local exp = A[o + 3]
    redis.call('HINCRBY', hkey, 'reserved', neg(A[o + 1]))
    redis.call('HINCRBY', hkey, 'spent', A[o + 2])
    local b = redis.call('HMGET', hkey, 'spent', 'reserved', 'exp')
    if b[3] ~= exp then expire_budget(hkey, exp) end
    out[#out + 1] = b[1]
    out[#out + 1] = b[2]
  else
    local b = redis.call('HMGET', hkey, 'spent', 'reserved')
    out[#out + 1] = b[1] or '0'
    out[#out + 1] = b[2] or '0'
  end
end
return table.concat(out, ',')
"""
)

# KEYS: budget, lease set. ARGV: now. Returns {spent, reserved} or nil when absent.
USED = (
    PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
reclaim(KEYS[1], KEYS[2], num(clock(ARGV[1])))
local b = redis.call('HMGET', KEYS[1], 'spent', 'reserved')
return {b[1] or '0', b[2] or '0'}
"""
)

# KEYS: budget. ARGV: spent_nano, expires_at_ms. Adds to a counter never seeded; 1 if it did.
SEED = """
if redis.call('HGET', KEYS[1], 'seeded') then return 0 end
redis.call('HINCRBY', KEYS[1], 'spent', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'reserved', '0')
redis.call('HSET', KEYS[1], 'seeded', '1', 'exp', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"""
