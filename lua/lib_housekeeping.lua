-- lib_housekeeping.lua — finishing holds, the expiry and finished queues, the
-- readiness check and the single hold's rules; prepended after lib.lua and
-- lib_waitlist.lua. See lib.lua for the keys and the stored forms.

local function mark_finished(hold, at)
    redis.call('RPUSH', KEYS[K_FINISHED], at .. '|' .. hold.i)
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
    local event = transition(hold, 'expired', 'xa', now)
    capacity_freed(hold.s, now)
    return event
end

-- Split a queue entry "<ms>|<hold id>".
local function queue_entry(entry)
    local at, hold_id = split_pair(entry)
    return tonumber(at), hold_id
end

-- Take up to ``batch`` entries due at ``due_by`` off the head of a queue and
-- hand each to ``visit``. Returns how many were taken.
local function drain_queue(queue, due_by, batch, visit)
    -- Most calls find nothing due: one element costs far less than a batch.
    local first = redis.call('LINDEX', queue, 0)
    if not first or queue_entry(first) > due_by then
        return 0
    end
    local head = redis.call('LRANGE', queue, 0, batch - 1)
    local taken = 0
    for _, entry in ipairs(head) do
        local at, hold_id = queue_entry(entry)
        if at > due_by then
            break
        end
        visit(at, hold_id)
        taken = taken + 1
    end
    if taken > 0 then
        redis.call('LTRIM', queue, taken, -1)
    end
    return taken
end

-- The head of a queue: when it falls due, NEVER when empty.
local function head_due(queue)
    local head = redis.call('LINDEX', queue, 0)
    if not head then
        return NEVER
    end
    return (queue_entry(head))
end

-- Expire due holds and lapse due waitlist entries, at most ``batch`` of each (a
-- script argument), unless the due mark (lib.lua) says nothing is due: ``due`` is
-- the mark as the caller read it (nil: read here; false: look at the queues
-- anyway). Returns how many expired, whether anything changed (a slot's counters
-- or the event sequence may then differ from a read before), and the due mark.
-- Finished holds are forgotten by the sweep only (forget_finished).
local function housekeep(now, batch, _, due)
    if due == nil then
        due = redis.call('HGET', KEYS[K_SLOTS], 'due')
    end
    if due and tonumber(due) > now then
        return 0, false, due
    end
    batch = tonumber(batch)
    local expired, lapsed = 0, 0
    drain_queue(KEYS[K_EXPIRY], now, batch, function(at, hold_id)
        local hold = load_hold(hold_id)
        -- Confirmed or cancelled since it was queued: nothing to do.
        if hold and hold.st == 'held' and hold.e == at then
            expire_hold(hold, now)
            expired = expired + 1
        end
    end)
    drain_queue(KEYS[K_WAIT_LAPSE], now, batch, function(at, entry_id)
        local entry = load_entry(entry_id)
        if entry and entry.st == 'waiting' and entry.e == at then
            stop_waiting(entry, 'lapsed', 'xa', now)
            save_entry(entry)
            capacity_freed(entry.s, now)
            lapsed = lapsed + 1
        end
    end)
    due = math.min(head_due(KEYS[K_EXPIRY]), head_due(KEYS[K_WAIT_LAPSE]))
    redis.call('HSET', KEYS[K_SLOTS], 'due', due)
    return expired, expired + lapsed > 0, tostring(due)
end

-- Forget finished holds and entries older than ``retention_ms``, at most
-- ``batch``: the sweep's work (expire.lua), not every command's. Returns true
-- when more are due.
local function forget_finished(now, batch, retention_ms)
    local due_by = now - tonumber(retention_ms)
    drain_queue(KEYS[K_FINISHED], due_by, tonumber(batch), function(_, hold_id)
        if string.sub(hold_id, 1, 2) == 'w:' then
            redis.call('HDEL', KEYS[K_WAITLIST], string.sub(hold_id, 3))
        else
            redis.call('HDEL', KEYS[K_HOLDS], hold_id)
        end
    end)
    local head = redis.call('LINDEX', KEYS[K_FINISHED], 0)
    return head ~= false and queue_entry(head) <= due_by
end

-- Is the head of the expiry queue due (more work for the sweep)?
local function expiry_due(now)
    local head = redis.call('LINDEX', KEYS[K_EXPIRY], 0)
    local lapse = redis.call('LINDEX', KEYS[K_WAIT_LAPSE], 0)
    return (head and queue_entry(head) <= now) or (lapse and queue_entry(lapse) <= now)
end

