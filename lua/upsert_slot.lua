-- upsert_slot.lua — create a slot, or change its capacity, state or attributes.
--
-- KEYS[1..11] partition keys, as in lib.lua
-- ARGV[1..3] clock, housekeeping batch, retention (lib.lua)
-- ARGV[4]    slot id
-- ARGV[5]    mode: 'create' (refused if it exists) or 'update' (refused if it does not)
-- ARGV[6]    capacity (>= 0), or '' to keep it (required on create)
-- ARGV[7]    state 'open' | 'closed', or '' to keep it (create defaults to 'open')
-- ARGV[8]    attributes as a JSON object (label, starts_at, ends_at), or '' to keep them
-- Returns    {'created' | 'updated', capacity, remaining, held, confirmed, state, attributes}
-- Refusals   {'state_unavailable'} | {'not_found'} | {'exists'}
--            | {'capacity_below', held + confirmed}
-- Emits      one slot event on KEYS[7]: field 's' with the slot as JSON; then the
--            waitlist offers that the new capacity or an opened slot allows
-- Time       milliseconds, redis TIME unless ARGV[1] gives a clock

local now = ready(ARGV[1])
if not now then
    return {'state_unavailable'}
end
housekeep(now, ARGV[2], ARGV[3])

local slot_id, mode = ARGV[4], ARGV[5]
local function field(name)
    return slot_field(slot_id, name)
end

local current = redis.call('HMGET', KEYS[K_SLOTS], field('cap'), field('held'), field('conf'), field('state'), field('meta'))
local exists = current[1] ~= false
if mode == 'create' and exists then
    return {'exists'}
elseif mode == 'update' and not exists then
    return {'not_found'}
end

local held = tonumber(current[2] or '0')
local confirmed = tonumber(current[3] or '0')
local capacity = tonumber(current[1] or '0')
if ARGV[6] ~= '' then
    capacity = tonumber(ARGV[6])
end
-- Lowering capacity below what is already promised would oversell.
if capacity < held + confirmed then
    return {'capacity_below', held + confirmed}
end
local state = current[4] or 'open'
if ARGV[7] ~= '' then
    state = ARGV[7]
end
local meta = current[5] or '{}'
if ARGV[8] ~= '' then
    meta = ARGV[8]
end
local remaining = capacity - held - confirmed

redis.call('HSET', KEYS[K_SLOTS],
    field('cap'), capacity, field('rem'), remaining, field('held'), held,
    field('conf'), confirmed, field('state'), state, field('meta'), meta)
redis.call('XADD', KEYS[K_EVENTS], '*', 's', cjson.encode({
    id = slot_id, cap = capacity, rem = remaining, held = held, conf = confirmed,
    state = state, meta = meta, t = now, n = next_sequence(),
}))
local outcome = 'updated'
if not exists then
    outcome = 'created'
elseif state == 'open' then
    capacity_freed(slot_id, now)
    local counts = redis.call('HMGET', KEYS[K_SLOTS], field('rem'), field('held'))
    remaining, held = tonumber(counts[1]), tonumber(counts[2])
end
return {outcome, capacity, remaining, held, confirmed, state, meta}
