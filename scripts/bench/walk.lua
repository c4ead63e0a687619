-- GET PREFIX<id> for ids FIRST, FIRST + 1, ...: each id once, so every read
-- of an item is the first since the cache was warm (an L2 miss).
dofile(os.getenv("BENCH_DIR") .. "/report.lua")

local prefix = os.getenv("PREFIX")
local id = tonumber(os.getenv("FIRST"))

function request()
   id = id + 1
   return wrk.format("GET", prefix .. id, nil, nil)
end

function response(status, headers, body)
   count_cache(status, headers)
end
