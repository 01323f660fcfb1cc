-- GET the path given on the command line with the bearer token, asking for gzip.
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")
headers["Accept-Encoding"] = "gzip"

function request()
    return wrk.format("GET", nil, headers, nil)
end
