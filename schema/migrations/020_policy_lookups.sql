-- Two lookups of one row that could read hundreds, mended so that an
-- index finds the row whatever the planner knows of the table (with
-- autovacuum off it knows nothing; after a queue grew past its last
-- ANALYZE, too little):
--   * _policy_wake finds the oldest waiter of a key by the key's index;
--   * claim_many finds a released execution by its id and worker.
--
-- Like 019_policy_handover.sql, this file was written against:
--
-- River schema version: 8

-- _policy_wake is 019's, with the oldest waiter found by the key's index
-- alone. 019 checked each waiter's execution status in the same query,
-- and with that check in its filter the planner sorted every waiter of
-- the key to find the first: with 2,000 waiters, 10,000 buffers read per
-- hand-over (jobs.TestHandOverFromALongQueue). A waiter row goes in the
-- same transaction as its execution leaves the queue, so the check is
-- kept only as a guard, on the waiter chosen.
CREATE OR REPLACE FUNCTION attune._policy_wake(k text, before bigint DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    eid    bigint := 0;
    lim    integer;
    job_id bigint;
    status text;
    state  text;
    queue  text;
BEGIN
    LOOP
        SELECT pw.execution_id, pw.lim INTO eid, lim
        FROM attune.policy_waiter pw
        WHERE pw.key = k AND pw.execution_id > eid AND pw.execution_id < coalesce(before, 9223372036854775807)
        ORDER BY pw.execution_id LIMIT 1
        -- Two releases at once wake two waiters, not the same one twice.
        FOR UPDATE OF pw SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        SELECT e.job_id, e.status INTO job_id, status FROM attune.execution e WHERE e.id = eid;
        EXIT WHEN status IN ('requested', 'scheduled');
    END LOOP;
    -- Holders past a lowered limit still count: a free seat below it is
    -- not one to hand over while they hold theirs.
    IF (SELECT count(*) FROM (SELECT 1 FROM attune.policy_seat st
                              WHERE st.key = k AND st.execution_id IS NOT NULL LIMIT lim) x) >= lim
       OR NOT attune._policy_take_seat(k, lim, eid) THEN
        RETURN;
    END IF;
    DELETE FROM attune.policy_waiter pw WHERE pw.key = k AND pw.execution_id = eid;
    SELECT j.state::text, j.queue INTO state, queue FROM attune.river_job j WHERE j.id = job_id FOR UPDATE;
    -- River writes a short snooze as available at a later scheduled_at.
    IF state IN ('scheduled', 'available') THEN
        -- River fetches by scheduled_at: back to its enqueue time, so the
        -- woken job comes before newer ones that would only wait behind it.
        UPDATE attune.river_job j SET state = 'available', scheduled_at = least(j.scheduled_at, j.created_at, now())
        WHERE j.id = job_id;
        PERFORM attune.wake_workers(ARRAY[queue]);
    ELSIF state = 'running' THEN
        PERFORM pg_notify('attune_policy_woken', eid::text);
    END IF;
END $$;

-- A release finds its execution by id and worker (claim_many's, in 018):
-- with an index of the running executions by worker alone, the planner
-- took it for that lookup and read every execution the worker runs
-- (jobs.TestReleaseAmongManyRunning). With the id in the index too, the
-- same index finds the one row, and still serves the reaper's lookup of a
-- dead worker's executions.
CREATE INDEX execution_worker_running_id_idx ON attune.execution (worker, id)
    WHERE status IN ('running', 'canceling');
DROP INDEX attune.execution_worker_running_idx;
