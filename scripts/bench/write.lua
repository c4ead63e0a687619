-- Writes: POST /users with unique emails, or PUT /users/<id> over ids 1..IDS (MODE=post|put).
dofile(os.getenv("BENCH_DIR") .. "/report.lua")

local mode, ids, run = os.getenv("MODE"), tonumber(os.getenv("IDS") or "1000"), os.getenv("RUN_ID")
local counter = 0
thread_id = 0  -- global: setup() sets it per thread

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_id", #threads)
end

wrk.headers["Content-Type"] = "application/json"

function request()
   counter = counter + 1
   if mode == "post" then
      local email = string.format("bench-%s-%d-%d@example.com", run, thread_id, counter)
      return wrk.format("POST", "/users", nil, '{"name":"Bench writer","email":"' .. email .. '"}')
   end
   local id = math.random(1, ids)
   return wrk.format("PUT", "/users/" .. id, nil, '{"name":"Bench ' .. counter .. '"}')
end
