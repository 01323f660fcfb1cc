-- group_home.lua — the record of a hold group, kept in its home partition (the
-- partition of its first item's slot; the group id names that slot).
--
-- KEYS[1..11]      partition keys of the home partition, as in lib.lua
-- KEYS[K_EXTRA]    group record        {p<N>}:group:<group id>   string, group JSON
-- KEYS[K_EXTRA+1]  idempotency record  {p<N>}:gidem:<user>:<key> string, the group id
-- KEYS[K_EXTRA+2]  due groups          {p<N>}:groups_due         sorted set, group id
--                  scored by when the group sweep must finish or undo it
-- ARGV[1..3] clock, housekeeping batch, retention (lib.lua)
-- ARGV[4]    operation, ARGV[5] group id, then the operation's arguments:
--   begin   ARGV[6] user, [7] members JSON [[hold id, slot, quantity], ...],
--           [8] hold lifetime ms, [9] pending lifetime ms, [10] idempotency memory ms,
--           [11] idempotency key, [12] sweep grace ms
--           -> {'begun', group} | {'replay', group id already made by the key}
--   commit  -> {'held', group} (pending -> held, before its make-by deadline)
--           | {'late', group} | {<status>, group} | {'not_found'}
--   abort   ARGV[6] 'sweep' or '' -> {'aborted', group}: a pending group becomes 'failed'
--           and its key is unbound (with 'sweep' only once its make-by deadline has
--           passed); else {<status>, group}
--   forget  -> {'forgotten'}: a failed group's record and due entry dropped (its parts
--           are released first, by group_members.lua)
--   confirm ARGV[6] margin ms, [7] sweep grace ms -> {'confirming', group} (held, at
--           least margin before expires_at) | {'expired', group} | {<status>, group}
--   cancel  ARGV[6] sweep grace ms -> {'cancelling', group} | {<status>, group}
--   finish  ARGV[6] 'confirmed' | 'cancelled' -> {<status>, group}
--   read    -> {<status>, group, now} | {'not_found'}
-- Group JSON: i id, u user, st status (pending, held, confirming, confirmed,
--   cancelling, cancelled; failed: never held, its parts being released), c created_at, e expires_at, d make-by deadline,
--   k idempotency key, m members, v version, cf/ca confirmed/cancelled at. A held
--   group whose expires_at has passed reads as 'expired' (its members expire by
--   themselves: they share its expires_at). A pending group reads as not_found.
-- Emits      one group event (stream field 'g': the group JSON plus t, the time)
--            on held, confirmed and cancelled
-- Time       milliseconds, redis TIME unless ARGV[1] gives a clock

local now = ready(ARGV[1])
if not now then
    return {'state_unavailable'}
end
housekeep(now, ARGV[2], ARGV[3])

local K_GROUP, K_GIDEM, K_DUE = KEYS[K_EXTRA], KEYS[K_EXTRA + 1], KEYS[K_EXTRA + 2]
local op, group_id = ARGV[4], ARGV[5]
local retention = tonumber(ARGV[3])

local function save(group, ttl_ms)
    redis.call('SET', K_GROUP, cjson.encode(group), 'PX', math.max(ttl_ms, 1))
end

local function live_ttl(group)
    return group.e - now + retention
end

local function emit(group)
    group.t = now
    redis.call('XADD', KEYS[K_EVENTS], '*', 'g', cjson.encode(group))
    group.t = nil
end

local function status(group)
    if group.st == 'held' and group.e <= now then
        return 'expired'
    end
    return group.st
end

if op == 'begin' then
    local made = redis.call('GET', K_GIDEM)
    if made then
        return {'replay', made}
    end
    local group = {
        i = group_id, u = ARGV[6], st = 'pending', c = now,
        e = now + tonumber(ARGV[8]), d = now + tonumber(ARGV[9]),
        k = ARGV[11], m = cjson.decode(ARGV[7]), v = 1,
    }
    save(group, live_ttl(group))
    redis.call('SET', K_GIDEM, group_id, 'PX', ARGV[10])
    redis.call('ZADD', K_DUE, group.d + tonumber(ARGV[12]), group_id)
    return {'begun', cjson.encode(group)}
end

local raw = redis.call('GET', K_GROUP)
if not raw then
    if op == 'forget' then
        redis.call('ZREM', K_DUE, group_id)
        return {'forgotten'}
    end
    return {'not_found'}
end
local group = cjson.decode(raw)
local st = status(group)

if op == 'read' then
    if st == 'pending' or st == 'failed' then
        return {'not_found'}
    end
    return {st, raw, now}
elseif op == 'commit' then
    if st == 'pending' and now < group.d then
        group.st, group.v = 'held', group.v + 1
        save(group, live_ttl(group))
        redis.call('ZREM', K_DUE, group_id)
        emit(group)
        return {'held', cjson.encode(group)}
    elseif st == 'pending' then
        return {'late', raw}
    end
    return {st, raw}
elseif op == 'abort' then
    -- ARGV[6] 'sweep': only once the make-by deadline has passed (the group sweep)
    if st == 'failed' then
        return {'aborted', raw}
    end
    if st ~= 'pending' or (ARGV[6] == 'sweep' and now < group.d) then
        return {st, raw}
    end
    group.st = 'failed'
    save(group, live_ttl(group))
    if redis.call('GET', K_GIDEM) == group_id then
        redis.call('DEL', K_GIDEM)
    end
    return {'aborted', cjson.encode(group)}
elseif op == 'forget' then
    if st == 'failed' then
        redis.call('DEL', K_GROUP)
    end
    redis.call('ZREM', K_DUE, group_id)
    return {'forgotten'}
elseif op == 'confirm' then
    if st == 'pending' or st == 'failed' then
        return {'not_found'}
    end
    if st == 'held' and now + tonumber(ARGV[6]) >= group.e then
        return {'expired', raw}
    end
    if st == 'held' then
        group.st, group.v = 'confirming', group.v + 1
        save(group, live_ttl(group))
        redis.call('ZADD', K_DUE, now + tonumber(ARGV[7]), group_id)
        return {'confirming', cjson.encode(group)}
    end
    return {st, raw}
elseif op == 'cancel' then
    if st == 'pending' or st == 'failed' then
        return {'not_found'}
    end
    if st == 'held' or st == 'confirmed' or st == 'confirming' then
        group.st, group.v = 'cancelling', group.v + 1
        save(group, math.max(live_ttl(group), retention))
        redis.call('ZADD', K_DUE, now + tonumber(ARGV[6]), group_id)
        return {'cancelling', cjson.encode(group)}
    end
    return {st, raw}
elseif op == 'finish' then
    local target = ARGV[6]
    if (target == 'confirmed' and st == 'confirming') or (target == 'cancelled' and st == 'cancelling') then
        group.st, group.v = target, group.v + 1
        if target == 'confirmed' then
            group.cf = now
        else
            group.ca = now
        end
        if target == 'confirmed' then
            redis.call('SET', K_GROUP, cjson.encode(group))  -- a booking stays, as a hold does
        else
            save(group, retention)
        end
        redis.call('ZREM', K_DUE, group_id)
        emit(group)
        return {target, cjson.encode(group)}
    end
    return {st, raw}
end
return redis.error_reply('unknown group operation ' .. op)
