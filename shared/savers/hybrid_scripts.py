"""The hot tier's Redis side: Lua scripts, each one atomic on the server (see ``hybrid.py``).

Plain Redis only (strings, hashes, sorted sets, ``EVALSHA``): no module, so any Redis or
Valkey runs them (ElastiCache, Memorystore, Upstash). Keys of one hot set (a thread and
namespace) are named by the client and passed in ``KEYS``; a script builds no key name from
user text. Every script starts with ``PROLOGUE``:

- ``KEYS[1]`` the epoch key, ``KEYS[2]`` the "last seen" key; ``ARGV[1]`` the epoch the
  client built its key names with, ``ARGV[2]`` the client's clock (ms) when it sent the call,
  ``ARGV[3]`` the stall guard (ms), ``ARGV[4]`` the warm-up (ms).
- A new epoch (every hot key of the old one is ignored from then on, and expires by TTL)
  starts when the epoch key is missing (Redis restarted empty, ``FLUSHALL``), when this call
  reached Redis later than the guard after it was sent, or when no call at all reached Redis
  for longer than the guard (savers send a heartbeat well inside it). The last two mean
  Redis was stopped or cut off long enough for a client to give up on it and write to
  PostgreSQL alone: what Redis holds may be older than PostgreSQL.
- A client whose epoch is not the current one gets ``{"EPOCH", current}`` and nothing done.
- Keys expire ``hot_ttl`` after the last write to their thread (a read does not extend them:
that would cost every read three more commands); a thread read but not written is refilled
from PostgreSQL after that.
- An epoch younger than the warm-up serves no read and takes no fill: a write that began
  under the previous epoch has that long to land in PostgreSQL before anything is cached.

Per thread: ``T`` (hash: ``gen``, and ``k:<hash key>`` = ``<zset key>`` for each hot set of
the thread) and ``L`` (sorted set of write leases, scored by deadline). Per thread and
namespace: ``H`` (hash: ``floor``; ``c:<id>`` checkpoint; ``v:<id>`` the blob fields it
needs, newline-separated; ``st:<id>`` a stamp that changes whenever what is cached for the
checkpoint does; ``b:<channel>\\0<version>`` blobs; ``wl:<id>`` its write fields;
``w:<id>\\0<task>\\0<idx>`` writes) and ``Z`` (checkpoint ids, score 0, in id order).

The invariant readers rely on: while ``H`` has a ``floor`` and ``L`` is empty, every
checkpoint PostgreSQL holds for the namespace with an id >= floor (every one, if floor is
"") is in ``Z``, and nothing else is.
"""

from __future__ import annotations

PROLOGUE = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('GET', KEYS[1])
if epoch and not string.match(epoch, '^%d+%-%d+$') then epoch = false end  -- not ours
local seen = tonumber(redis.call('GET', KEYS[2]) or '0')
local guard = tonumber(ARGV[3])
local why = nil
if not epoch then why = 'empty'
elseif now - tonumber(ARGV[2]) > guard then why = 'late'
elseif seen > 0 and now - seen > guard then why = 'silent' end
if why then
  epoch = tostring(now) .. '-' .. tostring(redis.call('INCR', KEYS[1] .. ':n'))
  redis.call('SET', KEYS[1], epoch)
  redis.call('HINCRBY', KEYS[1] .. ':why', why, 1)
end
redis.call('SET', KEYS[2], now)
if ARGV[1] ~= epoch then return {'EPOCH', epoch} end
local young = now - tonumber(string.match(epoch, '^(%d+)')) < tonumber(ARGV[4])

local function drop_thread(T)
  local fields = redis.call('HGETALL', T)
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 2) == 'k:' then
      redis.call('DEL', string.sub(fields[i], 3), fields[i + 1])
      redis.call('HDEL', T, fields[i])
    end
  end
end

-- a reader that finds a lease past its deadline: its writer may have committed and died
-- (or froze): nothing cached for the thread can be trusted
local function leases_block(T, L)
  if redis.call('ZCOUNT', L, '-inf', now) > 0 then
    redis.call('ZREMRANGEBYSCORE', L, '-inf', now)
    drop_thread(T)
    return true
  end
  return redis.call('ZCARD', L) > 0
end

