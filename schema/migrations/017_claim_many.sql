-- What each execution costs PostgreSQL, with the same semantics:
--   * claims in batches: a replica claims the jobs River handed it at about
--     the same time in one statement, and skips the admission round trip
--     for actions that have no policy admission could act on;
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
-- (009_settle.sql), whose conditions, writes and columns it keeps, the
-- rows keyed by job_id. An execution that may not run returns no row, as
-- with claim.
--
-- Admission: policy_admit (011_policy.sql) must decide before the claim of
-- an execution whose action or pack has a policy it reads. Such a row,
-- unless admitted[i] says the worker has asked policy_admit already, is
-- not claimed: it comes back with must_admit and nothing else, and the
-- worker admits it, then claims it again with admitted. Only a policy that
-- holds nothing but retention (prune's) and a retry block without "on"
-- (policy_next_retry's, read when an attempt fails) is known to leave
-- policy_admit nothing to do but admit; anything else, a policy key a later
-- migration adds included, goes through admission.
--
-- It works row by row, each statement on scalar parameters: their plans
-- probe primary keys whatever the tables hold. (One statement over the
-- arrays was planned anew for every call or, forced to a generic plan,
-- kept one made while the tables were small: a hash join over every queued
-- execution.) Like claim, it commits without waiting for the WAL flush.
CREATE FUNCTION attune.claim_many(execution_ids bigint[], attempts integer[], job_ids bigint[], admitted boolean[],
    worker text)
RETURNS TABLE (
    job_id bigint, must_admit boolean,
    max_attempts integer, action_ref text, pack_ref text, runner_type text, path text,
    parameters jsonb, secret_parameters jsonb, declarations jsonb, result_schema jsonb,
    timeout_seconds integer, action_timeout_seconds integer, parameter_delivery text,
    parameter_format text, output_format text, rule_ref text, trigger_ref text,
    action_updated timestamptz, secrets jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    x_id  bigint;
    x_job bigint;
    x_must boolean;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(claim_many.execution_ids), 0) LOOP
        x_id := claim_many.execution_ids[i];
        x_job := claim_many.job_ids[i];
        x_must := NOT coalesce(claim_many.admitted[i], false) AND EXISTS (
            SELECT 1 FROM attune.execution e JOIN attune.action a ON a.ref = e.action_ref
                LEFT JOIN attune.pack p ON p.ref = a.pack_ref
            WHERE e.id = x_id AND NOT (a.policy - 'retention' - 'retry' = '{}'
                AND NOT coalesce(a.policy -> 'retry' ? 'on', false)
                AND coalesce(p.policy, '{}') - 'retention' = '{}'));
        IF x_must THEN
            RETURN QUERY SELECT x_job, true, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text,
                NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::integer, NULL::integer, NULL::text,
                NULL::text, NULL::text, NULL::text, NULL::text, NULL::timestamptz, NULL::jsonb;
        ELSE
            RETURN QUERY SELECT x_job, false, c.* FROM attune.claim(x_id, claim_many.worker, claim_many.attempts[i], x_job) c;
        END IF;
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
