-- cancel.lua — cancel a hold or a booking and give its quantity back at once.
--
-- KEYS[1..11] partition keys, as in lib.lua
-- ARGV[1..3] clock, housekeeping batch, retention (lib.lua)
-- ARGV[4]    hold id
-- ARGV[5]    user id that must own the hold; '' lets any caller (operators)
-- Returns    {'cancelled', event, stream entry id}
--            | {'unchanged', hold} (already cancelled, or expired: nothing to release)
-- Refusals   {'state_unavailable'} | {'not_found'} (unknown or not the caller's)
--            | {'group_member', hold} (a hold group's member: see group_members.lua)
-- Emits      one hold event (status 'cancelled') and the waitlist offers it allows, or one 'expired' event when
--            the hold's time had come and nobody had expired it yet
-- Time       milliseconds, redis TIME unless ARGV[1] gives a clock

local now = ready(ARGV[1])
if not now then
    return {'state_unavailable'}
end
housekeep(now, ARGV[2], ARGV[3])
local hold = owned_hold(ARGV[4], ARGV[5], now)
if not hold then
    return {'not_found'}
end
-- A member of a hold group changes only with its group (lua/group_members.lua).
if hold.g then
    return {'group_member', cjson.encode(hold)}
end

if hold.st == 'held' then
    release_held(hold)
elseif hold.st == 'confirmed' then
    redis.call('HINCRBY', KEYS[K_SLOTS], slot_field(hold.s, 'conf'), -hold.q)
else
    return {'unchanged', cjson.encode(hold)}
end
give_back(hold)
mark_finished(hold, now)
local event = transition(hold, 'cancelled', 'ca', now)
local entry_id = last_entry_id  -- before an offer to the waitlist appends its own
capacity_freed(hold.s, now)
return {'cancelled', event, entry_id}
