-- hold.lua — reserve quantity on a slot for one user, once per idempotency key.
--
-- KEYS[1..12] partition keys, as in lib.lua
-- KEYS[13]   (K_EXTRA) idempotency record   {p<N>}:idem:<slot>:<user>:<key>  string "<quantity>|<hold id>"
-- ARGV[1..3] clock, housekeeping batch, retention (lib.lua)
-- ARGV[4]    slot id
-- ARGV[5]    user id
-- ARGV[6]    quantity (>= 1)
-- ARGV[7]    hold id to use if a new hold is made (encodes the slot)
-- ARGV[8]    hold lifetime, ms
-- ARGV[9]    idempotency memory, ms
-- ARGV[10]   most units one user may have held on one slot
-- ARGV[11]   the idempotency key as sent, recorded on the hold
-- Returns    {'created', hold}  |  {'replayed', hold}  (the hold as JSON, current state;
--            a replayed hold that is due is expired first)
-- Refusals   {'state_unavailable'} | {'not_found'} | {'closed'} | {'capacity', remaining}
--            ({'capacity', 0} while anyone waits on the slot's waitlist)
--            | {'user_limit', held} | {'idempotency_mismatch', quantity}
--            | {'replay_archived', hold id, quantity} (hold forgotten after retention)
--            A refusal changes nothing but housekeeping and never binds the key.
-- Emits      one hold event (status 'held') on KEYS[7] when a hold is made (and
--            waitlist offers when housekeeping expired something)
-- Time       milliseconds, redis TIME unless ARGV[1] gives a clock

local now = ready(ARGV[1])
if not now then
    return {'state_unavailable'}
end
housekeep(now, ARGV[2], ARGV[3])

local slot_id, user_id, quantity = ARGV[4], ARGV[5], tonumber(ARGV[6])

local remembered = redis.call('GET', KEYS[K_EXTRA])
if remembered then
    local first, hold_id = split_pair(remembered)
    local first_quantity = tonumber(first)
    if first_quantity ~= quantity then
        return {'idempotency_mismatch', first_quantity}
    end
    local hold = load_hold(hold_id)
    if not hold then
        return {'replay_archived', hold_id, first_quantity}
    end
    -- Housekeeping is bounded, so this hold may be due and not yet expired.
    settle(hold, now)
    return {'replayed', cjson.encode(hold)}
end

local refused = hold_refusal(slot_id, user_id, quantity, ARGV[10])
if refused then
    return refused
end

local hold = {
    i = ARGV[7], s = slot_id, u = user_id, q = quantity, st = 'held',
    c = now, e = now + tonumber(ARGV[8]), v = 1,
}
take_held(hold)
remember_key(KEYS[K_EXTRA], hold, ARGV[9])
return {'created', save_hold(hold, ARGV[11])}
