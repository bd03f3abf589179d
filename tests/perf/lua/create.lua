-- POST /api/v1/customers with a unique email per request (run id + wrk thread + counter).
-- args: <bearer token> <run id>
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local report = require("report")

local FIRST = {"Anna", "Ben", "Chloe", "David", "Emma", "Felix", "Grace", "Hugo", "Ines", "Jonas"}
local LAST = {"Keller", "Lopez", "Martin", "Nguyen", "Olsen", "Perez", "Quinn", "Rossi", "Schmidt", "Tanaka"}
-- Area codes the bulk load does not use, and a random number: new customers rarely share a phone
-- (a shared phone makes them duplicate candidates, which is not what a registration usually is).
local AREAS = {"206", "303", "404", "480", "602", "612", "713", "720", "813", "919"}
local run_id
local counter = 0

function init(args)
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json"
  run_id = args[2]
  report.seed()
end

function request()
  counter = counter + 1
  local first = FIRST[counter % #FIRST + 1]
  local last = LAST[math.floor(counter / #FIRST) % #LAST + 1]
  local body = string.format(
    '{"email":"%s.%s.b%s.%d.%d@example.com","first_name":"%s","last_name":"%s",' ..
    '"phone":"+1%s%07d","registration_source":"api","tags":["bench"],' ..
    '"preferences":{"language":"en-US","currency":"USD","timezone":"America/New_York"}}',
    first:lower(), last:lower(), run_id, tid, counter, first, last,
    AREAS[math.random(#AREAS)], math.random(2000000, 9999999))
  return wrk.format("POST", "/api/v1/customers", nil, body)
end
