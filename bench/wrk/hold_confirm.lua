-- Alternate: POST a hold, then POST a confirm of a hold id read from an answer.
-- wrk keeps one Lua state per thread for all its connections, hence the queue.
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")
local pending = {}
local body = '{"quantity":1}'

function request()
    local id = table.remove(pending)
    if id then
        headers["Idempotency-Key"] = nil
        return wrk.format("POST", "/holds/" .. id .. "/confirm", headers, nil)
    end
    headers["Idempotency-Key"] = next_key()
    return wrk.format("POST", "/slots/" .. math.random(1, slots) .. "/hold", headers, body)
end

function response(status, hdrs, resp)
    if status == 201 then
        local id = resp:match('"hold_id":"([^"]+)"')
        if id then
            table.insert(pending, id)
        end
    end
end
