-- A realistic mix: READ_SHARE of requests GET /users/<id>, the rest PUT it,
-- ids 1..IDS drawn Zipf-like (rank k with weight 1/k), counting cache hits.
dofile(os.getenv("BENCH_DIR") .. "/report.lua")

local ids = tonumber(os.getenv("IDS") or "10000")
local read_share = tonumber(os.getenv("READ_SHARE") or "0.95")
local cdf, counter = {}, 0

do
   local total = 0
   for k = 1, ids do total = total + 1 / k end
   local running = 0
   for k = 1, ids do
      running = running + 1 / k / total
      cdf[k] = running
   end
end

local function zipf_id()
   local u, lo, hi = math.random(), 1, ids
   while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if cdf[mid] < u then lo = mid + 1 else hi = mid end
   end
   return lo
end

wrk.headers["Content-Type"] = "application/json"

function request()
   local id = zipf_id()
   if math.random() < read_share then
      return wrk.format("GET", "/users/" .. id, nil, nil)
   end
   counter = counter + 1
   return wrk.format("PUT", "/users/" .. id, nil, '{"name":"Zipf ' .. counter .. '"}')
end

function response(status, headers, body)
   count_cache(status, headers)
end
