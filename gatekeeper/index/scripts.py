"""Lua scripts run inside Redis. Each touches keys of one hash tag only, so each is atomic and runs on
one node, also on Redis Cluster; every key a script touches is passed in KEYS."""

# Read every fact about one number in one round trip.
# KEYS: pointer, suppressions, objections(T), data(T,G,S), spill(T,G,S)
# ARGV: tenant, expected "G:bits" ("" when the caller knows no generation), field
# Reply: {1, generation, suppressions, objections, data} or, when the caller's generation is stale,
#        {0, current generation} so it can recompute the keys and ask again.
LOOKUP = r"""
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (cur or '') ~= ARGV[2] then return {0, cur} end
local s = redis.call('HGET', KEYS[2], ARGV[3])
local o = redis.call('HGET', KEYS[3], ARGV[3])
local d = false
if cur then
  d = redis.call('HGET', KEYS[4], ARGV[3])
  if d == '\0' then d = redis.call('HGET', KEYS[5], ARGV[3]) end
end
return {1, cur, s, o, d}
"""

# Shared by MERGE and APPEND: `old` (a record, version byte first) with the entries of `new` (a bare run
# of entries) that it does not hold yet. Returns the merged record (nil when nothing is new) and the count.
_MERGED = r"""
local function merged(old, new)
  local seen, out, pos, added = {}, {old}, 2, 0
  while pos <= #old do
    local n = string.byte(old, pos)
    seen[string.sub(old, pos, pos + n)] = true
    pos = pos + n + 1
  end
  pos = 1
  while pos <= #new do
    local n = string.byte(new, pos)
    local e = string.sub(new, pos, pos + n)
    if not seen[e] then
      seen[e] = true
      out[#out + 1] = e
      added = added + 1
    end
    pos = pos + n + 1
  end
  if added == 0 then return nil, 0 end
  return table.concat(out), added
end
"""

# Merge fact entries into records of one tenant generation (import and single upserts).
# KEYS: pointer, data, spill, suppressions
# ARGV: pointer field ("T" or "T#b"), expected "G:bits", compact value limit, then field, entries pairs
# An entry already present is not added twice; a record longer than the limit moves to the spill hash;
# facts for a suppressed number are not stored. Reply: {new records, added entries, skipped}.
MERGE = (
    _MERGED
    + r"""
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (cur or '') ~= ARGV[2] then return redis.error_reply('STALE generation ' .. tostring(cur)) end
local limit = tonumber(ARGV[3])
local created, added, skipped = 0, 0, 0
for i = 4, #ARGV, 2 do
  local f, new = ARGV[i], ARGV[i + 1]
  if redis.call('HEXISTS', KEYS[4], f) == 1 then
    skipped = skipped + 1
  else
    local old = redis.call('HGET', KEYS[2], f)
    local spilled = false
    if old == '\0' then
      old = redis.call('HGET', KEYS[3], f)
      spilled = true
    end
    if not old then
      old = '\1'
      created = created + 1
    end
    local value, n = merged(old, new)
    added = added + n
    if value then
      if #value > limit then
        redis.call('HSET', KEYS[3], f, value)
        redis.call('HSET', KEYS[2], f, '\0')
      else
        redis.call('HSET', KEYS[2], f, value)
        if spilled then redis.call('HDEL', KEYS[3], f) end
      end
    end
  end
end
return {created, added, skipped}
"""
)

# Append entries to records of a plain hash (objections registered one by one, suppressions).
# KEYS: hash; ARGV: field, entries pairs. Reply: added entries.
APPEND = (
    _MERGED
    + r"""
local added = 0
for i = 1, #ARGV, 2 do
  local f = ARGV[i]
  local value, n = merged(redis.call('HGET', KEYS[1], f) or '\1', ARGV[i + 1])
  if value then redis.call('HSET', KEYS[1], f, value) end
  added = added + n
end
return added
"""
)

# Switch one tag of a tenant to a new generation and drop the old generation's keys in that tag.
# KEYS: pointer, then the old generation's keys; ARGV: tenant, new "G:bits", build field
SWITCH = r"""
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[3])
if #KEYS > 1 then redis.call('UNLINK', unpack(KEYS, 2)) end
return 1
"""

# Erase one number in one tag: remove it from every tenant generation (current and being built) and from
# the objections, and leave a global suppression entry. KEYS: pointer, suppressions, then the hashes to
# clear; ARGV: field, suppression entry, fingerprint of the pointer hash the caller computed the keys
# from (the script refuses when a generation changed in between). Reply: per hash to clear, the fields
# removed from it (0 or 1), in KEYS order.
ERASE = r"""
local all = redis.call('HGETALL', KEYS[1])
local parts = {}
for i = 1, #all, 2 do parts[#parts + 1] = all[i] .. '=' .. all[i + 1] end
table.sort(parts)
if table.concat(parts, ',') ~= ARGV[3] then return redis.error_reply('STALE pointer') end
local removed = {}
for i = 3, #KEYS do removed[#removed + 1] = redis.call('HDEL', KEYS[i], ARGV[1]) end
local old = redis.call('HGET', KEYS[2], ARGV[1]) or '\1'
redis.call('HSET', KEYS[2], ARGV[1], old .. ARGV[2])
return removed
"""

# Count records into (or out of) a tenant's summary, and for an import also stamp it, but only while the
# summary still describes the generation the records were counted in. KEYS: tenants; ARGV: tenant, change
# in records, generation number, imported_at and source ("" keeps them). Reply: 1 if counted, else 0.
COUNT = r"""
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local info = cjson.decode(raw)
if tostring(info.generation) ~= ARGV[3] then return 0 end
info.records = math.max(0, (tonumber(info.records) or 0) + tonumber(ARGV[2]))
if ARGV[4] ~= '' then info.imported_at = ARGV[4] end
if ARGV[5] ~= '' then info.source = ARGV[5] end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(info))
return 1
"""

# The import lock: extended (PEXPIRE) or released only by its holder. KEYS: lock; ARGV: token[, ms].
LOCK_EXTEND = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
LOCK_RELEASE = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Many lookups of one tenant in one call, for scrubs on a standalone Redis (not Redis Cluster: the keys
# of different numbers live in different slots there, so scrubs use pipelined LOOKUPs instead). The key
# names are built here exactly as gatekeeper/index/keys.py builds them (a test compares both paths).
# ARGV: prefix, tenant, expected "G:bits", then tag, sub-bucket, field for each number.
# Reply: per number {1, generation, suppressions, objections, data} or {0, current generation}.
LOOKUP_BULK = r"""
local p, t, expected = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV, 3 do
  local base = p .. ':{' .. ARGV[i] .. '}:'
  local f = ARGV[i + 2]
  local cur = redis.call('HGET', base .. 'g', t)
  if (cur or '') ~= expected then
    out[#out + 1] = {0, cur}
  else
    local s = redis.call('HGET', base .. 's', f)
    local o = redis.call('HGET', base .. 'o:' .. t, f)
    local d = false
    if cur then
      local g = string.match(cur, '^(%d+)')
      local bucket = t .. ':' .. g .. ':' .. ARGV[i + 1]
      d = redis.call('HGET', base .. 'd:' .. bucket, f)
      if d == '\0' then d = redis.call('HGET', base .. 'x:' .. bucket, f) end
    end
    out[#out + 1] = {1, cur, s, o, d}
  end
end
return out
"""
