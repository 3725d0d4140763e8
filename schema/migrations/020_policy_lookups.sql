-- Two lookups of one row that could read hundreds, written so that an
-- index finds the row whatever the planner knows of the table (with
-- autovacuum off it knows nothing; after a queue grew past its last
-- ANALYZE, too little):
--   * _policy_wake finds the oldest waiter of a key by the key's index;
--   * claim_many finds a released execution by its primary key.
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

-- claim_many is 018's, with the release's lookup by primary key
-- (jobs.TestReleaseAmongManyRunning).
CREATE OR REPLACE FUNCTION attune.claim_many(execution_ids bigint[], attempts integer[], job_ids bigint[], worker text,
    released_ids bigint[], released_attempts integer[])
RETURNS TABLE (
    job_id bigint, admitted boolean, cancelled boolean, retry_at timestamptz, reason text, retry_on text[],
    holds_slots boolean,
    max_attempts integer, action_ref text, pack_ref text, runner_type text, path text,
    parameters jsonb, secret_parameters jsonb, declarations jsonb, result_schema jsonb,
    timeout_seconds integer, action_timeout_seconds integer, parameter_delivery text,
    parameter_format text, output_format text, rule_ref text, trigger_ref text,
    action_updated timestamptz, secrets jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    x_id   bigint;
    x_job  bigint;
    x_must boolean;
    adm    record;
    x_on   text[];
    x_held boolean;
BEGIN
    -- Like claim's, this commit need not wait for the WAL flush (a lost
    -- release is made again by settle).
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR i IN 1 .. coalesce(cardinality(claim_many.released_ids), 0) LOOP
        -- The attempt's row is locked first, as settle, cancel and the
        -- reaper lock it before they free its seats; one of them holding
        -- it is skipped, not waited for: that writer frees the seats.
        -- Without the row's lock, a settle's free that ran while this one
        -- committed would lock the seat just freed until the settle
        -- committed, and the waiter woken by this release, skipping the
        -- locked seat, would find none free. The deferred trigger
        -- policy_seat_freed wakes the next waiter of each key at commit.
        CONTINUE WHEN NOT EXISTS (
            SELECT 1 FROM attune.execution e
            WHERE e.id = claim_many.released_ids[i] AND e.status IN ('running', 'canceling')
                -- "(… = …) IS TRUE", which means "=" but is no index
                -- condition: with a bare "=" the planner may take the partial
                -- index of running executions by worker
                -- (execution_worker_running_idx) and read every execution
                -- the worker runs, where the primary key finds the one row.
                AND (e.worker = claim_many.worker) IS TRUE AND e.attempt = claim_many.released_attempts[i]
            FOR SHARE SKIP LOCKED);
        UPDATE attune.policy_seat st SET execution_id = NULL WHERE st.execution_id = claim_many.released_ids[i];
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(claim_many.execution_ids), 0) LOOP
        x_id := claim_many.execution_ids[i];
        x_job := claim_many.job_ids[i];
        x_on := NULL;
        x_held := false;
        -- What needs policy_admit: see Admission in 017_claim_many.sql.
        x_must := EXISTS (
            SELECT 1 FROM attune.execution e JOIN attune.action a ON a.ref = e.action_ref
                LEFT JOIN attune.pack p ON p.ref = a.pack_ref
            WHERE e.id = x_id AND NOT (a.policy - 'retention' - 'retry' = '{}'
                AND NOT coalesce(a.policy -> 'retry' ? 'on', false)
                AND coalesce(p.policy, '{}') - 'retention' = '{}'));
        IF x_must THEN
            SELECT * INTO adm FROM attune.policy_admit(x_id, claim_many.worker);
            IF NOT adm.admitted THEN
                RETURN QUERY SELECT x_job, false, adm.cancelled, adm.retry_at, adm.reason, NULL::text[], false,
                    NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text,
                    NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::integer, NULL::integer, NULL::text,
                    NULL::text, NULL::text, NULL::text, NULL::text, NULL::timestamptz, NULL::jsonb;
                CONTINUE;
            END IF;
            x_on := adm.retry_on;
            x_held := adm.holds_slots;
        END IF;
        RETURN QUERY SELECT x_job, true, false, NULL::timestamptz, NULL::text, x_on, x_held, c.*
            FROM attune.claim(x_id, claim_many.worker, claim_many.attempts[i], x_job) c;
    END LOOP;
END $$;