-- A held hold whose time has come is expired on the spot, so no command ever
-- acts on a hold that should already be gone.
local function settle(hold, now)
    if hold.st == 'held' and hold.e <= now then
        expire_hold(hold, now)
    end
    return hold
end

-- The hold ``hold_id``, if ``user_id`` may act on it ('' = operators: anyone),
-- settled; nil when unknown or someone else's (the two look the same).
local function owned_hold(hold_id, user_id, now)
    local hold = load_hold(hold_id)
    if not hold or (user_id ~= '' and hold.u ~= user_id) then
        return nil
    end
    return settle(hold, now)
end

-- Fail closed: a partition without its epoch marker has lost its state. Nil
-- then, else the time now (``clock`` as for clock_ms). Changes nothing: the
-- operations call housekeep() themselves once they know the partition is there.
local function ready(clock)
    if not has_epoch() then
        return nil
    end
    return clock_ms(clock)
end

-- Make the new hold ``args`` asks for (hold_request), whose slot ``c``
-- (slot_counters) read and whose user counter hold_refusal claimed: both slot
-- counters, the event sequence and the due mark (lib.lua) in one HSET, then the
-- expiry queue, the idempotency record, the stored hold and its event, which is
-- returned. The JSON is written out here rather than by cjson.encode: the same
-- fields (lib.lua), without cjson's table walk and its floating-point formatting
-- of every number (integers are formatted once, with %d); the order of the
-- fields is no more defined than cjson's.
local function make_hold(now, record_key, args, c)
    local slot, id, q = args.slot, args.hold_id, args.quantity
    local expires = now + tonumber(args.ttl_ms)
    local seq_s = string.format('%d', tonumber(c.seq or '0') + 1)
    local now_s, expires_s, q_s = string.format('%d', now), string.format('%d', expires), string.format('%d', q)
    local rem_s = string.format('%d', tonumber(c.rem) - q)
    local held_s = string.format('%d', tonumber(c.held or '0') + q)
    if c.due and tonumber(c.due) <= expires then
        redis.call('HSET', KEYS[K_SLOTS], slot .. ':rem', rem_s, slot .. ':held', held_s, 'seq', seq_s)
    else
        redis.call('HSET', KEYS[K_SLOTS], slot .. ':rem', rem_s, slot .. ':held', held_s, 'seq', seq_s,
            'due', expires_s)
    end
    redis.call('RPUSH', KEYS[K_EXPIRY], expires_s .. '|' .. id)
    redis.call('SET', record_key, q_s .. '|' .. id, 'PX', args.remember_ms)
    local stored = '{"u":' .. cjson.encode(args.user) .. ',"q":' .. q_s .. ',"st":"held","c":' .. now_s
        .. ',"e":' .. expires_s .. ',"v":1}'
    redis.call('HSET', KEYS[K_HOLDS], id, stored)
    local event = string.sub(stored, 1, -2) .. ',"i":' .. cjson.encode(id) .. ',"s":' .. cjson.encode(slot)
        .. ',"k":' .. cjson.encode(args.key) .. ',"n":' .. seq_s .. '}'
    last_entry_id = redis.call('XADD', KEYS[K_EVENTS], '*', 'h', event)
    return event
end

-- One hold request, after ready() and housekeep(): replay the hold ``record_key``
-- remembers (or refuse a different quantity), else judge it by hold_refusal() and
-- make it. The reply is hold.lua's (its header lists them); hold.lua and
-- hold_batch.lua both call this, once per request. ``args`` holds the request:
-- slot, user, quantity (a number), hold_id (used if a hold is made), ttl_ms,
-- remember_ms, max_held, key (the idempotency key as sent). ``c``: the slot as
-- slot_counters() read it after housekeeping, or nil (read here).
local function hold_request(now, record_key, args, c)
    local remembered = redis.call('GET', record_key)
    if remembered then
        local first, hold_id = split_pair(remembered)
        local first_quantity = tonumber(first)
        if first_quantity ~= args.quantity then
            return {'idempotency_mismatch', first_quantity}
        end
        local hold = load_hold(hold_id)
        if not hold then
            return {'replay_archived', hold_id, first_quantity}
        end
        -- Housekeeping is bounded, so this hold may be due and not yet expired.
        settle(hold, now)
        return {'replayed', cjson.encode(hold)}
    end
    c = c or slot_counters(args.slot)
    local refused = hold_refusal(args.slot, args.user, args.quantity, args.max_held, c, true)
    if refused then
        return refused
    end
    return {'created', make_hold(now, record_key, args, c)}
end
