-- One endpoint under load, a client picked at random per request.
-- Environment: METHOD, PATH_TEMPLATE (with {id}), BODY (JSON or empty; {id} there too), KEY, CLIENTS,
-- CLIENT_PREFIX, THEN_TEMPLATE (empty, or an endpoint pair's second request, with {id} and {hold}).
--
-- A pair: every 201 answer (a hold, which echoes the client id as its reference) queues its
-- capture, and a thread's next request sends the oldest queued capture before any new hold. The
-- queue is per thread, not per connection (wrk's Lua has no per-connection state), so a capture
-- may go out on another connection of the thread than its hold; it never waits behind more than
-- the thread's connections. "pairs" counts the captures answered 200.
local clients = tonumber(os.getenv("CLIENTS"))
local prefix = os.getenv("CLIENT_PREFIX")
local template = os.getenv("PATH_TEMPLATE")
local body = os.getenv("BODY") or ""
local body_names_client = body:find("{id}", 1, true) ~= nil
local then_template = os.getenv("THEN_TEMPLATE") or ""

wrk.method = os.getenv("METHOD")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEY")
if body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("seed", #threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + seed)
end

local queued, first, last = {}, 1, 0
pairs_done = 0

function request()
  if first <= last then
    local path = queued[first]
    queued[first], first = nil, first + 1
    return wrk.format(nil, path, nil, "{}")
  end
  local client = prefix .. math.random(0, clients - 1)
  local path = template:gsub("{id}", client)
  if body_names_client then
    return wrk.format(nil, path, nil, (body:gsub("{id}", client)))
  end
  return wrk.format(nil, path)
end

-- Defined for pairs only: with a response() wrk reads every answer's body.
if then_template ~= "" then
  function response(status, headers, answer)
    if status == 201 then
      local client = answer:match('"reference":%s*"([^"]+)"')
      local hold = answer:match('"holdId":%s*(%d+)')
      last = last + 1
      queued[last] = then_template:gsub("{id}", client):gsub("{hold}", hold)
    elseif status == 200 then
      pairs_done = pairs_done + 1
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local pair_count = ""
  if then_template ~= "" then
    local total = 0
    for _, thread in ipairs(threads) do
      total = total + thread:get("pairs_done")
    end
    pair_count = string.format(', "pairs": %d', total)
  end
  io.write(string.format(
    'RESULT {"requests": %d, "rps": %.1f, "p50_ms": %.2f, "p99_ms": %.2f, "non2xx": %d, "socket_errors": %d%s}\n',
    summary.requests, summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, e.status, e.connect + e.read + e.write + e.timeout, pair_count))
end
