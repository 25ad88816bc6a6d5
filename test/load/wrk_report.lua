-- wrk script for test/load/run.sh: when the run is done, print one JSON line
-- with what the report needs (wrk's own summary is text meant for people).
-- Latencies are in microseconds; non2xx counts answers that were not 2xx, so a
-- server that denies (401) cannot pass for a fast one.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
