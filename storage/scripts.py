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


def _event(key: str, event: str) -> str:
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


# Create-only (docs/protocol.md section 6.4): the key must have no file now,
# checked in the same atomic step that publishes.
_CREATE_ONLY = """
if ARGV[8] == '1' and current[1] then
  return redis.error_reply('VALISE_EXISTS the key already has a file')
end
"""

# The commit proper, after _COMMITTED; leaves the replaced version's info in `previous`.
_PUBLISH = """
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

# KEYS: meta, index, expiry index, events
# ARGV: info json, vid, ttl ms, file key, expires at ms, now ms, meta prefix,
#       create-only ('1' or '0'), then the event's three (json, retention ms, maxlen)
_STORED_EVENT = _event("ARGV[4]", "ARGV[#ARGV - 2]")
COMMIT = _COMMITTED + _CREATE_ONLY + _PUBLISH + _STORED_EVENT + "return previous\n"

# One node only. COMMIT with the file's only chunk and its digest list written
# first, at their final TTL: a small PUT in one round trip. Valkey refuses a
# script's first write when it is out of memory and never a later one, so an
# OOM leaves nothing behind.
# KEYS: meta, index, expiry index, chunk 0, digests, events
# ARGV: COMMIT's first eight, the chunk, the digests, their TTL in ms, then
#       COMMIT's last three (the event's)
COMMIT_ONE = (
    _COMMITTED
    + _CREATE_ONLY
    + """
redis.call('SET', KEYS[4], ARGV[9], 'PX', ARGV[11])
redis.call('SET', KEYS[5], ARGV[10], 'PX', ARGV[11])
"""
    + _PUBLISH
    + _STORED_EVENT
    + "return previous\n"
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
    + _event("ARGV[1]", "ARGV[2] .. meta[2] .. '\"}'")
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

# -- resumable uploads (docs/decisions/0010-resumable-uploads.md) ---------------
# KEYS: the upload's state hash, its digest list, the namespace's open-upload index
# ARGV: upload id, resume TTL in ms, the caller's owner token, then per script.
# Deadlines are Valkey's clock (TIME), the same for every server sharing it.
_UPLOAD = """
local function renew()
  local t = redis.call('TIME')
  local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'deadline', deadline)
  redis.call('PEXPIREAT', KEYS[1], deadline)
  redis.call('PEXPIREAT', KEYS[2], deadline)
  redis.call('ZADD', KEYS[3], deadline, ARGV[1])
  -- The index (ids and deadlines only) outlives its last entry's deadline by
  -- as much again, a minute at least, so that the next PUT counts the expired.
  local keep = tonumber(ARGV[2]) + math.max(tonumber(ARGV[2]), 60000)
  if redis.call('PTTL', KEYS[3]) < keep then
    redis.call('PEXPIRE', KEYS[3], keep)
  end
  return deadline
end
local function lost()
  local owner = redis.call('HGET', KEYS[1], 'owner')
  if not owner then
    return 'gone'
  end
  if owner ~= ARGV[3] then
    return 'superseded'
  end
  return false
end
local function deadline(again)
  if again == '1' then
    return renew()
  end
  return tonumber(redis.call('HGET', KEYS[1], 'deadline'))
end
"""

# The prelude of the scripts that act only for the upload's owner: any other
# caller gets {'gone'} or {'superseded'} and nothing changes.
_OWNED = (
    _UPLOAD
    + """
local why = lost()
if why then
  return {why}
end
"""
)

# ARGV[4]: most open uploads in the namespace, ARGV[5]: the upload's fixed facts (JSON).
# Returns {deadline or 0 when the namespace is full, expired entries pruned}.
CREATE_UPLOAD = (
    _UPLOAD
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[4]) then
  return {0, expired}
end
redis.call('HSET', KEYS[1], 'meta', ARGV[5], 'owner', ARGV[3], 'chunks', 0,
           'tail', '', 'tail_len', 0, 'tail_sha1', '')
return {renew(), expired}
"""
)

# Take the upload over (the newest connection wins). Returns false when it is
# gone, else {deadline, meta, chunks, tail token, tail length, tail SHA-1, digests}.
CLAIM_UPLOAD = (
    _UPLOAD
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
redis.call('HSET', KEYS[1], 'owner', ARGV[3])
local f = redis.call('HMGET', KEYS[1], 'meta', 'chunks', 'tail', 'tail_len', 'tail_sha1')
return {renew(), f[1], f[2], f[3], f[4], f[5], redis.call('GET', KEYS[2]) or ''}
"""
)

# Record chunk ARGV[4] (stored already) with its SHA-1 ARGV[5]; it replaces any tail.
# Returns {'ok', deadline, the replaced tail's token} or {why not}.
ADVANCE_UPLOAD = (
    _OWNED
    + """
local f = redis.call('HMGET', KEYS[1], 'chunks', 'tail')
if tonumber(f[1]) ~= tonumber(ARGV[4]) then
  return {'out_of_order'}
end
redis.call('APPEND', KEYS[2], ARGV[5])
redis.call('HSET', KEYS[1], 'chunks', tonumber(ARGV[4]) + 1, 'tail', '', 'tail_len', 0,
           'tail_sha1', '')
return {'ok', renew(), f[2]}
"""
)

# Still ours? ARGV[4] '1': bytes arrived, push the deadline. Returns {'ok', deadline} or {why not}.
TOUCH_UPLOAD = (
    _OWNED
    + """
return {'ok', deadline(ARGV[4])}
"""
)

# The connection ends and leaves the upload resumable. ARGV[4] as in TOUCH;
# the tail (ARGV[6] token, ARGV[7] length, ARGV[8] SHA-1) follows chunk
# ARGV[5] - 1 and is recorded only if that is the last chunk recorded.
# ARGV[9] '1': the caller stays the owner (a tus checkpoint between two PATCHes).
# Returns {'ok', deadline, the replaced tail's token, 1 if the tail was recorded}.
DETACH_UPLOAD = (
    _OWNED
    + """
local f = redis.call('HMGET', KEYS[1], 'chunks', 'tail')
local replaced, recorded = '', 0
if tonumber(f[1]) == tonumber(ARGV[5]) then
  recorded = 1
  if f[2] ~= ARGV[6] then
    replaced = f[2]
    redis.call('HSET', KEYS[1], 'tail', ARGV[6], 'tail_len', ARGV[7], 'tail_sha1', ARGV[8])
  end
end
if ARGV[9] ~= '1' then
  redis.call('HSET', KEYS[1], 'owner', '')
end
return {'ok', deadline(ARGV[4]), replaced, recorded}
"""
)

# Forget the upload (ABORT, a failed commit, lost bytes); ARGV[3] '' for any owner.
# Returns false if it is gone or another owner's, else {chunks, tail token}.
DISCARD_UPLOAD = """
local f = redis.call('HMGET', KEYS[1], 'owner', 'chunks', 'tail')
if not f[1] or (ARGV[3] ~= '' and f[1] ~= ARGV[3]) then
  return false
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return {f[2], f[3]}
"""

# COMMIT for a resumable upload: only its owner commits, and the upload's state
# goes in the same step. KEYS: meta, index, expiry index, state, digest list,
# upload index, events. ARGV: COMMIT's first eight, the owner token, the upload
# id, then the event's three. False: not the owner.
COMMIT_RESUMABLE = (
    _COMMITTED
    + """
if redis.call('HGET', KEYS[4], 'owner') ~= ARGV[9] then
  return false
end
"""
    + _CREATE_ONLY
    + _PUBLISH
    + _STORED_EVENT
    + """
redis.call('DEL', KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[6], ARGV[10])
return previous
"""
)
