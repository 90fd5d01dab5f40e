-- The W3C traceparent of the API request that submitted a workload: every scheduling round and
-- retry of the workload continues that trace (docs/observability.md, "Traces").
ALTER TABLE workloads ADD COLUMN traceparent TEXT;