local function split(s)
  local out = {}
  for f in string.gmatch(s, '[^\n]+') do out[#out + 1] = f end
  return out
end

-- a value no earlier stamp had: a client may reuse what it decoded while the stamp holds
local function stamp(H, cid)
  redis.call('HSET', H, 'st:' .. cid, tostring(now) .. ':' .. redis.call('INCR', KEYS[1] .. ':st'))
end

local function touch(ttl, ...)
  for _, k in ipairs({...}) do redis.call('PEXPIRE', k, ttl) end
end
"""

# KEYS: epoch, seen. Only the prologue: a heartbeat, or a bump (ARGV[5] == "bump").
HEARTBEAT = PROLOGUE + r"""
if ARGV[5] == 'bump' then
  epoch = tostring(now) .. '-' .. tostring(redis.call('INCR', KEYS[1] .. ':n'))
  redis.call('SET', KEYS[1], epoch)
  redis.call('HINCRBY', KEYS[1] .. ':why', 'dirty', 1)
end
return {'OK', epoch}
"""

# A saver that wrote these threads to PostgreSQL without reaching Redis drops what Redis holds
# for them as soon as Redis answers again. KEYS: epoch, seen, then each thread's T.
INVALIDATE = PROLOGUE + r"""
for i = 3, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'gen', 1)
  drop_thread(KEYS[i])
end
return {'OK'}
"""

# KEYS: epoch, seen, T, L. ARGV[5] token, ARGV[6] lease ms, ARGV[7] ttl ms.
BEGIN = PROLOGUE + r"""
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[6]), ARGV[5])
redis.call('HINCRBY', KEYS[3], 'gen', 1)
touch(tonumber(ARGV[7]) + tonumber(ARGV[6]), KEYS[3], KEYS[4])
return {'OK', epoch}
"""

# After a delete, prune or copy committed in PostgreSQL: release the lease, drop the thread.
# KEYS: epoch, seen, T, L. ARGV[5] token.
DROP = PROLOGUE + r"""
redis.call('ZREM', KEYS[4], ARGV[5])
redis.call('HINCRBY', KEYS[3], 'gen', 1)
drop_thread(KEYS[3])
return {'OK'}
"""

# After a put committed. KEYS: epoch, seen, T, L, H, Z.
# ARGV[5] token, [6] id, [7] payload, [8] needed blob fields, [9] hot_keep, [10] ttl ms,
# [11..] blob field, value pairs written with this checkpoint.
PUBLISH_PUT = PROLOGUE + r"""
local T, L, H, Z = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local cid, ttl, keep = ARGV[6], tonumber(ARGV[10]), tonumber(ARGV[9])
local had = redis.call('ZREM', L, ARGV[5])
redis.call('HINCRBY', T, 'gen', 1)
if had == 0 then drop_thread(T) return {'LOST'} end
local floor = redis.call('HGET', H, 'floor')
if not floor then return {'COLD'} end
if floor ~= '' and cid < floor then touch(ttl, T, H, Z) return {'OLD'} end
for i = 11, #ARGV, 2 do redis.call('HSET', H, ARGV[i], ARGV[i + 1]) end
for _, f in ipairs(split(ARGV[8])) do
  if redis.call('HEXISTS', H, f) == 0 then  -- a fork from a checkpoint no longer hot
    redis.call('DEL', H, Z)
    return {'COLD'}
  end
end
redis.call('HSET', H, 'c:' .. cid, ARGV[7], 'v:' .. cid, ARGV[8])
stamp(H, cid)
redis.call('ZADD', Z, 0, cid)
local n = redis.call('ZCARD', Z)
if n > keep then
  local gone = redis.call('ZRANGE', Z, 0, n - keep - 1)
  local maybe = {}
  for _, old in ipairs(gone) do
    for _, f in ipairs(split(redis.call('HGET', H, 'v:' .. old) or '')) do maybe[f] = true end
    local wl = redis.call('HGET', H, 'wl:' .. old)
    if wl then for _, f in ipairs(split(wl)) do redis.call('HDEL', H, f) end end
    redis.call('HDEL', H, 'c:' .. old, 'v:' .. old, 'wl:' .. old, 'st:' .. old)
  end
  redis.call('ZREMRANGEBYRANK', Z, 0, n - keep - 1)
  for _, kept in ipairs(redis.call('ZRANGE', Z, 0, -1)) do
    for _, f in ipairs(split(redis.call('HGET', H, 'v:' .. kept) or '')) do maybe[f] = nil end
  end
  for f, _ in pairs(maybe) do redis.call('HDEL', H, f) end
  redis.call('HSET', H, 'floor', redis.call('ZRANGE', Z, 0, 0)[1])
end
touch(ttl, T, H, Z)
return {'OK'}
"""

# After put_writes committed. KEYS: epoch, seen, T, L, H, Z.
# ARGV[5] token, [6] id, [7] "1" upsert / "0" insert-if-absent, [8] ttl ms, [9..] field, value.
PUBLISH_WRITES = PROLOGUE + r"""
local T, L, H, Z = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local cid = ARGV[6]
local had = redis.call('ZREM', L, ARGV[5])
redis.call('HINCRBY', T, 'gen', 1)
if had == 0 then drop_thread(T) return {'LOST'} end
-- LangGraph may save a task's writes before the checkpoint they belong to has landed: keep
-- them for any id the hot set will take (>= floor); PUBLISH_PUT finds them there
local floor = redis.call('HGET', H, 'floor')
if (not floor) or (floor ~= '' and cid < floor) then return {'COLD'} end
local wl = redis.call('HGET', H, 'wl:' .. cid) or ''
for i = 9, #ARGV, 2 do
  local f = 'w:' .. cid .. '\0' .. ARGV[i]
  local new = redis.call('HEXISTS', H, f) == 0
  if new or ARGV[7] == '1' then redis.call('HSET', H, f, ARGV[i + 1]) end
  if new then wl = wl .. f .. '\n' end
