"""Lua scripts: the steps that must be atomic. All keys of one script share a hash tag,
except in the two single-node scripts at the end.

COMMIT makes a verified upload visible in one step and is idempotent: run twice
with the same vid (a retry after a dropped reply) it changes nothing the second
time and returns the same previous version, so the retry can never schedule
the new version for deletion (docs/decisions/0002-atomic-commit.md).

COMMIT, COMMIT_ONE and DELETE also append the change's event to the
namespace's stream, in the same step (docs/decisions/0011-change-events.md):
a change and its event are never seen apart. The stream is the last of KEYS;
the last three ARGV are the event, the retention in ms and the stream's
MAXLEN, so the arguments before them are those of the script without events.
A retried COMMIT returns before it, so a retry never adds a second event.

COMMIT_ONE and OPEN serve small files in one round trip each on a single
Valkey (docs/decisions/0008-small-files-one-round-trip.md). They touch a
version's chunk keys, which have no hash tag, so a cluster never runs them.
"""

from __future__ import annotations

# Already committed (a retry): the same reply as the first time, nothing changed.
_COMMITTED = """
local current = redis.call('HMGET', KEYS[1], 'vid', 'info', 'prev')
if current[1] == ARGV[2] then
  return current[3] or ''
end
"""


def _publish(key: str, event: str) -> str:
    """Lua that appends an event (``k`` the file key, ``e`` its JSON) to the stream,
    trims what is older than the retention (``~``: whole stream nodes only, cheap)
    and keeps the stream's TTL at the retention."""
    return f"""
local stream = KEYS[#KEYS]
local retention = tonumber(ARGV[#ARGV - 1])
redis.call('XADD', stream, 'MAXLEN', '~', ARGV[#ARGV], '*', 'k', {key}, 'e', {event})
local clock = redis.call('TIME')
local oldest = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) - retention
if oldest > 0 then
  redis.call('XTRIM', stream, 'MINID', '~', oldest)
end
redis.call('PEXPIRE', stream, retention)
"""


# KEYS: meta, index, expiry index, events
# ARGV: info json, vid, ttl ms, file key, expires at ms, now ms, meta prefix,
#       event json, retention ms, maxlen
COMMIT = (
    _COMMITTED
    + """
local previous = current[2] or ''
local ttl = tonumber(ARGV[3])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'info', ARGV[1], 'vid', ARGV[2], 'prev', previous)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], 0, ARGV[4])
redis.call('ZADD', KEYS[3], tonumber(ARGV[5]), ARGV[4])
for _, index in ipairs({KEYS[2], KEYS[3]}) do
  if redis.call('PTTL', index) < ttl then
    redis.call('PEXPIRE', index, ttl)
  end
end
-- Prune a bounded number of index entries whose file has expired.
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[6], 'LIMIT', 0, 64)
for _, member in ipairs(stale) do
  if redis.call('EXISTS', ARGV[7] .. member) == 0 then
    redis.call('ZREM', KEYS[2], member)
    redis.call('ZREM', KEYS[3], member)
  end
end
"""
    + _publish("ARGV[4]", "ARGV[#ARGV - 2]")
    + """
return previous
"""
)

# One node only. COMMIT with the file's only chunk and its digest list written
# first, at their final TTL: a small PUT in one round trip. Valkey refuses a
# script's first write when it is out of memory and never a later one, so an
# OOM leaves nothing behind.
# KEYS: meta, index, expiry index, chunk 0, digests, events
# ARGV: COMMIT's first seven, the chunk, the digests, their TTL in ms, then
#       COMMIT's last three (the event's)
COMMIT_ONE = (
    _COMMITTED
    + """
redis.call('SET', KEYS[4], ARGV[8], 'PX', ARGV[10])
redis.call('SET', KEYS[5], ARGV[9], 'PX', ARGV[10])
"""
    + COMMIT[len(_COMMITTED) :]
)

# One node only. A GET's start in one round trip: the file info, its version's
# digest list and, when it is no larger than ARGV[3] bytes, its first chunk
# (false otherwise, or when missing: the reader then fetches it as usual).
# KEYS: meta;  ARGV: chunk key prefix, digests key prefix, largest first chunk
OPEN = """
local meta = redis.call('HMGET', KEYS[1], 'info', 'vid')
if not meta[1] then
  return false
end
local head = ARGV[1] .. meta[2] .. ':0'
local chunk = false
if redis.call('STRLEN', head) <= tonumber(ARGV[3]) then
  chunk = redis.call('GET', head)
end
return {meta[1], redis.call('GET', ARGV[2] .. meta[2]), chunk}
"""

# KEYS: meta, index, expiry index, events
# ARGV: file key, the event's JSON up to its version, retention ms, maxlen
DELETE = (
    """
local meta = redis.call('HMGET', KEYS[1], 'info', 'vid')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if not meta[1] then
  return false
end
redis.call('DEL', KEYS[1])
"""
    + _publish("ARGV[1]", "ARGV[2] .. meta[2] .. '\"}'")
    + """
return meta[1]
"""
)

# KEYS: index;  ARGV: min bound, max bound, limit, meta prefix
# Returns the last member scanned, how many were scanned, then the info of each live file in order.
LIST = """
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {members[#members] or false, #members}
for _, member in ipairs(members) do
  local info = redis.call('HGET', ARGV[4] .. member, 'info')
  if info then
    out[#out + 1] = info
  end
end
return out
"""

# KEYS: index;  ARGV: min bound, limit, meta prefix
# Returns the last member scanned, how many were scanned, live files, their bytes.
USAGE = """
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, tonumber(ARGV[2]))
local files, bytes = 0, 0
for _, member in ipairs(members) do
  local info = redis.call('HGET', ARGV[3] .. member, 'info')
  if info then
    files = files + 1
    bytes = bytes + cjson.decode(info).size
  end
end
return {members[#members] or false, #members, files, bytes}
"""
