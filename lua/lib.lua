-- lib.lua — helpers shared by every operation script.
--
-- engine/scripts.py prepends this file to each operation script before loading
-- it, so each script stays one EVALSHA round trip. Every operation receives the
-- seven partition keys first, in this order (all share the hash tag {p<N>}):
--
-- KEYS[1]  epoch marker        {p<N>}:epoch      string, written only by load_partition
-- KEYS[2]  slots               {p<N>}:slots      hash  <slot>:cap|rem|held|conf|state|meta
-- KEYS[3]  holds               {p<N>}:holds      hash  <hold id> -> hold JSON
-- KEYS[4]  expiry index        {p<N>}:expiry     zset  hold id scored by expires_at (held only)
-- KEYS[5]  held per user       {p<N>}:user_held  hash  <slot>:<user> -> held quantity
-- KEYS[6]  finished index      {p<N>}:finished   zset  hold id scored by finish time
-- KEYS[7]  events              {p<N>}:events     stream, one entry per state change
--
-- and the same three housekeeping arguments first:
--
-- ARGV[1]  clock, milliseconds; '' means redis TIME (tests pass an explicit clock)
-- ARGV[2]  housekeeping batch: at most this many due holds expired, and as many
--          finished holds forgotten, per call
-- ARGV[3]  retention of finished (cancelled/expired) holds, milliseconds
--
-- A hold is stored as compact JSON, the same bytes that go into its event:
--   i hold id, s slot id, u user id, q quantity, st status, c created_at,
--   e expires_at, cf confirmed_at, ca cancelled_at, xa expired_at, v version,
--   k idempotency key. Ids are strings; times are integer milliseconds.

local K_EPOCH, K_SLOTS, K_HOLDS, K_EXPIRY, K_USER_HELD, K_FINISHED, K_EVENTS = 1, 2, 3, 4, 5, 6, 7

local function clock_ms()
    if ARGV[1] ~= '' then
        return tonumber(ARGV[1])
    end
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function has_epoch()
    return redis.call('EXISTS', KEYS[K_EPOCH]) == 1
end

local function slot_field(slot_id, name)
    return slot_id .. ':' .. name
end

local function load_hold(hold_id)
    local raw = redis.call('HGET', KEYS[K_HOLDS], hold_id)
    if not raw then
        return nil
    end
    return cjson.decode(raw)
end

-- Store the hold and append its event with the same bytes; returns the JSON.
local function save_hold(hold)
    local raw = cjson.encode(hold)
    redis.call('HSET', KEYS[K_HOLDS], hold.i, raw)
    redis.call('XADD', KEYS[K_EVENTS], '*', 'h', raw)
    return raw
end

local function add_user_held(hold, delta)
    local field = hold.s .. ':' .. hold.u
    if redis.call('HINCRBY', KEYS[K_USER_HELD], field, delta) <= 0 then
        redis.call('HDEL', KEYS[K_USER_HELD], field)
    end
end

-- Take a hold out of 'held': its quantity leaves the slot's held counter.
local function release_held(hold)
    redis.call('HINCRBY', KEYS[K_SLOTS], slot_field(hold.s, 'held'), -hold.q)
    add_user_held(hold, -hold.q)
    redis.call('ZREM', KEYS[K_EXPIRY], hold.i)
end

local function give_back(hold)
    redis.call('HINCRBY', KEYS[K_SLOTS], slot_field(hold.s, 'rem'), hold.q)
end

local function mark_finished(hold, now)
    redis.call('ZADD', KEYS[K_FINISHED], now, hold.i)
end

local function transition(hold, status, at_field, now)
    hold.st = status
    hold[at_field] = now
    hold.v = hold.v + 1
    return save_hold(hold)
end

local function expire_hold(hold, now)
    release_held(hold)
    give_back(hold)
    mark_finished(hold, now)
    return transition(hold, 'expired', 'xa', now)
end

-- Expire due holds and forget old finished ones, a bounded number of each.
-- Returns how many holds were expired.
local function housekeep(now)
    local batch = tonumber(ARGV[2])
    local due = redis.call('ZRANGEBYSCORE', KEYS[K_EXPIRY], '-inf', now, 'LIMIT', 0, batch)
    for _, hold_id in ipairs(due) do
        local hold = load_hold(hold_id)
        if hold then
            expire_hold(hold, now)
        else
            redis.call('ZREM', KEYS[K_EXPIRY], hold_id)
        end
    end
    local horizon = now - tonumber(ARGV[3])
    local old = redis.call('ZRANGEBYSCORE', KEYS[K_FINISHED], '-inf', horizon, 'LIMIT', 0, batch)
    if #old > 0 then
        redis.call('HDEL', KEYS[K_HOLDS], unpack(old))
        redis.call('ZREM', KEYS[K_FINISHED], unpack(old))
    end
    return #due
end

-- A held hold whose time has come is expired on the spot, so no command ever
-- acts on a hold that should already be gone.
local function settle(hold, now)
    if hold.st == 'held' and hold.e <= now then
        expire_hold(hold, now)
    end
    return hold
end

-- Fail closed: a partition without its epoch marker has lost its state.
local function guard()
    if not has_epoch() then
        return nil
    end
    local now = clock_ms()
    housekeep(now)
    return now
end