end
redis.call('HSET', H, 'wl:' .. cid, wl)
stamp(H, cid)
touch(tonumber(ARGV[8]), T, H, Z)
return {'OK'}
"""

# KEYS: epoch, seen, T, L, H, Z. ARGV[5] mode ("latest" | "id" | "page"), [6] id or limit,
# [7] "before" id for a page ("" for none), [8] unused, [9] the stamp of the one checkpoint
# the client has decoded already ("" for none).
# Returns {"SAME", id} (that one is still current), {"HIT", n, (id, stamp, payload, nblobs,
# blobs..., nwrites, writes...) * n},
# {"NONE"} (the thread has no such checkpoint), or {"MISS", gen}.
READ = PROLOGUE + r"""
local T, L, H, Z = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local gen = redis.call('HGET', T, 'gen') or '0'
if young or leases_block(T, L) then return {'MISS', gen} end
local floor = redis.call('HGET', H, 'floor')
if not floor then return {'MISS', gen} end
local ids
local mode = ARGV[5]
if mode == 'latest' then
  ids = redis.call('ZREVRANGE', Z, 0, 0)
  if #ids == 0 then
    if floor == '' then return {'NONE'} end
    return {'MISS', gen}
  end
elseif mode == 'id' then
  if redis.call('ZSCORE', Z, ARGV[6]) then
    ids = {ARGV[6]}
  elseif floor == '' or ARGV[6] > floor then
    return {'NONE'}
  else
    return {'MISS', gen}
  end
else
  local limit = tonumber(ARGV[6])
  local top = '+'
  if ARGV[7] ~= '' then top = '(' .. ARGV[7] end
  ids = redis.call('ZREVRANGEBYLEX', Z, top, '-', 'LIMIT', 0, limit)
  if #ids < limit and floor ~= '' then return {'MISS', gen} end
end
if #ids == 1 and ARGV[9] ~= '' and redis.call('HGET', H, 'st:' .. ids[1]) == ARGV[9] then
  return {'SAME', ids[1]}
end
local out = {'HIT', #ids}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', H, 'st:' .. id) or ''
  out[#out + 1] = redis.call('HGET', H, 'c:' .. id)
  local blobs = split(redis.call('HGET', H, 'v:' .. id) or '')
  out[#out + 1] = #blobs
  for _, f in ipairs(blobs) do out[#out + 1] = redis.call('HGET', H, f) or '' end
  local writes = split(redis.call('HGET', H, 'wl:' .. id) or '')
  out[#out + 1] = #writes
  for _, f in ipairs(writes) do out[#out + 1] = redis.call('HGET', H, f) or '' end
end
return out
"""

# After a read that missed: cache what PostgreSQL returned, unless anything was written to the
# thread since the miss (gen moved) or is being written (a lease). KEYS: epoch, seen, T, L, H, Z.
# ARGV[5] gen at the miss, [6] floor, [7] ttl ms, [8] field count, [9..] field, value pairs
# (every field of H but floor), then the ids for Z.
FILL = PROLOGUE + r"""
local T, L, H, Z = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
if young or redis.call('ZCARD', L) > 0 then return {'SKIP'} end
if (redis.call('HGET', T, 'gen') or '0') ~= ARGV[5] then return {'SKIP'} end
redis.call('DEL', H, Z)
local n = tonumber(ARGV[8])
for i = 9, 8 + 2 * n, 2 do redis.call('HSET', H, ARGV[i], ARGV[i + 1]) end
for i = 9 + 2 * n, #ARGV do redis.call('ZADD', Z, 0, ARGV[i]) stamp(H, ARGV[i]) end
redis.call('HSET', H, 'floor', ARGV[6])
redis.call('HSET', T, 'k:' .. H, Z)
touch(tonumber(ARGV[7]), T, H, Z)
return {'OK'}
"""

# ``ckpt hot --drop`` (after a restore or a point-in-time recovery): a new epoch at once, so
# nothing cached before is ever served again. KEYS: epoch. Returns the new epoch.
DROP_ALL = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = tostring(now) .. '-' .. tostring(redis.call('INCR', KEYS[1] .. ':n'))
redis.call('SET', KEYS[1], epoch)
redis.call('HINCRBY', KEYS[1] .. ':why', 'operator', 1)
return epoch
"""
