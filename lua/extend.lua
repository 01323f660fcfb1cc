-- extend.lua — give a live hold a fresh lifetime from now, within its caps.
--
-- KEYS[1..7] partition keys, as in lib.lua
-- ARGV[1..3] clock, housekeeping batch, retention (lib.lua)
-- ARGV[4]    hold id
-- ARGV[5]    user id that must own the hold; '' lets any caller (operators)
-- ARGV[6]    hold lifetime, ms: the new expires_at is now + this
-- ARGV[7]    most extensions of one hold
-- ARGV[8]    longest life of a hold, ms: expires_at never passes created_at + this
-- Returns    {'extended', hold} (the event: x = 'extended', t = now)
-- Refusals   {'state_unavailable'} | {'not_found'} (unknown or not the caller's)
--            | {'expired', hold} | {'confirmed', hold} | {'cancelled', hold}
--            | {'extension_limit', extensions so far, latest allowed expires_at}
--            A refusal changes nothing but housekeeping (and settling a due hold).
-- Emits      one hold event (status 'held', x 'extended'), or one 'expired' event
--            when the hold's time had come and nobody had expired it yet
-- Time       milliseconds, redis TIME unless ARGV[1] gives a clock
--
-- An extension that would pass the longest life is refused, not shortened: the
-- new expiry is then always now + lifetime, the latest time in the expiry queue,
-- so its new entry goes to the tail and the queue stays in time order (the old
-- entry is skipped at the head, as for a confirmed hold).

local now = ready(ARGV[1])
if not now then
    return {'state_unavailable'}
end
housekeep(now, ARGV[2], ARGV[3])
local hold = owned_hold(ARGV[4], ARGV[5], now)
if not hold then
    return {'not_found'}
end
if hold.st ~= 'held' then
    return {hold.st, cjson.encode(hold)}
end

local extensions = hold.xn or 0
local latest = hold.c + tonumber(ARGV[8])
local expires_at = now + tonumber(ARGV[6])
if extensions >= tonumber(ARGV[7]) or expires_at > latest then
    return {'extension_limit', extensions, latest}
end

hold.e = expires_at
hold.xn = extensions + 1
hold.v = hold.v + 1
redis.call('RPUSH', KEYS[K_EXPIRY], hold.e .. '|' .. hold.i)
queue_pushed()
hold.x, hold.t = 'extended', now
return {'extended', save_hold(hold)}
