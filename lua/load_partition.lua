-- load_partition.lua — rebuild one partition from a snapshot (restore, first start).
--
-- Runs in phases so a large partition loads in bounded calls; commands are
-- refused (no epoch marker) from 'begin' until 'commit'.
--
-- KEYS[1..11] partition keys, as in lib.lua
-- KEYS[12..] (K_EXTRA..) phases 'holds' and 'waitlist': the idempotency record of
--            each hold or entry, in order
--            ('' entries are not allowed: pass a key for every hold)
-- ARGV[1]    phase: 'begin' | 'slots' | 'holds' | 'waitlist' | 'commit'
-- ARGV[2]    'slots': JSON array of {id, cap, state, meta}
--            'holds': JSON array of holds as events carry them (lib.lua: with i
--            and k), held ones in order of expires_at, finished ones in order of
--            finish time (the queues must stay in time order)
--            'waitlist': JSON array of entries as events carry them (lib.lua),
--            in join order (n), after the holds; then ARGV[5] is the offer
--            lifetime ms and ARGV[6] the idempotency key prefix to the entry
--            'commit': the epoch marker's value (field 'epoch' of the slots hash)
-- ARGV[3]    'holds' and 'waitlist': clock ms ('' = redis TIME); 'commit': the
--            partition's event sequence to resume from (PostgreSQL's highest applied)
-- ARGV[4]    idempotency memory ms, 'holds' and 'waitlist'
-- Returns    {'ok', count}
-- Emits      nothing: a snapshot comes from the durable record, which has the events
--
-- Slot counters are never copied from the snapshot: they are recomputed from the
-- holds loaded, so the invariant capacity = remaining + held + confirmed holds.

local phase = ARGV[1]

if phase == 'begin' then
    redis.call('DEL', KEYS[K_SLOTS], KEYS[K_HOLDS], KEYS[K_EXPIRY],
        KEYS[K_USER_HELD], KEYS[K_FINISHED], KEYS[K_WAITLIST], KEYS[K_WAIT_ORDER],
        KEYS[K_WAITING], KEYS[K_WAIT_LAPSE], KEYS[K_WAIT_MORE])
    return {'ok', 0}
end

if phase == 'slots' then
    local slots = cjson.decode(ARGV[2])
    for _, slot in ipairs(slots) do
        local id = tostring(slot.id)
        redis.call('HSET', KEYS[K_SLOTS],
            slot_field(id, 'cap'), slot.cap, slot_field(id, 'rem'), slot.cap,
            slot_field(id, 'held'), 0, slot_field(id, 'conf'), 0,
            slot_field(id, 'state'), slot.state, slot_field(id, 'meta'), slot.meta)
    end
    return {'ok', #slots}
end

if phase == 'holds' then
    local holds = cjson.decode(ARGV[2])
    local now = clock_ms(ARGV[3])
    local idempotency_ms = tonumber(ARGV[4])
    for n, hold in ipairs(holds) do
        store_hold(hold)
        if hold.st == 'held' then
            take_held(hold)
        elseif hold.st == 'confirmed' then
            redis.call('HINCRBY', KEYS[K_SLOTS], slot_field(hold.s, 'rem'), -hold.q)
            redis.call('HINCRBY', KEYS[K_SLOTS], slot_field(hold.s, 'conf'), hold.q)
        else
            mark_finished(hold, hold.ca or hold.xa or now)
        end
        local ttl = hold.c + idempotency_ms - now
        if hold.k and hold.k ~= '' and ttl > 0 then
            remember_key(KEYS[K_EXTRA - 1 + n], hold, ttl)
        end
    end
    return {'ok', #holds}
end

if phase == 'waitlist' then
    local entries = cjson.decode(ARGV[2])
    local now = clock_ms(ARGV[3])
    local idempotency_ms = tonumber(ARGV[4])
    redis.call('HSET', KEYS[K_WAITING], 'offer_ms', ARGV[5])
    for n, entry in ipairs(entries) do
        local key = entry.k
        entry.k = nil
        local id, slot = entry.i, entry.s
        entry.i, entry.s = nil, nil
        redis.call('HSET', KEYS[K_WAITLIST], id, cjson.encode(entry))
        entry.i, entry.s = id, slot
        if entry.st == 'waiting' then
            start_waiting(entry)
            -- The sweep offers whatever fits now (lib.lua capacity_freed).
            redis.call('SADD', KEYS[K_WAIT_MORE], slot)
        else
            redis.call('RPUSH', KEYS[K_FINISHED], (entry.oa or entry.la or entry.xa or now) .. '|w:' .. id)
        end
        local seq = tonumber(redis.call('HGET', KEYS[K_WAITING], 'seq') or '0')
        if entry.n > seq then
            redis.call('HSET', KEYS[K_WAITING], 'seq', entry.n)
        end
        if key and key ~= '' and entry.c + idempotency_ms > now then
            redis.call('SET', KEYS[K_EXTRA - 1 + n], entry.q .. '|' .. id, 'PX', entry.c + idempotency_ms - now)
        end
    end
    return {'ok', #entries}
end

if phase == 'commit' then
    if ARGV[3] and ARGV[3] ~= '' then
        redis.call('HSET', KEYS[K_SLOTS], 'seq', ARGV[3])
    end
    redis.call('HSET', KEYS[K_SLOTS], 'epoch', ARGV[2])
    return {'ok', 1}
end

return redis.error_reply('load_partition: unknown phase ' .. tostring(phase))
