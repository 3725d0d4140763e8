-- The oldest waiter of a key is found by the key's index, whatever the
-- planner knows of the table.
--
-- Like 019_policy_handover.sql, this file was written against:
--
-- River schema version: 8

-- _policy_wake is 019's, with the oldest waiter found by the key's index
-- alone. 019 checked each waiter's execution status in the same query,
-- and with that check in its filter the planner sorted every waiter of
-- the key to find the first: with a thousand waiters, 3,000 buffers read
-- per hand-over. A waiter row goes in the same transaction as its
-- execution leaves the queue, so the check is kept only as a guard, on
-- the waiter chosen.
CREATE OR REPLACE FUNCTION attune._policy_wake(k text, before bigint DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    eid    bigint := 0;
    lim    integer;
    job_id bigint;
    status text;
    state  text;
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
    SELECT j.state::text INTO state FROM attune.river_job j WHERE j.id = job_id FOR UPDATE;
    -- River writes a short snooze as available at a later scheduled_at.
    IF state IN ('scheduled', 'available') THEN
        -- River fetches by scheduled_at: back to its enqueue time, so the
        -- woken job comes before newer ones that would only wait behind it.
        UPDATE attune.river_job j SET state = 'available', scheduled_at = least(j.scheduled_at, j.created_at, now())
        WHERE j.id = job_id;
        PERFORM attune.wake_workers(ARRAY[(SELECT j.queue FROM attune.river_job j WHERE j.id = job_id)]);
    ELSIF state = 'running' THEN
        PERFORM pg_notify('attune_policy_woken', eid::text);
    END IF;
END $$;
