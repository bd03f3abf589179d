-- GET /api/v1/customers/{id}/addresses with a customer id picked at random per request.
-- args: <file with one customer id per line> <bearer token>
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local report = require("report")

local ids
local count

function init(args)
  ids = report.read_lines(args[1])
  count = #ids
  wrk.headers["Authorization"] = "Bearer " .. args[2]
  wrk.headers["Accept"] = "application/json"
  report.seed()
end

function request()
  return wrk.format("GET", "/api/v1/customers/" .. ids[math.random(count)] .. "/addresses")
end
