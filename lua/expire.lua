-- expire.lua — the background sweep of one partition.
--
-- KEYS[1..11] partition keys, as in lib.lua
-- ARGV[1..3] clock, batch, retention (lib.lua): expires at most ARGV[2] due holds,
--            and forgets as many finished holds older than the retention (only
--            the sweep does: lib_housekeeping.lua forget_finished)
-- Returns    {'swept', expired count, 1 if more queue entries are due else 0}
-- Refusals   {'state_unavailable'}
-- Emits      one 'expired' hold event per expired hold, waitlist events (lapses,
--            offers), and works off the offer backlog (lib.lua capacity_freed)
-- Time       milliseconds, redis TIME unless ARGV[1] gives a clock

local now = ready(ARGV[1])
if not now then
    return {'state_unavailable'}
end
local expired = housekeep(now, ARGV[2], ARGV[3], false)  -- the sweep always looks
local more_finished = forget_finished(now, ARGV[2], ARGV[3])
for _, slot_id in ipairs(redis.call('SPOP', KEYS[K_WAIT_MORE], tonumber(ARGV[2]))) do
    capacity_freed(slot_id, now)
end
local more = 0
if more_finished or expiry_due(now) or redis.call('SCARD', KEYS[K_WAIT_MORE]) > 0 then
    more = 1
end
return {'swept', expired, more}
