-- POST a hold with a fresh Idempotency-Key to a random slot of 1..BENCH_SLOTS.
-- BENCH_PATH_PREFIX switches between the Redis design (/slots) and PostgreSQL (/pg/slots).
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")
local path_prefix = os.getenv("BENCH_PATH_PREFIX") or "/slots/"
local body = '{"quantity":1}'

function request()
    headers["Idempotency-Key"] = next_key()
    local slot = math.random(1, slots)
    return wrk.format("POST", path_prefix .. slot .. "/hold", headers, body)
end
