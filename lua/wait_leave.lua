-- wait_leave.lua — leave a waitlist (the entry's owner, or an operator).
--
-- KEYS[1..11] partition keys, as in lib.lua
-- ARGV[1..3] clock, housekeeping batch, retention (lib.lua)
-- ARGV[4]    entry id
-- ARGV[5]    user id that must own the entry; '' lets any caller (operators)
-- Returns    {'left', entry} | {'unchanged', entry} (no longer waiting: left,
--            lapsed or offered — an offer is given up by cancelling its hold)
-- Refusals   {'state_unavailable'} | {'not_found'} (unknown or not the caller's)
-- Emits      one entry event (st 'left'), then the offers the new head allows
-- Time       milliseconds, redis TIME unless ARGV[1] gives a clock

local now = ready(ARGV[1])
if not now then
    return {'state_unavailable'}
end
housekeep(now, ARGV[2], ARGV[3])
local entry = load_entry(ARGV[4])
if not entry or (ARGV[5] ~= '' and entry.u ~= ARGV[5]) then
    return {'not_found'}
end
if entry.st ~= 'waiting' then
    return {'unchanged', cjson.encode(entry)}
end
stop_waiting(entry, 'left', 'la', now)
local event = save_entry(entry)
capacity_freed(entry.s, now)
return {'left', event}
