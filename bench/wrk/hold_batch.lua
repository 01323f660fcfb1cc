-- POST /holds/batch with BENCH_BATCH items (default 100), each a fresh key on a
-- random slot of 1..BENCH_SLOTS.
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")
local size = tonumber(os.getenv("BENCH_BATCH") or "100")

function request()
    local items = {}
    for i = 1, size do
        items[i] = '{"slot_id":' .. math.random(1, slots) .. ',"idempotency_key":"' .. next_key() .. '"}'
    end
    return wrk.format("POST", "/holds/batch", headers, '{"items":[' .. table.concat(items, ",") .. "]}")
end
