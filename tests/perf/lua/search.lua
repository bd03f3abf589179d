-- GET /api/v1/customers?q=<partial email> with a term picked at random per request.
-- args: <file with one search term per line> <bearer token>
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local report = require("report")

local terms
local count

local function urlencode(value)
  return (value:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

function init(args)
  terms = {}
  for _, term in ipairs(report.read_lines(args[1])) do
    table.insert(terms, urlencode(term))
  end
  count = #terms
  wrk.headers["Authorization"] = "Bearer " .. args[2]
  wrk.headers["Accept"] = "application/json"
  report.seed()
end

function request()
  return wrk.format("GET", "/api/v1/customers?q=" .. terms[math.random(count)])
end
