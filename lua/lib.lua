-- lib.lua — helpers shared by every operation script.
--
-- engine/scripts.py prepends this file to each operation script before loading
-- it, so each script stays one EVALSHA round trip. Every operation receives the
-- twelve partition keys first, in this order (all share the hash tag {p<N>}):
--
-- KEYS[1]  epoch marker        {p<N>}:epoch      string, written only by load_partition
-- KEYS[2]  slots               {p<N>}:slots      hash  <slot>:cap|rem|held|conf|state|meta
-- KEYS[3]  holds               {p<N>}:holds      hash  <hold id> -> hold JSON
-- KEYS[4]  expiry queue        {p<N>}:expiry     list  "<expires_at>|<hold id>", oldest first
-- KEYS[5]  held per user       {p<N>}:user_held  hash  <slot>:<user> -> held quantity
-- KEYS[6]  finished queue      {p<N>}:finished   list  "<finished at>|<hold id>", oldest first
--                                                (or "<at>|w:<entry id>": a waitlist entry)
-- KEYS[7]  events              {p<N>}:events     stream, one entry per state change
-- KEYS[8]  waitlist entries    {p<N>}:waitlist   hash  <entry id> -> entry JSON
-- KEYS[9]  waiting order       {p<N>}:wait_order sorted set, all scores 0, members
--                                                "<slot>:<join seq, 15 digits>:<entry id>"
--                                                (lexicographic: one slot's entries are
--                                                one contiguous range, in join order)
-- KEYS[10] waiting counters    {p<N>}:waiting    hash  <slot> -> units waiting,
--                                                n:<slot> -> entries waiting,
--                                                u:<slot>:<user> -> that user's entries,
--                                                seq -> the partition's join counter,
--                                                offer_ms -> offer lifetime (last join's)
-- KEYS[11] lapse queue         {p<N>}:wait_lapse list  "<lapses_at>|<entry id>", oldest first
-- KEYS[12] offer backlog       {p<N>}:wait_more  set   slots whose offers stopped at the
--                                                per-call bound (the sweep continues them)
--
-- and the operation scripts the same three housekeeping arguments first:
--
-- ARGV[1]  clock, milliseconds; '' means redis TIME (tests pass an explicit clock)
-- ARGV[2]  housekeeping batch: at most this many due holds expired, and as many
--          finished holds forgotten, per call
-- ARGV[3]  retention of finished (cancelled/expired) holds, milliseconds
--
-- The helpers below read KEYS (the partition) but never ARGV: what a helper
-- needs of the arguments, the script passes it.
--
-- A hold is stored as compact JSON under its id:
--   u user id, q quantity, st status, c created_at, e expires_at,
--   cf confirmed_at, ca cancelled_at, xa expired_at, v version,
--   g the hold group it is a member of (lua/group_*.lua; absent on single holds).
--   xn how many times it was extended (absent: never).
-- Its events (and replies) carry the same JSON plus i, the hold id, s, its slot
-- (the id's prefix), and, on the event that creates it, k, the idempotency key.
-- Event-only fields, never stored on the hold: x, what happened when the status
-- alone does not say it ('extended'), t, when that happened (ms), and r, the
-- quantity a partial confirm gave back to the slot.
-- Ids are strings; times are integer milliseconds. Every byte here is paid once
-- per live hold, hence the short names.
--
-- Why queues, not sorted sets: the hold lifetime is one setting, so holds fall
-- due in the order they were made, and finished holds are forgotten in the
-- order they finished. A list entry costs a fraction of a sorted-set member.
-- Entries of holds that were confirmed or cancelled meanwhile are skipped when
-- they reach the head. The order holds while the clock only moves forward and
-- the lifetime stays the same: after the lifetime is lowered, or Redis time steps
-- back (NTP, a failover to a host whose clock is behind), new holds may wait
-- behind older ones for the background expiry, by at most the difference.
-- Commands still expire any due hold they touch (settle()), so nothing due is
-- ever confirmed.

local K_EPOCH, K_SLOTS, K_HOLDS, K_EXPIRY, K_USER_HELD, K_FINISHED, K_EVENTS = 1, 2, 3, 4, 5, 6, 7
local K_WAITLIST, K_WAIT_ORDER, K_WAITING, K_WAIT_LAPSE, K_WAIT_MORE = 8, 9, 10, 11, 12
-- A script's own keys come after the partition keys: KEYS[K_EXTRA], KEYS[K_EXTRA + 1]...
local K_EXTRA = 13

-- ``clock`` is a script argument: milliseconds, or '' for redis TIME.
local function clock_ms(clock)
    if clock ~= '' then
        return tonumber(clock)
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

-- Split "<a>|<b>" (queue entries, idempotency records) into its two parts.
local function split_pair(entry)
    local sep = string.find(entry, '|', 1, true)
    return string.sub(entry, 1, sep - 1), string.sub(entry, sep + 1)
end

local function load_hold(hold_id)
    local raw = redis.call('HGET', KEYS[K_HOLDS], hold_id)
    if not raw then
        return nil
    end
    local hold = cjson.decode(raw)
    hold.i = hold_id
    hold.s = string.match(hold_id, '^(%d+)-')
    return hold
end

-- The partition's event sequence: one more per event, kept in the slots hash
-- (field 'seq', which is no slot's: slot fields are '<slot>:<name>'). PostgreSQL
-- keeps the highest it applied; a partition found behind has gone back in time
-- (sync/sequence.py). load_partition sets it when it builds the partition.
local function next_sequence()
    return redis.call('HINCRBY', KEYS[K_SLOTS], 'seq', 1)
end

-- The stream entry id of the last event save_hold appended (confirm and cancel
-- return it, so the API can write the event through to PostgreSQL).
local last_entry_id = ''

-- Store the hold (without its id, which is the field, and without its key).
local function store_hold(hold)
    local id, slot, key = hold.i, hold.s, hold.k
    local what, what_at, released = hold.x, hold.t, hold.r
    hold.i, hold.s, hold.k, hold.x, hold.t, hold.r = nil, nil, nil, nil, nil, nil
    redis.call('HSET', KEYS[K_HOLDS], id, cjson.encode(hold))
    hold.i, hold.s, hold.k, hold.x, hold.t, hold.r = id, slot, key, what, what_at, released
end

-- Store the hold and append its event. ``key`` is the idempotency key, given on
-- the event that creates the hold. Events carry n, the partition's sequence.
-- Returns the event's JSON, which is also the reply.
local function save_hold(hold, key)
    store_hold(hold)
    hold.k = key
    hold.n = next_sequence()
    local event = cjson.encode(hold)
    hold.k, hold.n = nil, nil
    last_entry_id = redis.call('XADD', KEYS[K_EVENTS], '*', 'h', event)
    return event
end

local function add_user_held(hold, delta)
    local field = hold.s .. ':' .. hold.u
    if redis.call('HINCRBY', KEYS[K_USER_HELD], field, delta) <= 0 then
        redis.call('HDEL', KEYS[K_USER_HELD], field)
    end
end

-- Count a new 'held' hold: its quantity moves from remaining to held, and it
-- joins the expiry queue.
local function take_held(hold)
    redis.call('HINCRBY', KEYS[K_SLOTS], slot_field(hold.s, 'rem'), -hold.q)
    redis.call('HINCRBY', KEYS[K_SLOTS], slot_field(hold.s, 'held'), hold.q)
    add_user_held(hold, hold.q)
    redis.call('RPUSH', KEYS[K_EXPIRY], hold.e .. '|' .. hold.i)
end

-- Remember which hold an idempotency key made, for ``ttl_ms``.
local function remember_key(record_key, hold, ttl_ms)
    redis.call('SET', record_key, hold.q .. '|' .. hold.i, 'PX', ttl_ms)
end

-- Take a hold out of 'held': its quantity leaves the slot's held counter.
-- (Its expiry queue entry stays and is skipped when it reaches the head.)
local function release_held(hold)
    redis.call('HINCRBY', KEYS[K_SLOTS], slot_field(hold.s, 'held'), -hold.q)
    add_user_held(hold, -hold.q)
end

local function give_back(hold)
    redis.call('HINCRBY', KEYS[K_SLOTS], slot_field(hold.s, 'rem'), hold.q)
end

-- Capacity of slot_id was given back: offer it to the slot's waitlist (waitlist).
--
-- Waitlist entries are stored as compact JSON under their id ("<slot>-<16 hex>",
-- like a hold id): u user, q quantity, st 'waiting' | 'offered' | 'left' |
-- 'lapsed', c joined at, e lapses at, n join seq, v version, and oa offered at,
-- h the offer's hold id, la left at, xa lapsed at. Their events (field 'w') carry
-- the same plus i, s and, on the event that creates the entry, k, the key.
--
-- Offers go strictly in join order and only for an entry's whole quantity: the
-- head entry gets a normal hold (its id is the entry's id) when it fits, and an
-- entry that does not fit stops the loop, so nobody behind it overtakes it. At
-- most WAITLIST_OFFERS_PER_CALL offers per call; a slot stopped by that bound
-- joins the backlog set, which the sweep (expire.lua) works off. Also called when
-- a waiting entry leaves or lapses (the next head may fit) and when a slot opens.
local WAITLIST_OFFERS_PER_CALL = 32

-- Why a new hold of ``quantity`` on the slot cannot be made for the user, as the
-- script's refusal ({'not_found'}, {'closed'}, {'capacity', remaining},
-- {'user_limit', held}); nil when it can. Single holds and group parts alike.
local function hold_refusal(slot_id, user_id, quantity, max_held)
    local fields = redis.call('HMGET', KEYS[K_SLOTS], slot_field(slot_id, 'rem'), slot_field(slot_id, 'state'))
    local remaining = tonumber(fields[1])
    if not remaining then
        return {'not_found'}
    end
    if fields[2] ~= 'open' then
        return {'closed'}
    end
    if remaining < quantity then
        return {'capacity', remaining}
    end
    -- A waiting customer is never overtaken: while anyone waits for this slot, what
    -- is left belongs to the head of the line (it did not fit, or the offers stopped
    -- at their per-call bound), so nothing is available to a new hold.
    if redis.call('HEXISTS', KEYS[K_WAITING], 'n:' .. slot_id) == 1 then
        return {'capacity', 0}
    end
    local held_by_user = tonumber(redis.call('HGET', KEYS[K_USER_HELD], slot_field(slot_id, user_id)) or '0')
    if held_by_user + quantity > tonumber(max_held) then
        return {'user_limit', held_by_user}
    end
    return nil
end

local function load_entry(entry_id)
    local raw = redis.call('HGET', KEYS[K_WAITLIST], entry_id)
    if not raw then
        return nil
    end
    local entry = cjson.decode(raw)
    entry.i = entry_id
    entry.s = string.match(entry_id, '^(%d+)-')
    return entry
end

-- Store the entry and append its event; returns the event's JSON. (Its n is the
-- entry's place in the line, not the partition's event sequence: waitlist events
-- do not take part in rewind detection, sync/events.py.)
local function save_entry(entry, key)
    local id, slot = entry.i, entry.s
    entry.i, entry.s = nil, nil
    redis.call('HSET', KEYS[K_WAITLIST], id, cjson.encode(entry))
    entry.i, entry.s, entry.k = id, slot, key
    local event = cjson.encode(entry)
    entry.k = nil
    redis.call('XADD', KEYS[K_EVENTS], '*', 'w', event)
    return event
end

local function wait_member(entry)
    return entry.s .. ':' .. string.format('%015d', entry.n) .. ':' .. entry.i
end

-- The lexicographic range of one slot's members of the waiting order.
local function wait_range(slot_id)
    return '[' .. slot_id .. ':', '(' .. slot_id .. ';'
end

-- Put a new entry in line: the order, the counters, the lapse queue.
local function start_waiting(entry)
    redis.call('ZADD', KEYS[K_WAIT_ORDER], 0, wait_member(entry))
    redis.call('HINCRBY', KEYS[K_WAITING], entry.s, entry.q)
    redis.call('HINCRBY', KEYS[K_WAITING], 'n:' .. entry.s, 1)
    redis.call('HINCRBY', KEYS[K_WAITING], 'u:' .. entry.s .. ':' .. entry.u, 1)
    redis.call('RPUSH', KEYS[K_WAIT_LAPSE], entry.e .. '|' .. entry.i)
end

-- Take a waiting entry out of line into ``status`` (its lapse queue entry stays
-- and is skipped). Finished entries are forgotten after the hold retention.
local function stop_waiting(entry, status, at_field, now)
    redis.call('ZREM', KEYS[K_WAIT_ORDER], wait_member(entry))
    if redis.call('HINCRBY', KEYS[K_WAITING], 'n:' .. entry.s, -1) <= 0 then
        redis.call('HDEL', KEYS[K_WAITING], 'n:' .. entry.s, entry.s)
    else
        redis.call('HINCRBY', KEYS[K_WAITING], entry.s, -entry.q)
    end
    local user_field = 'u:' .. entry.s .. ':' .. entry.u
    if redis.call('HINCRBY', KEYS[K_WAITING], user_field, -1) <= 0 then
        redis.call('HDEL', KEYS[K_WAITING], user_field)
    end
    redis.call('RPUSH', KEYS[K_FINISHED], now .. '|w:' .. entry.i)
    entry.st = status
    entry[at_field] = now
    entry.v = entry.v + 1
end

-- Offer the head entry of a slot a hold if its whole quantity fits; the entry,
-- or nil when nothing was offered.
local function offer_head(slot_id, now)
    local min, max = wait_range(slot_id)
    local head = redis.call('ZRANGE', KEYS[K_WAIT_ORDER], min, max, 'BYLEX', 'LIMIT', 0, 1)[1]
    if not head then
        return nil
    end
    local fields = redis.call('HMGET', KEYS[K_SLOTS], slot_field(slot_id, 'rem'), slot_field(slot_id, 'state'))
    local entry = load_entry(string.match(head, ':([^:]+)$'))
    if fields[2] ~= 'open' or tonumber(fields[1] or '0') < entry.q then
        return nil
    end
    stop_waiting(entry, 'offered', 'oa', now)
    local offer_ms = tonumber(redis.call('HGET', KEYS[K_WAITING], 'offer_ms') or '300000')
    local hold = {
        i = entry.i, s = slot_id, u = entry.u, q = entry.q, st = 'held',
        c = now, e = now + offer_ms, v = 1,
    }
    take_held(hold)
    save_hold(hold)
    entry.h = hold.i
    save_entry(entry)
    return entry
end

local function capacity_freed(slot_id, now)
    for _ = 1, WAITLIST_OFFERS_PER_CALL do
        if not offer_head(slot_id, now) then
            return
        end
    end
    redis.call('SADD', KEYS[K_WAIT_MORE], slot_id)
end

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

-- Expire due holds and forget finished ones older than ``retention_ms``, at
-- most ``batch`` of each (both script arguments). Returns how many expired.
local function housekeep(now, batch, retention_ms)
    batch = tonumber(batch)
    local expired = 0
    drain_queue(KEYS[K_EXPIRY], now, batch, function(at, hold_id)
        local hold = load_hold(hold_id)
        -- Confirmed or cancelled since it was queued: nothing to do.
        if hold and hold.st == 'held' and hold.e == at then
            expire_hold(hold, now)
            expired = expired + 1
        end
    end)
    drain_queue(KEYS[K_FINISHED], now - tonumber(retention_ms), batch, function(_, hold_id)
        if string.sub(hold_id, 1, 2) == 'w:' then
            redis.call('HDEL', KEYS[K_WAITLIST], string.sub(hold_id, 3))
        else
            redis.call('HDEL', KEYS[K_HOLDS], hold_id)
        end
    end)
    drain_queue(KEYS[K_WAIT_LAPSE], now, batch, function(at, entry_id)
        local entry = load_entry(entry_id)
        if entry and entry.st == 'waiting' and entry.e == at then
            stop_waiting(entry, 'lapsed', 'xa', now)
            save_entry(entry)
            capacity_freed(entry.s, now)
        end
    end)
    return expired
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

-- One hold request, after ready() and housekeep(): replay the hold ``record_key``
-- remembers (or refuse a different quantity), else judge it by hold_refusal() and
-- make it. The reply is hold.lua's (its header lists them); hold.lua and
-- hold_batch.lua both call this, once per request. ``args`` holds the request:
-- slot, user, quantity (a number), hold_id (used if a hold is made), ttl_ms,
-- remember_ms, max_held, key (the idempotency key as sent).
local function hold_request(now, record_key, args)
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
    local refused = hold_refusal(args.slot, args.user, args.quantity, args.max_held)
    if refused then
        return refused
    end
    local hold = {
        i = args.hold_id, s = args.slot, u = args.user, q = args.quantity, st = 'held',
        c = now, e = now + tonumber(args.ttl_ms), v = 1,
    }
    take_held(hold)
    remember_key(record_key, hold, args.remember_ms)
    return {'created', save_hold(hold, args.key)}
end
