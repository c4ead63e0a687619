-- Included by every benchmark run: one JSON line with what wrk measured.
-- Responses are counted by status and by cache headers when COUNT_CACHE is set.

threads = {}  -- global: the other scripts' setup() adds to it too

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   l1_hits, l2_hits, l2_seen, answered = 0, 0, 0, 0
end

function count_cache(status, headers)
   answered = answered + 1
   if headers["X-Cache-Status"] == "HIT" then l1_hits = l1_hits + 1 end
   local l2 = headers["X-Cache-L2"]
   if l2 then
      l2_seen = l2_seen + 1
      if l2 == "HIT" then l2_hits = l2_hits + 1 end
   end
end

function done(summary, latency, requests)
   local totals = {l1_hits = 0, l2_hits = 0, l2_seen = 0, answered = 0}
   for _, thread in ipairs(threads) do
      for key, _ in pairs(totals) do
         totals[key] = totals[key] + (thread:get(key) or 0)
      end
   end
   local errors = summary.errors
   io.write(string.format(
      '{"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,' ..
      '"non_2xx":%d,"socket_errors":%d,"l1_hits":%d,"l2_hits":%d,"l2_seen":%d,"answered":%d}\n',
      summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
      latency:percentile(50) / 1000, latency:percentile(99) / 1000,
      errors.status, errors.connect + errors.read + errors.write + errors.timeout,
      totals.l1_hits, totals.l2_hits, totals.l2_seen, totals.answered))
end
