-- Shared by every benchmark script: numbers the threads, counts response statuses and prints
-- one `BENCH_JSON {...}` line with throughput and latency percentiles (microseconds) at the end.
-- A script does `package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path`
-- and `require("report")`, then defines its own init(args) and request().

local threads = {}
local next_tid = 1

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

statuses = {}

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses") or {}
    for status, count in pairs(counts) do
      merged[status] = (merged[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(merged) do
    table.insert(parts, string.format('"%s":%d', status, count))
  end
  -- the whole latency histogram (microseconds: count), so that runs can be merged exactly
  local histogram = {}
  for i = 1, #latency do
    local value, count = latency(i)
    table.insert(histogram, string.format('"%d":%d', value, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p95":%d,"p99":%d,"p999":%d},' ..
    '"statuses":{%s},"histogram_us":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency:percentile(99.9),
    table.concat(parts, ","), table.concat(histogram, ",")))
end

local M = {}

function M.read_lines(path)
  local values = {}
  for line in io.lines(path) do
    if line ~= "" then table.insert(values, line) end
  end
  if #values == 0 then error("no values in " .. path) end
  return values
end

function M.seed()
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
  for _ = 1, 10 do math.random() end
end

return M
