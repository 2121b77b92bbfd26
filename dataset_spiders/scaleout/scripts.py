"""The Lua scripts of the shared state (``scaleout/state.py``): each runs atomically in Redis.

Every script gets the key prefix and the epoch first, and answers ``{"epoch"}`` when Redis
does not hold that epoch (it restarted empty, or a rebuild is under way): nothing is decided
against state that was lost. Keys, under the prefix ``P``:

- ``epoch``: this state's generation; ``workers`` (id -> staging folder); ``alive:<id>`` (lease)
- ``kept:<group>``: image id -> the worker that admitted it, ``""`` once its line is written
- ``held:<worker>``: admitted images not yet settled (``group NUL id`` -> ``sha NUL pixels NUL path``)
- ``flight:<worker>``: candidates handed out, not settled (``group NUL index`` -> a queued record)
- ``pending`` (group -> in flight), ``cursor`` (group -> next index), ``spare:<group>`` (zset)
- ``bytes``, ``pixels``: digests of kept images -> their reference; ``learned``: placeholders;
  ``urls:<site|sha>``: URLs that served those bytes; ``refs:<site|sha>``: kept copies of them
- ``queue``: listed records waiting for a worker (isic); ``listed``: the ids queued so far
- ``nearref``: perceptual hash of a kept image -> its reference; ``near:<band>``: the hashes
  with that band (``dataset/near_copies.py``); ``nearof``: ``group NUL id`` -> ``hash|distance``
- ``answer:<worker>:<n>``: a call's answer, for a while, so that the call sent again gets it
  (``once_per_call``)
"""

def once_per_call(body: str) -> str:
    """``body`` made idempotent per call: its last two ARGV are the call's id (the worker's id
    and a number) and how many milliseconds its answer is kept. A call sent again (its first
    answer lost to a timeout after Redis ran it) gets the first answer back and changes nothing;
    without this, an admission retried after a stall found its own first admission and answered
    ``present``, and the image was never kept. An ``epoch`` answer is not kept: nothing ran.
    A worker no longer among the ``workers`` (its share was taken over) is answered ``fenced``."""
    return """
local TTL = table.remove(ARGV)
local CALL = table.remove(ARGV)
local KEY = ARGV[1] .. 'answer:' .. CALL
local earlier = redis.call('GET', KEY)
if earlier then return cjson.decode(earlier) end
if redis.call('GET', ARGV[1] .. 'epoch') == ARGV[2] and
   redis.call('HEXISTS', ARGV[1] .. 'workers', string.match(CALL, '^(.*):%d+$')) == 0 then
  return {'fenced'}  -- its share was taken over (it was frozen past its lease): it must stop
end
local answer = (function()
""" + body + """
end)()
if not (type(answer) == 'table' and answer[1] == 'epoch') then
  redis.call('SET', KEY, cjson.encode(answer), 'PX', TTL)
end
return answer
"""


#: ARGV: P, worker, terms (JSON). The run's terms (spider, target, selection), agreed: a worker
#: whose terms differ from those of a live worker gets theirs back (it is refused); else its
#: terms become the run's (when the workers before it have all ended, a new run begins).
AGREE = """
local P, me, terms = ARGV[1], ARGV[2], ARGV[3]
local current = redis.call('GET', P .. 'terms')
if current and current ~= terms then
  for _, w in ipairs(redis.call('HKEYS', P .. 'workers')) do
    if w ~= me and redis.call('EXISTS', P .. 'alive:' .. w) == 1 then return current end
  end
end
redis.call('SET', P .. 'terms', terms)
return false
"""

#: ARGV: P, worker, milliseconds. The rebuild role, only while there is no epoch (a worker that
#: saw none a moment ago must not rebuild over the state another has just rebuilt).
CLAIM_REBUILD = """
local P = ARGV[1]
if redis.call('EXISTS', P .. 'epoch') == 1 then return 0 end
if redis.call('SET', P .. 'rebuilding', ARGV[2], 'NX', 'PX', ARGV[3]) then return 1 end
return 0
"""

PRELUDE = """
local P = ARGV[1]
if redis.call('GET', P .. 'epoch') ~= ARGV[2] then return {'epoch'} end
"""

