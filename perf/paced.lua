-- Paces each wrk connection to one request every PACE_MS milliseconds, so that
-- `connections * 1000 / PACE_MS` requests per second are offered whatever the server's speed:
-- latency compared at equal load, not at each server's saturation point.
local pace = tonumber(os.getenv("PACE_MS") or "1")
function delay()
  return pace
end
