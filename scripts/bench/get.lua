-- GET one path; HEADER_NAME/HEADER_VALUE (environment) add one request header.
dofile(os.getenv("BENCH_DIR") .. "/report.lua")

local name, value = os.getenv("HEADER_NAME"), os.getenv("HEADER_VALUE")
if name and name ~= "" then wrk.headers[name] = value end
