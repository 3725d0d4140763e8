-- The execution state machine, and everything attune does to River's tables.
--
-- Every change of attune.execution.status is made by one of the functions
-- below; Go calls them and writes no status of its own. The table of states
-- and of which function moves each where is in the doc of package jobs
-- (jobs/doc.go). Where River's job must move with the execution, the Go
-- caller uses River's own API (InsertManyTx, JobCompleteTx, JobCancelTx) in
-- the same transaction.
--
-- This is also the one file where attune touches River's tables
-- (attune.river_job) or speaks River's notification protocol
-- (attune.river_insert). Those are River's internals, not its API: they may
-- change with any River release. The SQL here was written against:
--
-- River schema version: 8
--
-- the latest migration rivermigrate has for the riverpgxv5 driver (River
-- v0.51.2). schema.TestRiverSchemaVersionPinned fails when River's latest
-- version moves past that number: review every river_ statement in this
-- file against River's new migrations, then raise the number here and in
-- the test.
--
-- The functions that migrations 002 and 004 created and that belong here are
-- replaced (CREATE OR REPLACE) with the same signatures, so databases
-- migrated before this file get the same definitions as new ones.

-- wake_workers wakes the River producers listening for new jobs on queues,
-- as River's own insert notification does. NOTIFY folds duplicates within a
-- transaction, so a bulk enqueue sends one per queue.
CREATE FUNCTION attune.wake_workers(queues text[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('attune.river_insert', json_build_object('queue', due.q)::text)
    FROM (SELECT DISTINCT unnest(queues) AS q) AS due;
END $$;

-- → requested | scheduled
--
-- enqueue_record writes the execution row (and its secret parameters) that
-- enqueue_prepare validated, once the River job exists: requested, or
-- scheduled when it may start only later.
CREATE OR REPLACE FUNCTION attune.enqueue_record(
    execution_id bigint, action_ref text, public_parameters jsonb, secret_parameters jsonb,
    priority integer, max_attempts integer, scheduled_at timestamptz, timeout_seconds integer,
    rule_ref text, event_id bigint, job_id bigint)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO attune.execution (id, action_ref, status, parameters, priority, max_attempts, scheduled_at,
                                  timeout_seconds, rule_ref, event_id, job_id)
    VALUES (execution_id, action_ref,
            CASE WHEN scheduled_at > now() THEN 'scheduled' ELSE 'requested' END,
            public_parameters, priority, max_attempts, scheduled_at, timeout_seconds, rule_ref, event_id, job_id);
    INSERT INTO attune.execution_secret (execution_id, parameters)
    SELECT execution_id, secret_parameters WHERE secret_parameters <> '{}';
$$;

-- enqueue is the SQL API (SPEC §4): it validates, inserts the River job and
-- the execution row in the caller's transaction, and wakes listening
-- workers. The Go API (jobs.EnqueueMany) inserts the River job with River's
-- InsertManyTx instead and shares the rest.
CREATE OR REPLACE FUNCTION attune.enqueue(action_ref text, parameters jsonb DEFAULT '{}', options jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    p      record;
    job_id bigint;
BEGIN
    SELECT * INTO p FROM attune.enqueue_prepare(action_ref, parameters, options);
    INSERT INTO attune.river_job (args, kind, max_attempts, priority, queue, scheduled_at, state, metadata, tags)
    VALUES (jsonb_build_object('execution_id', p.execution_id), 'attune_execution', p.max_attempts, p.priority,
            p.queue, p.scheduled_at,
            (CASE WHEN p.scheduled_at > now() THEN 'scheduled' ELSE 'available' END)::attune.river_job_state,
            '{}', '{}')
    RETURNING id INTO job_id;
    PERFORM attune.enqueue_record(p.execution_id, action_ref, p.public_parameters, p.secret_parameters,
                                  p.priority, p.max_attempts, p.scheduled_at, p.timeout_seconds,
                                  p.rule_ref, p.event_id, job_id);
    IF p.scheduled_at <= now() THEN
        PERFORM attune.wake_workers(ARRAY[p.queue]);
    END IF;
    RETURN p.execution_id;
END $$;

-- requested | scheduled | running → running
--
-- claim marks an execution running for one attempt of one worker and
-- returns, in the same round trip, everything the worker needs to start it.
-- running → running is River delivering the job again (a new attempt after
-- its previous one was lost). No row comes back when the execution may not
-- run: cancelled or finished meanwhile, or its action is gone.
--
-- It commits without waiting for the WAL flush: a claim lost to a database
-- crash only loses started_at and the worker name, which the result write
-- does not depend on, and the flush would otherwise sit on the path from
-- pickup to process start.
CREATE OR REPLACE FUNCTION attune.claim(execution_id bigint, worker text, attempt integer)
RETURNS TABLE (
    max_attempts integer, action_ref text, pack_ref text, runner_type text, path text,
    parameters jsonb, secret_parameters jsonb, declarations jsonb, result_schema jsonb,
    timeout_seconds integer, action_timeout_seconds integer, parameter_delivery text,
    parameter_format text, output_format text, rule_ref text, trigger_ref text,
    action_updated timestamptz, secrets jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    UPDATE attune.execution e
    SET status = 'running', started_at = now(), finished_at = NULL, worker = claim.worker, attempt = claim.attempt
    FROM attune.action a
    WHERE e.id = claim.execution_id AND a.ref = e.action_ref AND e.status IN ('requested', 'scheduled', 'running')
    RETURNING e.max_attempts, a.ref, a.pack_ref, a.runner_type, a.path, e.parameters,
        (SELECT s.parameters FROM attune.execution_secret s WHERE s.execution_id = e.id),
        a.parameters, a.result_schema, e.timeout_seconds, a.timeout_seconds,
        a.parameter_delivery, a.parameter_format, a.output_format, e.rule_ref,
        (SELECT r.trigger_ref FROM attune.rule r WHERE r.ref = e.rule_ref),
        a.updated,
        (SELECT coalesce(jsonb_agg(jsonb_build_object('name', x.name, 'scope', x.scope, 'scope_ref', x.scope_ref,
            'nonce', encode(x.nonce, 'base64'), 'ciphertext', encode(x.ciphertext, 'base64'))), '[]')
         FROM attune.secret x
         WHERE x.scope = 'global' OR (x.scope = 'pack' AND x.scope_ref = a.pack_ref)
            OR (x.scope = 'action' AND x.scope_ref = a.ref));
END $$;

-- requested | scheduled | running → failed
--
-- fail_unrunnable settles an execution that claim refused. When its action
-- is gone it fails, naming the action; when it was cancelled or finished
-- meanwhile nothing changes. Its secret parameters go either way: it will
-- not run. The caller completes the River job in the same transaction.
CREATE FUNCTION attune.fail_unrunnable(execution_id bigint, worker text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE attune.execution e SET status = 'failed', finished_at = now(), worker = fail_unrunnable.worker,
        error = 'Action ' || e.action_ref || ' no longer exists; register its pack again'
    WHERE e.id = fail_unrunnable.execution_id AND e.status IN ('requested', 'scheduled', 'running');
    DELETE FROM attune.execution_secret s WHERE s.execution_id = fail_unrunnable.execution_id;
END $$;

-- requested | scheduled → cancelled, running → canceling
--
-- cancel_execution cancels an execution: a queued one is cancelled at once
-- (and its secret parameters deleted); a running one becomes canceling, and
-- the worker running it records cancelled once its process is killed
-- (settle). A finished or canceling execution is left as it is. It returns
-- the status after the call, the River job, and whether anything changed;
-- no row for an unknown id. The caller cancels the River job with River's
-- JobCancelTx in the same transaction when something changed: that is what
-- tells the running replica.
CREATE FUNCTION attune.cancel_execution(execution_id bigint)
RETURNS TABLE (status text, job_id bigint, changed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    was    text;
    job    bigint;
    target text;
BEGIN
    SELECT e.status, e.job_id INTO was, job
    FROM attune.execution e WHERE e.id = cancel_execution.execution_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF was NOT IN ('requested', 'scheduled', 'running') THEN
        RETURN QUERY SELECT was, job, false;
        RETURN;
    END IF;
    target := CASE WHEN was = 'running' THEN 'canceling' ELSE 'cancelled' END;
    UPDATE attune.execution e SET status = target,
        finished_at = CASE WHEN target = 'cancelled' THEN now() END,
        error = CASE WHEN target = 'cancelled' THEN 'Cancelled before it started' END
    WHERE e.id = cancel_execution.execution_id;
    IF target = 'cancelled' THEN
        DELETE FROM attune.execution_secret s WHERE s.execution_id = cancel_execution.execution_id;
    END IF;
    RETURN QUERY SELECT target, job, true;
END $$;

-- running | canceling → the attempt's outcome (completed, failed, timeout,
-- cancelled, abandoned), or → requested when the attempt is retried
--
-- settle writes finished attempts, several at once (one element of each
-- array per attempt): statuses holds each outcome, or requested for an
-- attempt that retries marks to be retried (its error says what failed). Only worker's own current attempt is written: a
-- replica wrongly declared dead must not overwrite what the reaper settled,
-- nor complete a job another replica now runs. An attempt that would be
-- retried but was cancelled meanwhile (the remote cancel had not reached the
-- worker) ends cancelled: River cancels rather than retries such a job, so a
-- row sent back to requested would stay there. A canceling execution whose
-- attempt ended otherwise (its process finished first) keeps that outcome.
-- Secret parameters are deleted unless the execution runs again.
--
-- It returns the executions written, and whether each went back to
-- requested; the caller completes, in the same transaction, the River job
-- of each one that did not (River retries the others).
CREATE FUNCTION attune.settle(
    ids bigint[], attempts integer[], statuses text[], results jsonb[], exit_codes integer[],
    stdouts text[], stderrs text[], stdout_truncated boolean[], stderr_truncated boolean[],
    errors text[], retries boolean[], worker text)
RETURNS TABLE (id bigint, retry boolean)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH written AS (
        UPDATE attune.execution e SET
            status = CASE WHEN u.retry AND e.status = 'canceling' THEN 'cancelled' ELSE u.status END,
            result = u.result, exit_code = u.exit_code,
            stdout = u.stdout, stderr = u.stderr, stdout_truncated = u.out_trunc, stderr_truncated = u.err_trunc,
            error = CASE WHEN u.retry AND e.status = 'canceling' THEN 'Cancelled while running' ELSE u.error END,
            finished_at = CASE WHEN u.retry AND e.status <> 'canceling' THEN NULL ELSE now() END
        FROM unnest(settle.ids, settle.attempts, settle.statuses, settle.results, settle.exit_codes,
                    settle.stdouts, settle.stderrs, settle.stdout_truncated, settle.stderr_truncated,
                    settle.errors, settle.retries)
            AS u(id, attempt, status, result, exit_code, stdout, stderr, out_trunc, err_trunc, error, retry)
        WHERE e.id = u.id AND e.worker = settle.worker AND e.attempt = u.attempt
            AND e.status IN ('running', 'canceling')
        RETURNING e.id, e.status = 'requested' AS retry
    ), gone AS (
        DELETE FROM attune.execution_secret s
        WHERE s.execution_id IN (SELECT w.id FROM written w WHERE NOT w.retry)
    )
    SELECT w.id, w.retry FROM written w;
END $$;

-- (no status change) record_output stores a running attempt's output so far,
-- for attune execution logs --follow and show. Only while that attempt of
-- that worker runs: once the result is written (or another replica settled
-- it) a late write must not land.
CREATE FUNCTION attune.record_output(execution_id bigint, worker text, attempt integer, stdout text, stderr text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE attune.execution e SET stdout = record_output.stdout, stderr = record_output.stderr
    WHERE e.id = record_output.execution_id AND e.worker = record_output.worker
        AND e.attempt = record_output.attempt AND e.status IN ('running', 'canceling');
END $$;

-- running → requested (retried) | abandoned, canceling → cancelled
--
-- reap_worker settles the executions of a dead worker: the running ones are
-- abandoned, or go back to requested when max_retries allows (their River
-- jobs made available again); the canceling ones are cancelled. Jobs River
-- had handed to it (river_id is its River client id) whose executions never
-- started go back to the queue untouched, the attempt not counted. The
-- caller has locked the executions and killed what they left on its host.
CREATE FUNCTION attune.reap_worker(worker text, river_id text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WITH dead AS (
        SELECT e.id, e.job_id, e.attempt < e.max_attempts AS retry
        FROM attune.execution e
        WHERE e.worker = reap_worker.worker AND e.status IN ('running', 'canceling')
        FOR UPDATE
    ), settled AS (
        UPDATE attune.execution e SET
            status = CASE WHEN d.retry AND e.status = 'running' THEN 'requested'
                          WHEN e.status = 'canceling' THEN 'cancelled' ELSE 'abandoned' END,
            finished_at = CASE WHEN d.retry AND e.status = 'running' THEN NULL ELSE now() END,
            error = 'Worker ' || reap_worker.worker || ' died while the execution ran'
        FROM dead d WHERE e.id = d.id
        RETURNING e.id, e.job_id, e.status
    ), gone AS (
        -- Secret parameters are kept only while the execution may still run.
        DELETE FROM attune.execution_secret s
        WHERE s.execution_id IN (SELECT st.id FROM settled st WHERE st.status <> 'requested')
    )
    UPDATE attune.river_job j SET
        state = CASE WHEN st.status = 'requested' THEN 'available' ELSE 'completed' END::attune.river_job_state,
        scheduled_at = now(),
        finalized_at = CASE WHEN st.status = 'requested' THEN NULL ELSE now() END
    FROM settled st WHERE j.id = st.job_id AND j.state = 'running';

    UPDATE attune.river_job j SET state = 'available', scheduled_at = now(), attempt = greatest(j.attempt - 1, 0)
    FROM attune.execution e
    WHERE e.job_id = j.id AND e.status IN ('requested', 'scheduled') AND j.state = 'running'
        AND j.attempted_by[array_upper(j.attempted_by, 1)] = reap_worker.river_id;
END $$;

-- (no status change) lost_fetches lists the jobs River's fetch marked as
-- running on River client river_id more than older_than ago whose
-- executions never started. The caller keeps those none of its workers
-- holds (the fetch's reply was lost to a dropped connection, so River's
-- producer never saw them) and passes them to requeue_lost_fetches.
CREATE FUNCTION attune.lost_fetches(river_id text, older_than interval)
RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    SELECT j.id FROM attune.river_job j
    JOIN attune.execution e ON e.job_id = j.id
    WHERE j.state = 'running' AND e.status IN ('requested', 'scheduled')
        AND j.attempted_by[array_upper(j.attempted_by, 1)] = lost_fetches.river_id
        AND j.attempted_at < now() - lost_fetches.older_than;
END $$;

-- requeue_lost_fetches returns jobs that lost_fetches found to the queue.
-- Their executions never started, so the attempt is not counted.
CREATE FUNCTION attune.requeue_lost_fetches(job_ids bigint[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE attune.river_job j SET state = 'available', scheduled_at = now(),
        attempt = greatest(j.attempt - 1, 0)
    WHERE j.id = ANY(requeue_lost_fetches.job_ids) AND j.state = 'running';
END $$;
