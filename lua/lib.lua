-- lib.lua — helpers shared by every operation script.
--
-- engine/scripts.py prepends this file, then lib_waitlist.lua (the waitlist's
-- offers: capacity_freed) and lib_housekeeping.lua (expiry, settling, the
-- readiness check, the single hold's rules: hold_request), to each operation
-- script before loading it (EVALSHA), or loads them all as one Redis Functions
-- library with each operation as a function (FCALL). Every
-- operation receives the eleven partition keys first, in this order (all share the hash tag {p<N>}):
--
-- KEYS[1]  slots               {p<N>}:slots      hash  <slot>:cap|rem|held|conf|state|meta,
--                                                and 'epoch' (the epoch marker, written
--                                                only by load_partition), 'seq' and 'due'
--                                                (see "The due mark" below)
-- KEYS[2]  holds               {p<N>}:holds      hash  <hold id> -> hold JSON
-- KEYS[3]  expiry queue        {p<N>}:expiry     list  "<expires_at>|<hold id>", oldest first
-- KEYS[4]  held per user       {p<N>}:user_held  hash  <slot>:<user> -> held quantity
-- KEYS[5]  finished queue      {p<N>}:finished   list  "<finished at>|<hold id>", oldest first
--                                                (or "<at>|w:<entry id>": a waitlist entry)
-- KEYS[6]  events              {p<N>}:events     stream, one entry per state change
-- KEYS[7]  waitlist entries    {p<N>}:waitlist   hash  <entry id> -> entry JSON
-- KEYS[8]  waiting order       {p<N>}:wait_order sorted set, all scores 0, members
--                                                "<slot>:<join seq, 15 digits>:<entry id>"
--                                                (lexicographic: one slot's entries are
--                                                one contiguous range, in join order)
-- KEYS[9]  waiting counters    {p<N>}:waiting    hash  <slot> -> units waiting,
--                                                n:<slot> -> entries waiting,
--                                                u:<slot>:<user> -> that user's entries,
--                                                seq -> the partition's join counter,
--                                                offer_ms -> offer lifetime (last join's)
-- KEYS[10] lapse queue         {p<N>}:wait_lapse list  "<lapses_at>|<entry id>", oldest first
-- KEYS[11] offer backlog       {p<N>}:wait_more  set   slots whose offers stopped at the
--                                                per-call bound (the sweep continues them)
--
-- and the operation scripts the same three housekeeping arguments first:
--
-- ARGV[1]  clock, milliseconds; '' means redis TIME (tests pass an explicit clock)
-- ARGV[2]  housekeeping batch: at most this many due holds expired (and, in the
--          sweep, as many finished holds forgotten) per call
-- ARGV[3]  retention of finished (cancelled/expired) holds, milliseconds (the sweep's)
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
--
-- The due mark: field 'due' of the slots hash is no later than the head of the
-- expiry queue and of the lapse queue (NEVER when both are empty), so a command
-- that finds it in the future skips housekeeping without looking at the queues
-- (lib_housekeeping.lua housekeep). Housekeeping that looked sets it again; a new
-- hold lowers it in the HSET that takes its quantity (make_hold); every other
-- push to those queues drops it (queue_pushed), and the next command looks.

local NEVER = 9000000000000000

local K_SLOTS, K_HOLDS, K_EXPIRY, K_USER_HELD, K_FINISHED, K_EVENTS = 1, 2, 3, 4, 5, 6
local K_WAITLIST, K_WAIT_ORDER, K_WAITING, K_WAIT_LAPSE, K_WAIT_MORE = 7, 8, 9, 10, 11
-- A script's own keys come after the partition keys: KEYS[K_EXTRA], KEYS[K_EXTRA + 1]...
local K_EXTRA = 12

-- ``clock`` is a script argument: milliseconds, or '' for redis TIME.
local function clock_ms(clock)
    if clock ~= '' then
        return tonumber(clock)
    end
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The epoch marker is a field of the slots hash: a partition whose slots hash is
-- lost has lost its marker with it.
local function has_epoch()
    return redis.call('HEXISTS', KEYS[K_SLOTS], 'epoch') == 1
end

local function slot_field(slot_id, name)
    return slot_id .. ':' .. name
end

-- The partition's marker and one slot's counters, with the event sequence, in one
-- HMGET: {epoch, rem, held, state, seq} (strings, false when absent).
local function slot_counters(slot_id)
    local f = redis.call('HMGET', KEYS[K_SLOTS], 'epoch', slot_id .. ':rem', slot_id .. ':held',
        slot_id .. ':state', 'seq', 'due')
    return {epoch = f[1], rem = f[2], held = f[3], state = f[4], seq = f[5], due = f[6]}
end

-- Something was pushed to the expiry or lapse queue other than by make_hold: the
-- due mark may be too late now; the next housekeeping looks at the queues.
local function queue_pushed()
    redis.call('HDEL', KEYS[K_SLOTS], 'due')
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
-- Returns the event's JSON, which is also the reply. (A new single hold is
-- written by make_hold, lib_housekeeping.lua.)
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
    queue_pushed()
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

-- Why a new hold of ``quantity`` on the slot cannot be made for the user, as the
-- script's refusal ({'not_found'}, {'closed'}, {'capacity', remaining},
-- {'user_limit', held}); nil when it can. Single holds and group parts alike.
-- ``c`` is the slot as slot_counters() read it. With ``claim``, the user's held
-- counter is raised by ``quantity`` right away when the hold can be made (one
-- HINCRBY instead of HGET + HINCRBY; refused, it is put back as it was).
local function hold_refusal(slot_id, user_id, quantity, max_held, c, claim)
    local remaining = tonumber(c.rem)
    if not remaining then
        return {'not_found'}
    end
    if c.state ~= 'open' then
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
    local field = slot_field(slot_id, user_id)
    if claim then
        local held_by_user = redis.call('HINCRBY', KEYS[K_USER_HELD], field, quantity) - quantity
        if held_by_user + quantity > tonumber(max_held) then
            if held_by_user > 0 then
                redis.call('HINCRBY', KEYS[K_USER_HELD], field, -quantity)
            else
                redis.call('HDEL', KEYS[K_USER_HELD], field)
            end
            return {'user_limit', held_by_user}
        end
        return nil
    end
    local held_by_user = tonumber(redis.call('HGET', KEYS[K_USER_HELD], field) or '0')
    if held_by_user + quantity > tonumber(max_held) then
        return {'user_limit', held_by_user}
    end
    return nil
end