#: Near-copies by perceptual hash (``dataset/near_copies.py``, whose ``bands`` this mirrors): the bands of
#: a hash; the nearest kept image within ``maxd`` bits; adding a kept image; forgetting one.
NEAR = """
local POP = {[0] = 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4}
local function near_bands(ph, maxd)
  local n, out = maxd + 1, {}
  for i = 0, maxd do
    local a, b = math.floor(16 * i / n), math.floor(16 * (i + 1) / n)
    table.insert(out, P .. 'near:' .. i .. ':' .. string.sub(ph, a + 1, b))
  end
  return out
end
local function near_copy(ph, maxd)
  local best, bestd = nil, maxd + 1
  for _, band in ipairs(near_bands(ph, maxd)) do
    for _, other in ipairs(redis.call('SMEMBERS', band)) do
      local d = 0
      for i = 1, 16 do
        d = d + POP[bit.bxor(tonumber(string.sub(ph, i, i), 16), tonumber(string.sub(other, i, i), 16))]
      end
      if d < bestd then best, bestd = other, d end
    end
  end
  if best then return redis.call('HGET', P .. 'nearref', best), bestd end
  return nil, bestd
end
local function near_add(ph, maxd, ref, g, id)
  redis.call('HSET', P .. 'nearof', g .. '\\0' .. id, ph .. '|' .. maxd)
  if redis.call('HSETNX', P .. 'nearref', ph, ref) == 1 then
    for _, band in ipairs(near_bands(ph, maxd)) do redis.call('SADD', band, ph) end
  end
end
local function near_forget(g, id)
  local held = redis.call('HGET', P .. 'nearof', g .. '\\0' .. id)
  if not held then return end
  redis.call('HDEL', P .. 'nearof', g .. '\\0' .. id)
  local ph, maxd = string.match(held, '^(%x+)|(%d+)$')
  local ref = redis.call('HGET', P .. 'nearref', ph)
  if ref and cjson.decode(ref).id == id and cjson.decode(ref).group == g then
    redis.call('HDEL', P .. 'nearref', ph)
    for _, band in ipairs(near_bands(ph, tonumber(maxd))) do redis.call('SREM', band, ph) end
  end
end
"""

#: ARGV: P, epoch, worker, group, total candidates, target (-1: none), slack, how many (the
#: worker's own room), how many of the group this worker has in flight. Up to that many
#: candidates of the group (spares first, then the list in order), as far as the group's room
#: allows (all workers together: target + slack, counting those kept and in flight; each worker
#: its share of it): ``{'take', kept, index...}``, or ``full``, ``done`` (out of candidates,
#: none in flight) or ``wait`` (none may go now).
TAKE = PRELUDE + """
local w, g = ARGV[3], ARGV[4]
local total, target, slack, want = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local mine = tonumber(ARGV[9])
local kept = redis.call('HLEN', P .. 'kept:' .. g)
if target >= 0 and kept >= target then return {'full', kept} end
local pending = tonumber(redis.call('HGET', P .. 'pending', g) or '0')
local cursor = tonumber(redis.call('HGET', P .. 'cursor', g) or '0')
local spares = redis.call('ZCARD', P .. 'spare:' .. g)
if cursor >= total and spares == 0 then
  if pending == 0 then return {'done', kept} end
  return {'wait', kept}
end
local room = want
if target >= 0 then
  local workers = math.max(1, redis.call('HLEN', P .. 'workers'))
  local share = math.ceil((target + slack - kept) / workers)
  room = math.min(room, target + slack - kept - pending, share - mine)
end
if room <= 0 then return {'wait', kept} end
local out = {'take', kept}
local flights = {}
local popped = redis.call('ZPOPMIN', P .. 'spare:' .. g, room)
for i = 1, #popped, 2 do table.insert(out, tonumber(popped[i])) end
while #out - 2 < room and cursor < total do
  table.insert(out, cursor)
  cursor = cursor + 1
end
redis.call('HSET', P .. 'cursor', g, cursor)
redis.call('HINCRBY', P .. 'pending', g, #out - 2)
for i = 3, #out do table.insert(flights, g .. '\\0' .. out[i]); table.insert(flights, '') end
redis.call('HSET', P .. 'flight:' .. w, unpack(flights))
return out
"""

