"""The Lua scripts of :class:`oraculum.api.live.RedisLive`: each is one atomic round trip.

Why scripts: a label write used to cost six Redis round trips (claim, release, merge, a check that
the cache is complete, HGETALL of every label of the iteration, publish) and parsing one reply per
field of the hash in Python; on two shared cores each round trip costs ~0.3 ms of the API's CPU.
Now a write is claim and :data:`COMMIT` (release + merge + labelled counts + publish), and a full
read is :data:`SNAPSHOT` (one JSON document instead of two replies per label).

Keys (``<p>`` is the prefix, ``oraculum`` by default; one standalone Redis, not Redis Cluster):

* ``<p>:labels:<experiment>:<iteration>``: hash, index -> ``<version>\\t<entry JSON>``;
* ``<p>:labels-built:<experiment>:<iteration>``: present while the hash is complete (rebuilt
  from the store and kept up to date since);
* ``<p>:labelled:<experiment>:<iteration>:<set>``: set of the indices with a label (not a
  tombstone) whose entry names the sample ``<set>``; kept exactly in step with the hash by the
  scripts below (the only writers of both), and expiring with it;
* ``<p>:lock:<experiment>:<iteration>:<index>``: an oracle's claim (string: who), with a TTL;
* ``<p>:locks:<experiment>:<iteration>``: sorted set of the claims of an iteration scored by
  expiry (ms), so listing who holds what never scans the keyspace.
"""

from __future__ import annotations

#: Merge entries (newer version wins), release claims, optionally mark the cache complete, count
#: labelled spectra per sample (a rebuild, build 1, recounts them from the whole hash), and publish
#: an event with those counts added as ``"_labelled": {sample: count}`` (only when complete).
#: KEYS: labels hash, labels-built key, then lock keys to release (with the lock-index key after each).
#: ARGV: ttl s, labelled-set key prefix, who, build (0/1), channel ('' for none), event (a JSON
#: object), number S of samples to count, S sample names, then (index, version, entry JSON,
#: sample, labelled 0/1) per entry.
#: Returns {1 if the cache is complete else 0, count of each named sample...}.
COMMIT = """
local ttl = tonumber(ARGV[1])
local prefix = ARGV[2]
local who = ARGV[3]
local first = 8 + tonumber(ARGV[7])
for i = 3, #KEYS, 2 do
  if redis.call('GET', KEYS[i]) == who then
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[i + 1], KEYS[i])
  end
end
local samples = {}
for i = 8, first - 1 do samples[ARGV[i]] = true end
for i = first, #ARGV, 5 do
  local index, version = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HGET', KEYS[1], index)
  local take = true
  if cur then
    local tab = string.find(cur, '\\t', 1, true)
    if tab and string.sub(cur, 1, tab - 1) >= version then
      take = false
    else
      local ok, old = pcall(cjson.decode, string.sub(cur, (tab or 0) + 1))
      if ok and type(old) == 'table' and type(old['set']) == 'string' then
        redis.call('SREM', prefix .. old['set'], index)
        samples[old['set']] = true
      end
    end
  end
  if take then
    redis.call('HSET', KEYS[1], index, version .. '\\t' .. ARGV[i + 2])
    samples[ARGV[i + 3]] = true
    if ARGV[i + 4] == '1' then
      redis.call('SADD', prefix .. ARGV[i + 3], index)
    else
      redis.call('SREM', prefix .. ARGV[i + 3], index)
    end
  end
end
if ARGV[4] == '1' then
  -- a rebuild recounts from the whole hash, so the counts heal whatever drifted before
  local labelled = {}
  local raw = redis.call('HGETALL', KEYS[1])
  for i = 1, #raw, 2 do
    local tab = string.find(raw[i + 1], '\\t', 1, true)
    local ok, entry = pcall(cjson.decode, string.sub(raw[i + 1], (tab or 0) + 1))
    if ok and type(entry) == 'table' and type(entry['set']) == 'string' then
      samples[entry['set']] = true
      if entry['label'] ~= nil and entry['label'] ~= cjson.null then
        labelled[entry['set']] = labelled[entry['set']] or {}
        table.insert(labelled[entry['set']], raw[i])
      end
    end
  end
  for name, _ in pairs(samples) do
    redis.call('DEL', prefix .. name)
    local members = labelled[name] or {}
    for j = 1, #members, 1000 do
      redis.call('SADD', prefix .. name, unpack(members, j, math.min(j + 999, #members)))
    end
  end
  redis.call('SET', KEYS[2], '1', 'EX', ttl)
end
redis.call('EXPIRE', KEYS[1], ttl)
for name, _ in pairs(samples) do redis.call('EXPIRE', prefix .. name, ttl) end
local out = {redis.call('EXISTS', KEYS[2])}
local counts = {}
for i = 8, first - 1 do
  out[#out + 1] = redis.call('SCARD', prefix .. ARGV[i])
  counts[ARGV[i]] = out[#out]
end
if out[1] == 1 and ARGV[5] ~= '' then
  local labelled = '{}'
  if first > 8 then labelled = cjson.encode(counts) end
  redis.call('PUBLISH', ARGV[5], string.sub(ARGV[6], 1, -2) .. ',"_labelled":' .. labelled .. '}')
end
return out
"""

