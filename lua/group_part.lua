-- group_part.lua — make one part of a hold group: a hold of the group's user,
-- tied to the group (field g), with the group's shared expires_at.
--
-- KEYS[1..11] partition keys, as in lib.lua
-- ARGV[1..3] clock, housekeeping batch, retention (lib.lua)
-- ARGV[4]    slot id
-- ARGV[5]    user id
-- ARGV[6]    quantity (>= 1)
-- ARGV[7]    hold id chosen for this part (a retry with the same id changes nothing)
-- ARGV[8]    group id
-- ARGV[9]    the group's expires_at, ms
-- ARGV[10]   make-by deadline, ms: a part is never made at or after it (the group
--            sweep releases the parts of a group not held by then, engine/groups.py)
-- ARGV[11]   most units one user may have held on one slot
-- Returns    {'made', hold}  (the hold as JSON; also when it already existed)
-- Refusals   {'state_unavailable'} | {'late'} | {'not_found'} | {'closed'}
--            | {'capacity', remaining} | {'user_limit', held}
-- Emits      one hold event (status 'held', with g) when the part is made
-- Time       milliseconds, redis TIME unless ARGV[1] gives a clock

local now = ready(ARGV[1])
if not now then
    return {'state_unavailable'}
end
housekeep(now, ARGV[2], ARGV[3])

local existing = load_hold(ARGV[7])
if existing then
    return {'made', cjson.encode(existing)}
end
if now >= tonumber(ARGV[10]) then
    return {'late'}
end

local slot_id, user_id, quantity = ARGV[4], ARGV[5], tonumber(ARGV[6])
local refused = hold_refusal(slot_id, user_id, quantity, ARGV[11], slot_counters(slot_id))
if refused then
    return refused
end

local hold = {
    i = ARGV[7], s = slot_id, u = user_id, q = quantity, st = 'held',
    c = now, e = tonumber(ARGV[9]), v = 1, g = ARGV[8],
}
take_held(hold)
return {'made', save_hold(hold)}