#: ARGV: P, epoch, worker, group, id, sha, pixels, site|sha, url, target (-1), threshold,
#: counted (1/0), dedupe (1/0), reference, path, perceptual hash ('' if none), near distance
#: (-1: off)
ADMIT = PRELUDE + NEAR + """
local w, g, id, sha, px, key, url = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local ph, maxd = ARGV[16] or '', tonumber(ARGV[17] or '-1')
local target, threshold = tonumber(ARGV[10]), tonumber(ARGV[11])
local counted, dedupe, ref = ARGV[12] == '1', ARGV[13] == '1', ARGV[14]
if counted and redis.call('HEXISTS', P .. 'kept:' .. g, id) == 1 then return {'present'} end
if threshold > 0 and sha ~= '' then
  if redis.call('SISMEMBER', P .. 'learned', key) == 1 then return {'placeholder'} end
  redis.call('SADD', P .. 'urls:' .. key, url)
  if redis.call('SCARD', P .. 'urls:' .. key) >= threshold then
    redis.call('SADD', P .. 'learned', key)
    redis.call('DEL', P .. 'urls:' .. key)
    local refs = redis.call('HGETALL', P .. 'refs:' .. key)
    redis.call('DEL', P .. 'refs:' .. key)
    local out = {'learned'}
    for i = 1, #refs, 2 do
      local r = cjson.decode(refs[i + 1])
      -- a settled copy is withdrawn by this worker; an unsettled one by its owner, when it settles
      if redis.call('HGET', P .. 'kept:' .. r.group, refs[i]) == '' then table.insert(out, refs[i + 1]) end
    end
    return out
  end
end
if counted and dedupe then
  local first = sha ~= '' and redis.call('HGET', P .. 'bytes', sha)
  first = first or (px ~= '' and redis.call('HGET', P .. 'pixels', px))
  if first then return {'duplicate', first} end
end
if counted and ph ~= '' and maxd >= 0 then
  local near, d = near_copy(ph, maxd)
  if near then return {'near', near, d} end
end
if counted then
  local kept = redis.call('HLEN', P .. 'kept:' .. g)
  if target >= 0 and kept >= target then return {'surplus', kept} end
  redis.call('HSET', P .. 'kept:' .. g, id, w)
  redis.call('HSET', P .. 'held:' .. w, g .. '\\0' .. id, sha .. '\\0' .. px .. '\\0' .. ARGV[15])
  if dedupe then
    if sha ~= '' then redis.call('HSETNX', P .. 'bytes', sha, ref) end
    if px ~= '' then redis.call('HSETNX', P .. 'pixels', px, ref) end
  end
  if threshold > 0 and sha ~= '' then redis.call('HSET', P .. 'refs:' .. key, id, ref) end
  if ph ~= '' and maxd >= 0 then near_add(ph, maxd, ref, g, id) end
  return {'ok', kept + 1}
end
return {'ok', 0}
"""

#: ARGV: P, epoch, worker, group, flight field ('' if none), id, kept (1/0), sha, pixels,
#: site|sha, spare index (-1: none)
SETTLE = PRELUDE + """
local w, g, field, id, kept = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7] == '1'
local sha, px, key, spare = ARGV[8], ARGV[9], ARGV[10], tonumber(ARGV[11])
if field ~= '' and redis.call('HDEL', P .. 'flight:' .. w, field) == 1 then
  redis.call('HINCRBY', P .. 'pending', g, -1)
  if spare >= 0 then redis.call('ZADD', P .. 'spare:' .. g, spare, spare) end
end
if kept then
  redis.call('HDEL', P .. 'held:' .. w, g .. '\\0' .. id)
  if key ~= '' and redis.call('SISMEMBER', P .. 'learned', key) == 1 then return {'withdraw'} end
  if redis.call('HEXISTS', P .. 'kept:' .. g, id) == 1 then redis.call('HSET', P .. 'kept:' .. g, id, '') end
end
return {'ok'}
"""

#: ARGV: P, epoch, group, id, sha, pixels, site|sha. An admitted image given back (its file
#: could not be written, or it was withdrawn): it no longer counts, its bytes are forgotten.
REVOKE = PRELUDE + NEAR + """
local g, id, sha, px, key = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
redis.call('HDEL', P .. 'kept:' .. g, id)
near_forget(g, id)
local function forget(hash, digest)
  if digest == '' then return end
  local ref = redis.call('HGET', P .. hash, digest)
  if ref and cjson.decode(ref).id == id then redis.call('HDEL', P .. hash, digest) end
end
forget('bytes', sha)
forget('pixels', px)
if key ~= '' then redis.call('HDEL', P .. 'refs:' .. key, id) end
for _, w in ipairs(redis.call('HKEYS', P .. 'workers')) do
  redis.call('HDEL', P .. 'held:' .. w, g .. '\\0' .. id)
end
return {'ok', redis.call('HLEN', P .. 'kept:' .. g)}
"""

