"""Lua scripts: the steps that must be atomic. All keys of one script share a hash tag.

COMMIT makes a verified upload visible in one step and is idempotent: run twice
with the same vid (a retry after a dropped reply) it changes nothing the second
time and returns the same previous version, so the retry can never schedule
the new version for deletion (docs/decisions/0002-atomic-commit.md).
"""

from __future__ import annotations

# KEYS: meta, index, expiry index
# ARGV: info json, vid, ttl ms, file key, expires at ms, now ms, meta prefix
COMMIT = """
local current = redis.call('HMGET', KEYS[1], 'vid', 'info', 'prev')
if current[1] == ARGV[2] then
  return current[3] or ''
end
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
return previous
"""

# KEYS: meta, index, expiry index;  ARGV: file key
DELETE = """
local info = redis.call('HGET', KEYS[1], 'info')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if not info then
  return false
end
redis.call('DEL', KEYS[1])
return info
"""

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
