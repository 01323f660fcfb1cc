-- hold.lua — reserve quantity on a slot for one user, once per idempotency key.
--
-- KEYS[1..11] partition keys, as in lib.lua
-- KEYS[12]   (K_EXTRA) idempotency record   {p<N>}:idem:<slot>:<user>:<key>  string "<quantity>|<hold id>"
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

-- The readiness check reads the slot too (one HMGET, lib.lua slot_counters);
-- housekeeping that changed anything makes hold_request read it again.
local counters = slot_counters(ARGV[4])
if not counters.epoch then
    return {'state_unavailable'}
end
local now = clock_ms(ARGV[1])
local _, changed, due = housekeep(now, ARGV[2], ARGV[3], counters.due)
if changed then
    counters = nil
else
    counters.due = due
end

return hold_request(now, KEYS[K_EXTRA], {
    slot = ARGV[4], user = ARGV[5], quantity = tonumber(ARGV[6]), hold_id = ARGV[7],
    ttl_ms = ARGV[8], remember_ms = ARGV[9], max_held = ARGV[10], key = ARGV[11],
}, counters)
