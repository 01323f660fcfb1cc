-- lib_waitlist.lua — the waitlist's helpers; prepended after lib.lua (whose keys
-- and hold helpers it uses) and before lib_housekeeping.lua (whose expiry calls
-- capacity_freed). See lib.lua for the keys.
--
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
    queue_pushed()
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
