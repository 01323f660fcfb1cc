-- Shared by the wrk scripts: the bearer token and slot range come from the environment.
local token = os.getenv("BENCH_TOKEN")
slots = tonumber(os.getenv("BENCH_SLOTS") or "1")
headers = {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
}
counter = 0
prefix = tostring(math.random(1, 1e9))

-- A fresh Idempotency-Key per request: <random run prefix>-<thread>-<counter>.
function next_key()
    counter = counter + 1
    return prefix .. "-" .. counter
end

function init(args)
    math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
    prefix = tostring(math.random(1, 1e9))
end
