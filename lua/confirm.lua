-- confirm.lua — turn a held hold into a booking.
--
-- KEYS[1..12] partition keys, as in lib.lua
-- ARGV[1..3] clock, housekeeping batch, retention (lib.lua)
-- ARGV[4]    hold id
-- ARGV[5]    user id that must own the hold; '' lets any caller (operators)
-- Returns    {'confirmed', event, stream entry id} | {'unchanged', hold} (was already confirmed)
-- Refusals   {'state_unavailable'} | {'not_found'} (unknown or not the caller's)
--            | {'group_member', hold} (a hold group's member: see group_members.lua)
--            | {'expired', hold} | {'cancelled', hold}
-- Emits      one hold event (status 'confirmed'), or one 'expired' event when
--            the hold's time had come and nobody had expired it yet
-- Time       milliseconds, redis TIME unless ARGV[1] gives a clock
--
-- Capacity was reserved when the hold was made, so a live hold always confirms.

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

if hold.st == 'confirmed' then
    return {'unchanged', cjson.encode(hold)}
elseif hold.st ~= 'held' then
    return {hold.st, cjson.encode(hold)}
end

release_held(hold)
redis.call('HINCRBY', KEYS[K_SLOTS], slot_field(hold.s, 'conf'), hold.q)
local event = transition(hold, 'confirmed', 'cf', now)
return {'confirmed', event, last_entry_id}
