-- confirm.lua — turn a held hold into a booking, whole or in part.
--
-- KEYS[1..11] partition keys, as in lib.lua
-- ARGV[1..3] clock, housekeeping batch, retention (lib.lua)
-- ARGV[4]    hold id
-- ARGV[5]    user id that must own the hold; '' lets any caller (operators)
-- ARGV[6]    quantity to confirm, 1..the hold's; '' confirms all of it
-- Returns    {'confirmed', event, stream entry id} (r = units given back when partial)
--            | {'unchanged', hold} (was already confirmed, with this quantity or none)
-- Refusals   {'state_unavailable'} | {'not_found'} (unknown or not the caller's)
--            | {'group_member', hold} (a hold group's member: see group_members.lua)
--            | {'expired', hold} | {'cancelled', hold}
--            | {'quantity_mismatch', hold} (confirmed before with another quantity)
--            | {'quantity_too_large', held quantity}
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
local quantity = tonumber(ARGV[6]) or hold.q

if hold.st == 'confirmed' then
    if quantity ~= hold.q then
        return {'quantity_mismatch', cjson.encode(hold)}
    end
    return {'unchanged', cjson.encode(hold)}
elseif hold.st ~= 'held' then
    return {hold.st, cjson.encode(hold)}
end
if quantity > hold.q then
    return {'quantity_too_large', hold.q}
end

release_held(hold)
local released = hold.q - quantity
hold.q = quantity
redis.call('HINCRBY', KEYS[K_SLOTS], slot_field(hold.s, 'conf'), quantity)
if released > 0 then
    redis.call('HINCRBY', KEYS[K_SLOTS], slot_field(hold.s, 'rem'), released)
    hold.r = released
end
local event = transition(hold, 'confirmed', 'cf', now)
local entry_id = last_entry_id  -- before an offer to the waitlist appends its own
if released > 0 then
    capacity_freed(hold.s, now)
end
return {'confirmed', event, entry_id}