#: ARGV: P, epoch, group, id, perceptual hash ('' if none), near distance (-1: off), reference.
#: An image found in place (an earlier run kept it): it counts, and is a near-copy's original.
PRESENT = PRELUDE + NEAR + """
redis.call('HSETNX', P .. 'kept:' .. ARGV[3], ARGV[4], '')
local ph, maxd = ARGV[5] or '', tonumber(ARGV[6] or '-1')
if ph ~= '' and maxd >= 0 then near_add(ph, maxd, ARGV[7], ARGV[3], ARGV[4]) end
return {'ok', redis.call('HLEN', P .. 'kept:' .. ARGV[3])}
"""

#: ARGV: P, epoch, dead worker, then the ids (group NUL id) whose files reached their final
#: names. Gives a dead worker's share back: its candidates to the spares (or records to the
#: queue), its admissions that never reached disk out of the counts.
REAP = PRELUDE + NEAR + """
local dead = ARGV[3]
if redis.call('HDEL', P .. 'workers', dead) == 0 then return {'gone'} end
local on_disk = {}
for i = 4, #ARGV do on_disk[ARGV[i]] = true end
local flights = redis.call('HGETALL', P .. 'flight:' .. dead)
for i = 1, #flights, 2 do
  local g, index = string.match(flights[i], '^(.*)%z(%d+)$')
  redis.call('HINCRBY', P .. 'pending', g, -1)
  if flights[i + 1] ~= '' then redis.call('LPUSH', P .. 'queue', flights[i + 1])
  else redis.call('ZADD', P .. 'spare:' .. g, index, index) end
end
local given, kept = 0, 0
local held = redis.call('HGETALL', P .. 'held:' .. dead)
for i = 1, #held, 2 do
  local g, id = string.match(held[i], '^(.-)%z(.*)$')
  local sha, px = string.match(held[i + 1], '^(.-)%z(.-)%z')
  if on_disk[held[i]] then
    redis.call('HSET', P .. 'kept:' .. g, id, '')
    kept = kept + 1
  elseif redis.call('HGET', P .. 'kept:' .. g, id) == dead then
    redis.call('HDEL', P .. 'kept:' .. g, id)
    if sha ~= '' then redis.call('HDEL', P .. 'bytes', sha) end
    if px ~= '' then redis.call('HDEL', P .. 'pixels', px) end
    near_forget(g, id)
    given = given + 1
  end
end
redis.call('DEL', P .. 'flight:' .. dead, P .. 'held:' .. dead, P .. 'alive:' .. dead)
return {'ok', #flights / 2, given, kept}
"""

#: ARGV: P, epoch, worker, id, record. A listed record goes to the queue (isic: one lister),
#: once: a lister that took over from a stopped one lists from the start again.
ENQUEUE = PRELUDE + """
if redis.call('HSETNX', P .. 'listed', ARGV[4], '1') == 1 then redis.call('RPUSH', P .. 'queue', ARGV[5]) end
return {'ok', redis.call('LLEN', P .. 'queue')}
"""

#: ARGV: P, epoch, worker, target (-1), slack. The next queued record, for this worker (which
#: asks only when it has room of its own), if the selection has room for it.
DEQUEUE = PRELUDE + """
local w, target, slack = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local kept = redis.call('HLEN', P .. 'kept:')
if target >= 0 and kept >= target then return {'full', kept} end
local pending = tonumber(redis.call('HGET', P .. 'pending', '') or '0')
if target >= 0 and kept + pending >= target + slack then return {'wait', kept} end
local record = redis.call('LPOP', P .. 'queue')
if not record then return {'empty', kept, pending} end
local index = redis.call('INCR', P .. 'taken')
redis.call('HINCRBY', P .. 'pending', '', 1)
redis.call('HSET', P .. 'flight:' .. w, '\\0' .. index, record)
return {'take', kept, index, record}
"""
