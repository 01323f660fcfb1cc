-- group_members.lua — confirm or cancel the members of one hold group that live
-- in this partition (each member is a hold with g = the group id).
--
-- KEYS[1..11] partition keys, as in lib.lua
-- ARGV[1..3] clock, housekeeping batch, retention (lib.lua)
-- ARGV[4]    'confirm' (held -> confirmed) | 'cancel' (held or confirmed -> cancelled,
--            quantity given back) | 'release' (held -> cancelled only: the parts of
--            a group that never became held)
-- ARGV[5]    group id
-- ARGV[6..]  member hold ids
-- Returns    {'done', hold or '' ...}: each member as it is now, in order; '' for an
--            id this partition does not know as a member of the group
-- Refusals   {'state_unavailable'}
-- Emits      one hold event per member that changed (a due member expires first)
-- Time       milliseconds, redis TIME unless ARGV[1] gives a clock

local now = ready(ARGV[1])
if not now then
    return {'state_unavailable'}
end
housekeep(now, ARGV[2], ARGV[3])

local op, group_id = ARGV[4], ARGV[5]
local out = {'done'}
for n = 6, #ARGV do
    local hold = load_hold(ARGV[n])
    if not hold or hold.g ~= group_id then
        table.insert(out, '')
    else
        settle(hold, now)
        if op == 'confirm' and hold.st == 'held' then
            release_held(hold)
            redis.call('HINCRBY', KEYS[K_SLOTS], slot_field(hold.s, 'conf'), hold.q)
            transition(hold, 'confirmed', 'cf', now)
        elseif op ~= 'confirm' and (hold.st == 'held' or (op == 'cancel' and hold.st == 'confirmed')) then
            if hold.st == 'held' then
                release_held(hold)
            else
                redis.call('HINCRBY', KEYS[K_SLOTS], slot_field(hold.s, 'conf'), -hold.q)
            end
            give_back(hold)
            mark_finished(hold, now)
            transition(hold, 'cancelled', 'ca', now)
            capacity_freed(hold.s, now)
        end
        table.insert(out, cjson.encode(hold))
    end
end
return out
