-- What each execution costs PostgreSQL, with the same semantics:
--   * claims in batches: a replica claims the jobs River handed it at about
--     the same time in one statement, admitting those whose action or pack
--     has a policy in the same statement, and gives back the concurrency
--     slots of the processes that ended;
--   * settle, with the same writes, row by row;
--   * enqueue's two SQL-language helpers in PL/pgSQL, whose plans are kept.
--
-- Like 009_settle.sql, this file touches River's tables
-- (attune.river_job, in settle's token check); it was written against the
-- same River schema version:
--
-- River schema version: 8

-- requested | scheduled | running → running
--
-- claim_many claims many executions in one statement: execution_ids[i]
-- for attempts[i] of River job job_ids[i], each with attune.claim
-- (009_settle.sql, 014_claim_retry.sql), whose conditions, writes and
-- columns it keeps. It returns one row per execution that may run or
-- waits, keyed by job_id:
--   admitted   true: claimed, the other columns filled (retry_on from the
--              action's retry policy, when it has one admission reads);
--              false: not claimed, and cancelled, retry_at and reason are
--              policy_admit's answer
--   holds_slots  claimed holding concurrency slots: the worker gives them
--              back as its process ends
-- An execution that may not run returns no row, as with claim.
--
-- Admission: an execution whose action or pack has a policy is admitted by
-- policy_admit (011_policy.sql, 016_policy_fixes.sql) in the same
-- statement, before its claim: no round trip of its own. Only a policy
-- that holds nothing but retention (prune's) and a retry block without
-- "on" (policy_next_retry's, read when an attempt fails) is known to leave
-- policy_admit nothing to do but admit; anything else, a policy key a later
-- migration adds included, goes through admission. An error of
-- policy_admit's fails the statement; the worker tells it by its context
-- (worker/claim.go). (A subtransaction to catch it here cost more than the
-- rest of the admission.)
--
-- Releases: first, the concurrency slots of the attempts whose process has
-- ended (released_ids[i], released_attempts[i]) are given back, so that a
-- claim in the same statement may take them. A slot stands for a running
-- process: freed by the settle's transaction, which commits after the
-- process slot has gone to the next job, it made that job's admission find
-- the key full and wait for the settle's wake (1.9 admissions per
-- execution where the limit could never bind). Settle still frees what is
-- left (a release lost to a crash, an execution reaped). Only the worker's
-- own running attempt is released, so a late release never frees the slot
-- of a later attempt admitted elsewhere.
--
-- It works row by row, each statement on scalar parameters: their plans
-- probe primary keys whatever the tables hold. (One statement over the
-- arrays was planned anew for every call or, forced to a generic plan,
-- kept one made while the tables were small: a hash join over every queued
-- execution.) Like claim, it commits without waiting for the WAL flush.
CREATE FUNCTION attune.claim_many(execution_ids bigint[], attempts integer[], job_ids bigint[], worker text,
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
        -- The deferred trigger policy_slot_freed (011_policy.sql) wakes the
        -- next waiter of each key at commit. A slot being deleted already
        -- (its settle or a cancel in flight, which lock the execution row
        -- first) is skipped, not waited for: two orders of locking the same
        -- rows could deadlock, and that writer frees it anyway.
        DELETE FROM attune.policy_slot s
        WHERE (s.key, s.execution_id) IN (
            SELECT x.key, x.execution_id FROM attune.policy_slot x
            WHERE x.execution_id = claim_many.released_ids[i]
                AND EXISTS (SELECT 1 FROM attune.execution e
                            WHERE e.id = claim_many.released_ids[i] AND e.status IN ('running', 'canceling')
                                AND e.worker = claim_many.worker AND e.attempt = claim_many.released_attempts[i])
            FOR UPDATE OF x SKIP LOCKED);
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(claim_many.execution_ids), 0) LOOP
        x_id := claim_many.execution_ids[i];
        x_job := claim_many.job_ids[i];
        x_on := NULL;
        x_held := false;
        -- See Admission above for what needs policy_admit.
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
            x_held := EXISTS (SELECT 1 FROM attune.policy_slot s WHERE s.execution_id = x_id);
        END IF;
        RETURN QUERY SELECT x_job, true, false, NULL::timestamptz, NULL::text, x_on, x_held, c.*
            FROM attune.claim(x_id, claim_many.worker, claim_many.attempts[i], x_job) c;
    END LOOP;
END $$;

-- running | canceling → the attempt's outcome, or → requested to retry
--
-- settle is 009_settle.sql's, with the same token check and writes, made
-- row by row for the reason claim_many is: as one statement over the
-- arrays, its generic plan (planned once per connection, while the tables
-- may still be small) drove the update from the partial indexes on status
-- and read every unfinished execution, the whole queue, for each batch it
-- wrote. Each row's statement here looks the execution and its River job
-- up by primary key. The secret parameters of a row made final go as
-- before, by the trigger execution_secret_until_final (008_secrets.sql),
-- which 009's own delete duplicated.
CREATE OR REPLACE FUNCTION attune.settle(
    ids bigint[], job_ids bigint[], attempts integer[], statuses text[], results jsonb[], exit_codes integer[],
    stdouts text[], stderrs text[], stdout_truncated boolean[], stderr_truncated boolean[],
    errors text[], retries boolean[], started_ats timestamptz[], finished_ats timestamptz[],
    worker text, river_id text)
RETURNS TABLE (id bigint, retry boolean)
LANGUAGE plpgsql AS $$
DECLARE
    x_id      bigint;
    x_job     bigint;
    x_attempt integer;
    x_retry   boolean;
    w_id      bigint;
    w_retry   boolean;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(settle.ids), 0) LOOP
        x_id := settle.ids[i];
        x_job := settle.job_ids[i];
        x_attempt := settle.attempts[i];
        x_retry := settle.retries[i];
        UPDATE attune.execution e SET
            status = CASE WHEN x_retry AND e.status = 'canceling' THEN 'cancelled' ELSE settle.statuses[i] END,
            result = settle.results[i], exit_code = settle.exit_codes[i],
            stdout = settle.stdouts[i], stderr = settle.stderrs[i],
            stdout_truncated = settle.stdout_truncated[i], stderr_truncated = settle.stderr_truncated[i],
            error = CASE WHEN x_retry AND e.status = 'canceling' THEN 'Cancelled while running' ELSE settle.errors[i] END,
            worker = settle.worker, attempt = x_attempt,
            started_at = coalesce(settle.started_ats[i], e.started_at, now()),
            finished_at = CASE WHEN x_retry AND e.status <> 'canceling' THEN NULL
                               ELSE coalesce(settle.finished_ats[i], now()) END
        FROM attune.river_job j
        WHERE e.id = x_id AND e.job_id = x_job AND j.id = x_job
            AND j.state = 'running' AND j.attempt = x_attempt
            AND j.attempted_by[array_upper(j.attempted_by, 1)] = settle.river_id
            AND ((e.status IN ('running', 'canceling') AND e.worker = settle.worker AND e.attempt = x_attempt)
                 OR e.status IN ('requested', 'scheduled'))
        RETURNING e.id, e.status = 'requested' INTO w_id, w_retry;
        CONTINUE WHEN NOT FOUND;
        -- A final row's secret parameters go with it: the trigger
        -- execution_secret_until_final (008_secrets.sql) deletes them.
        id := w_id;
        retry := w_retry;
        RETURN NEXT;
    END LOOP;
END $$;

-- enqueue_prepare and enqueue_record, as in 009_settle.sql and
-- 005_state_machine.sql, in PL/pgSQL. A SQL-language function called from
-- another function's statement is planned again at every call; attune.enqueue
-- calls both once per execution, and their planning was a third of its cost.
CREATE OR REPLACE FUNCTION attune.enqueue_prepare(
    action_ref text, parameters jsonb, options jsonb,
    OUT execution_id bigint, OUT queue text, OUT public_parameters jsonb, OUT secret_parameters jsonb,
    OUT priority integer, OUT max_attempts integer, OUT scheduled_at timestamptz, OUT timeout_seconds integer,
    OUT rule_ref text, OUT event_id bigint)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT * INTO execution_id, queue, public_parameters, secret_parameters, priority, max_attempts,
        scheduled_at, timeout_seconds, rule_ref, event_id
    FROM attune._enqueue_prepare(enqueue_prepare.action_ref, enqueue_prepare.parameters, enqueue_prepare.options,
        NULL, NULL);
END $$;

CREATE OR REPLACE FUNCTION attune.enqueue_record(
    execution_id bigint, action_ref text, public_parameters jsonb, secret_parameters jsonb,
    priority integer, max_attempts integer, scheduled_at timestamptz, timeout_seconds integer,
    rule_ref text, event_id bigint, job_id bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO attune.execution (id, action_ref, status, parameters, priority, max_attempts, scheduled_at,
                                  timeout_seconds, rule_ref, event_id, job_id)
    VALUES (enqueue_record.execution_id, enqueue_record.action_ref,
            CASE WHEN enqueue_record.scheduled_at > now() THEN 'scheduled' ELSE 'requested' END,
            enqueue_record.public_parameters, enqueue_record.priority, enqueue_record.max_attempts,
            enqueue_record.scheduled_at, enqueue_record.timeout_seconds, enqueue_record.rule_ref,
            enqueue_record.event_id, enqueue_record.job_id);
    IF enqueue_record.secret_parameters <> '{}' THEN
        INSERT INTO attune.execution_secret (execution_id, parameters)
        VALUES (enqueue_record.execution_id, enqueue_record.secret_parameters);
    END IF;
END $$;
