-- archive.lua — take one finished slot and its holds out of Redis (sync/archive.py).
--
-- KEYS[1..11] partition keys, as in lib.lua
-- KEYS[12..] (K_EXTRA..) the idempotency record of each hold PostgreSQL knows
--            for the slot ({p<N>}:idem:<slot>:<user>:<key>), deleted with it
-- ARGV[1..3] clock, housekeeping batch, retention (lib.lua)
-- ARGV[4]    slot id
-- ARGV[5]    quantity PostgreSQL has confirmed on the slot
-- ARGV[6]    JSON array of [hold id, version] of every hold PostgreSQL has for
--            the slot: each is checked against Redis, then removed
-- Returns    {'archived', holds removed, event JSON}
-- Refusals   {'state_unavailable'} | {'not_found'} (not in Redis: already archived)
--            | {'busy', what} (a live hold, or someone waiting: try later)
--            | {'behind', what} (Redis knows more than PostgreSQL: drain, try later)
--            A refusal changes nothing but housekeeping.
-- Emits      one archive event on KEYS[K_EVENTS]: field 'a', {id, t, n} (slot, time, sequence)
-- Time       milliseconds, redis TIME unless ARGV[1] gives a clock
--
-- Holds Redis has and PostgreSQL does not list are finished ones whose events
-- are still in the stream (any live or confirmed one shows in the counters and
-- refuses): they are left to the finished queue's retention, as any finished hold.
-- Queue entries of removed holds stay: each is skipped when it reaches the head.

local now = ready(ARGV[1])
if not now then
    return {'state_unavailable'}
end
housekeep(now, ARGV[2], ARGV[3])

local slot_id = ARGV[4]
local function field(name)
    return slot_field(slot_id, name)
end

local counts = redis.call('HMGET', KEYS[K_SLOTS], field('cap'), field('held'), field('conf'))
if not counts[1] then
    return {'not_found'}
end
if tonumber(counts[2]) > 0 then
    return {'busy', 'held ' .. counts[2]}
end
if redis.call('HEXISTS', KEYS[K_WAITING], 'n:' .. slot_id) == 1 then
    return {'busy', 'waiting'}
end
if tonumber(counts[3]) ~= tonumber(ARGV[5]) then
    return {'behind', 'confirmed ' .. counts[3] .. ' in redis, ' .. ARGV[5] .. ' in postgres'}
end

local holds = cjson.decode(ARGV[6])
for _, pair in ipairs(holds) do
    local raw = redis.call('HGET', KEYS[K_HOLDS], pair[1])
    if raw then
        local hold = cjson.decode(raw)
        if hold.v > tonumber(pair[2]) then
            return {'behind', 'hold ' .. pair[1]}
        end
    end
end

local removed = 0
for _, pair in ipairs(holds) do
    removed = removed + redis.call('HDEL', KEYS[K_HOLDS], pair[1])
end
for n = K_EXTRA, #KEYS do
    redis.call('DEL', KEYS[n])
end
redis.call('HDEL', KEYS[K_SLOTS], field('cap'), field('rem'), field('held'), field('conf'),
    field('state'), field('meta'))
redis.call('HDEL', KEYS[K_WAITING], slot_id, 'n:' .. slot_id)
redis.call('SREM', KEYS[K_WAIT_MORE], slot_id)
local event = cjson.encode({id = slot_id, t = now, n = next_sequence()})
redis.call('XADD', KEYS[K_EVENTS], '*', 'a', event)
return {'archived', removed, event}
