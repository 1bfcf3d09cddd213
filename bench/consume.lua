-- POST /api/clients/<id>/usage {"count": 1} for one of CLIENTS clients, spread at random.
local clients = tonumber(os.getenv("CLIENTS") or "1")
wrk.method = "POST"
wrk.body = '{"count": 1}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("SERVICE_KEY")

request = function()
  local id = math.random(0, clients - 1)
  return wrk.format(nil, "/api/clients/bench-" .. id .. "/usage")
end

done = function(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, non2xx))
end
