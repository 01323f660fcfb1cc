-- wait_join.lua — join a slot's waitlist, once per idempotency key.
--
-- KEYS[1..11] partition keys, as in lib.lua
-- KEYS[12]   (K_EXTRA) idempotency record {p<N>}:widem:<slot>:<user>:<key>
--            string "<quantity>|<entry id>"
-- ARGV[1..3] clock, housekeeping batch, retention (lib.lua)
-- ARGV[4]    slot id
-- ARGV[5]    user id
-- ARGV[6]    quantity (>= 1)
-- ARGV[7]    entry id to use if an entry is made ("<slot>-<16 hex>", like a hold id)
-- ARGV[8]    entry lifetime (lapse), ms
-- ARGV[9]    offer lifetime, ms (kept in the partition for capacity_freed)
-- ARGV[10]   idempotency memory, ms
-- ARGV[11]   most waiting entries one user may have on one slot
-- ARGV[12]   the idempotency key as sent, recorded on the entry's first event
-- Returns    {'created' | 'replayed', entry, position (0 unless waiting), hold ('' unless offered)}
-- Refusals   {'state_unavailable'} | {'not_found'} | {'closed'}
--            | {'waiting_limit', waiting} | {'idempotency_mismatch', quantity}
--            | {'replay_archived', entry id, quantity} (entry forgotten after retention)
--            A refusal changes nothing but housekeeping and never binds the key.
-- Emits      'waitlist.waiting' (an entry event 'w' with st 'waiting'), and when the
--            slot takes the entry at once, its hold event and the 'offered' entry event
-- Time       milliseconds, redis TIME unless ARGV[1] gives a clock

local now = ready(ARGV[1])
if not now then
    return {'state_unavailable'}
end
housekeep(now, ARGV[2], ARGV[3])

local slot_id, user_id, quantity = ARGV[4], ARGV[5], tonumber(ARGV[6])

local function answer(tag, entry)
    local position, hold = 0, ''
    if entry.st == 'waiting' then
        local min = wait_range(slot_id)
        position = redis.call('ZLEXCOUNT', KEYS[K_WAIT_ORDER], min, '(' .. wait_member(entry)) + 1
    elseif entry.st == 'offered' then
        hold = redis.call('HGET', KEYS[K_HOLDS], entry.h) or ''
    end
    return {tag, cjson.encode(entry), position, hold}
end

local remembered = redis.call('GET', KEYS[K_EXTRA])
if remembered then
    local first, entry_id = split_pair(remembered)
    local first_quantity = tonumber(first)
    if first_quantity ~= quantity then
        return {'idempotency_mismatch', first_quantity}
    end
    local entry = load_entry(entry_id)
    if not entry then
        return {'replay_archived', entry_id, first_quantity}
    end
    return answer('replayed', entry)
end

local state = redis.call('HGET', KEYS[K_SLOTS], slot_field(slot_id, 'state'))
if not state then
    return {'not_found'}
end
if state ~= 'open' then
    return {'closed'}
end
local waiting = tonumber(redis.call('HGET', KEYS[K_WAITING], 'u:' .. slot_id .. ':' .. user_id) or '0')
if waiting >= tonumber(ARGV[11]) then
    return {'waiting_limit', waiting}
end

redis.call('HSET', KEYS[K_WAITING], 'offer_ms', ARGV[9])
local entry = {
    i = ARGV[7], s = slot_id, u = user_id, q = quantity, st = 'waiting',
    c = now, e = now + tonumber(ARGV[8]), v = 1,
    n = redis.call('HINCRBY', KEYS[K_WAITING], 'seq', 1),
}
start_waiting(entry)
redis.call('SET', KEYS[K_EXTRA], quantity .. '|' .. entry.i, 'PX', ARGV[10])
save_entry(entry, ARGV[12])
-- Nobody ahead and room now: the entry is offered at once.
local offered = offer_head(slot_id, now)
if offered then
    entry = offered
end
return answer('created', entry)
