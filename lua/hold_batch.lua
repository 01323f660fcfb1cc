-- hold_batch.lua — many hold requests on one partition in one call, each judged
-- as hold.lua judges one (lib.lua hold_request), in order: an item sees what the
-- items before it did (capacity, the user's cap, a key an earlier item bound).
--
-- KEYS[1..11]   partition keys, as in lib.lua
-- KEYS[11 + n]  item n's idempotency record, as hold.lua's KEYS[K_EXTRA]
-- ARGV[1..3]    clock, housekeeping batch, retention (lib.lua)
-- ARGV[4]       hold lifetime, ms
-- ARGV[5]       idempotency memory, ms
-- ARGV[6]       most units one user may have held on one slot
-- ARGV[7..]     five per item n (from ARGV[2 + 5n]): slot id, user id, quantity,
--               hold id to use if a new hold is made, the idempotency key as sent
-- Returns       one reply per item, in order, each as hold.lua's reply (created,
--               replayed or a refusal); every item {'state_unavailable'} when the
--               partition has lost its state
-- Emits         one hold event per hold made (and housekeeping's, once per call)
-- Time          milliseconds, redis TIME unless ARGV[1] gives a clock

local count = #KEYS - (K_EXTRA - 1)
local replies = {}
local now = ready(ARGV[1])
if not now then
    for n = 1, count do
        replies[n] = {'state_unavailable'}
    end
    return replies
end
housekeep(now, ARGV[2], ARGV[3])

for n = 1, count do
    local at = 2 + 5 * n
    replies[n] = hold_request(now, KEYS[K_EXTRA - 1 + n], {
        slot = ARGV[at], user = ARGV[at + 1], quantity = tonumber(ARGV[at + 2]),
        hold_id = ARGV[at + 3], ttl_ms = ARGV[4], remember_ms = ARGV[5],
        max_held = ARGV[6], key = ARGV[at + 4],
    })
end
return replies
