-- bench/paced.lua: wrk script of `bench/compare latency`. Each connection waits PACE_MS (1)
-- milliseconds after every response before it sends the next request, so the proxies are
-- measured below saturation, at about the same request rate, instead of at their maximum.
-- Prints one line with the percentiles wrk's --latency leaves out.
local pace = tonumber(os.getenv("PACE_MS") or "1")

delay = function()
  return pace
end

done = function(summary, latency, requests)
  local out = "paced:"
  for _, p in ipairs({50, 90, 99, 99.9}) do
    out = out .. string.format(" p%s=%.3f", p, latency:percentile(p) / 1000)
  end
  io.write(out .. string.format(" max=%.3f\n", latency.max / 1000))
end
