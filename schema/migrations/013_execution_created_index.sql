-- Lists filtered by time (execution list --since/--until, the API's since
-- and until) and the console's last-hour chart and counts read executions
-- by created_at; without an index each of them scanned the whole table,
-- the console every two seconds while a page stayed open.
CREATE INDEX execution_created_at_idx ON attune.execution (created_at);
