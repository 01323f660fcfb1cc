-- GET the path given on the command line with the bearer token.
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

function request()
    return wrk.format("GET", nil, headers, nil)
end
