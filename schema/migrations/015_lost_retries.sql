-- River schema version: 8
--
-- (no status change) lost_fetches is 009's, and also finds the jobs whose
-- attempt ran and was settled to run again (the row back in requested at
-- the job's own attempt) but whose retry River never recorded: River's
-- completer gives up after a few seconds of errors, and the job would stay
-- running until River's rescuer, after the longest timeout. 009 left these
-- out because River may still be writing the retry; the worker now holds
-- each job it returned for the same age before it counts as lost
-- (worker/server.go recoverLostJobs), so only abandoned writes remain.
CREATE OR REPLACE FUNCTION attune.lost_fetches(river_id text, older_than interval)
RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    SELECT j.id FROM attune.river_job j
    JOIN attune.execution e ON e.job_id = j.id
    WHERE j.state = 'running' AND e.status IN ('requested', 'scheduled') AND e.attempt <= j.attempt
        AND j.attempted_by[array_upper(j.attempted_by, 1)] = lost_fetches.river_id
        AND j.attempted_at < now() - lost_fetches.older_than;
END $$;

-- requeue_lost_fetches returns the jobs lost_fetches found to the queue. A
-- fetch that never started its attempt does not count it (the attempt goes
-- back one); an attempt that ran keeps its number, so the next is the one
-- after, as River's retry would have made it.
CREATE OR REPLACE FUNCTION attune.requeue_lost_fetches(job_ids bigint[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE attune.river_job j SET state = 'available', scheduled_at = now(),
        attempt = CASE WHEN e.attempt < j.attempt THEN greatest(j.attempt - 1, 0) ELSE j.attempt END
    FROM attune.execution e
    WHERE j.id = ANY(requeue_lost_fetches.job_ids) AND j.state = 'running'
        AND e.job_id = j.id AND e.status IN ('requested', 'scheduled');
END $$;
