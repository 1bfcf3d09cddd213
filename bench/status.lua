-- GET /api/clients/<id>/quota-status for one of CLIENTS clients, spread at random.
local clients = tonumber(os.getenv("CLIENTS") or "1")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("SERVICE_KEY")

request = function()
  return wrk.format("GET", "/api/clients/bench-" .. math.random(0, clients - 1) .. "/quota-status")
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.errors.status))
end
