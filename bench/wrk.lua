-- One endpoint under load, a client picked at random per request.
-- Environment: METHOD, PATH_TEMPLATE (with {id}), BODY (JSON or empty), KEY, CLIENTS, CLIENT_PREFIX.
local clients = tonumber(os.getenv("CLIENTS"))
local prefix = os.getenv("CLIENT_PREFIX")
local template = os.getenv("PATH_TEMPLATE")
local body = os.getenv("BODY") or ""

wrk.method = os.getenv("METHOD")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEY")
if body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + seed)
end

function request()
  local path = template:gsub("{id}", prefix .. math.random(0, clients - 1))
  return wrk.format(nil, path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "rps": %.1f, "p50_ms": %.2f, "p99_ms": %.2f, "non2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, e.status, e.connect + e.read + e.write + e.timeout))
end