#: Lua functions shared by the read scripts below.
_READ = """
local function snapshot(hash, built)
  if redis.call('EXISTS', built) == 0 then return false end
  local raw = redis.call('HGETALL', hash)
  local parts = {}
  for i = 1, #raw, 2 do
    local value = raw[i + 1]
    local tab = string.find(value, '\\t', 1, true)
    if tab then
      local body = string.sub(value, tab + 1)
      local head = '"' .. raw[i] .. '":{"v":' .. cjson.encode(string.sub(value, 1, tab - 1))
      if body == '{}' then
        parts[#parts + 1] = head .. '}'
      else
        parts[#parts + 1] = head .. ',' .. string.sub(body, 2)
      end
    end
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

local function holders(index)
  local now = redis.call('TIME')
  redis.call('ZREMRANGEBYSCORE', index, '-inf', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
  local out = {}
  for _, key in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    local who = redis.call('GET', key)
    local left = redis.call('PTTL', key)
    if who and left > 0 then
      out[#out + 1] = key
      out[#out + 1] = who
      out[#out + 1] = left
    else
      redis.call('ZREM', index, key)
    end
  end
  return out
end
"""

#: Every cached label of an iteration as one JSON object ``{"<index>": {"v": version, ...entry}}``,
#: or nil when the cache is not complete. KEYS: labels hash, labels-built key.
SNAPSHOT = _READ + "return snapshot(KEYS[1], KEYS[2])"

#: Claim or renew. KEYS: lock key, lock-index key. ARGV: who, ttl ms. Returns {holder, newly claimed}.
CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return {cur, 0} end
local ttl = tonumber(ARGV[2])
local now = redis.call('TIME')
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + ttl, KEYS[1])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
if cur then return {cur, 0} end
return {ARGV[1], 1}
"""

#: Release ``who``'s claim. KEYS: lock key, lock-index key. ARGV: who. Returns 1 when released.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], KEYS[1])
  return 1
end
return 0
"""

#: Claims of one iteration: {lock key, who, ms left, ...}; drops expired entries from the index.
#: KEYS: lock-index key.
HOLDERS = _READ + "return holders(KEYS[1])"

#: :data:`SNAPSHOT` and :data:`HOLDERS` in one round trip (a batch read needs both).
#: KEYS: labels hash, labels-built key, lock-index key. Returns {snapshot or nil, holders}.
VIEW = _READ + "return {snapshot(KEYS[1], KEYS[2]), holders(KEYS[3])}"

#: Take one request from a token bucket (per-token rate limits, :mod:`oraculum.api.ratelimit`);
#: the bucket holds up to ``burst`` requests and refills at ``rate`` a second, by the server's
#: clock (the same for every replica). KEYS: bucket key. ARGV: rate, burst.
#: Returns "0" when taken, else the seconds until one is there (as text: Lua numbers become integers).
TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""
