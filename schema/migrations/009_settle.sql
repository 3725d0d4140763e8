-- Settling every execution exactly once, whatever the database or a replica
-- does: attempt tokens checked on every write, a reaper that never settles a
-- live worker and never lets a late write land on the next attempt, a
-- reconciler for rows whose River job went away, and bounded parameters.
--
-- Like 005_state_machine.sql, this file touches River's tables
-- (attune.river_job); it was written against the same River schema version:
--
-- River schema version: 8
--
-- Functions whose signature changes are dropped and created again; the
-- others are replaced. The state table is in the doc of package jobs.

-- _json_deeper_than reports whether doc nests objects or arrays deeper than
-- max_depth ({} is 1 deep). It walks no further than max_depth + 1, so a
-- hostile document costs no more than a legal one.
CREATE FUNCTION attune._json_deeper_than(doc jsonb, max_depth integer)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    WITH RECURSIVE walk(v, depth) AS (
        SELECT doc, 1
        UNION ALL
        SELECT c.v, w.depth + 1
        FROM walk w
        CROSS JOIN LATERAL (
            SELECT o.value FROM jsonb_each(CASE WHEN jsonb_typeof(w.v) = 'object' THEN w.v END) o
            UNION ALL
            SELECT e.value FROM jsonb_array_elements(CASE WHEN jsonb_typeof(w.v) = 'array' THEN w.v END) e
        ) AS c(v)
        WHERE w.depth <= max_depth AND jsonb_typeof(c.v) IN ('object', 'array')
    )
    SELECT EXISTS (SELECT 1 FROM walk WHERE depth > max_depth);
$$;

-- _enqueue_prepare is enqueue_prepare with the rule firing that enqueues
-- (fired_rule, fired_event), which no public option can set: a child's
-- ATTUNE_RULE must be true. Parameters nested deeper than 64 are refused:
-- every reader after this one (the worker's decoder, River, the CLI) would
-- choke on them.
CREATE FUNCTION attune._enqueue_prepare(
    action_ref text, parameters jsonb, options jsonb, fired_rule text, fired_event bigint,
    OUT execution_id bigint, OUT queue text, OUT public_parameters jsonb, OUT secret_parameters jsonb,
    OUT priority integer, OUT max_attempts integer, OUT scheduled_at timestamptz, OUT timeout_seconds integer,
    OUT rule_ref text, OUT event_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    a        attune.action%ROWTYPE;
    k        text;
    v        jsonb;
    decl     jsonb;
    declared text;
BEGIN
    IF action_ref IS NULL OR action_ref = '' THEN
        RAISE EXCEPTION 'an action ref is required'
            USING ERRCODE = '22023', HINT = 'attune action list shows the registered actions.';
    END IF;
    SELECT * INTO a FROM attune.action AS act WHERE act.ref = action_ref;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown action "%"', action_ref
            USING ERRCODE = '42704', HINT = 'Register its pack with "attune pack register"; "attune action list" shows the known actions.';
    END IF;
    IF NOT a.enabled THEN
        RAISE EXCEPTION 'action "%" is disabled', action_ref
            USING ERRCODE = '55000', HINT = 'Set enabled: true in its YAML (or restore its file, if it was removed from the pack) and run "attune pack register" again.';
    END IF;

    parameters := coalesce(parameters, '{}');
    IF jsonb_typeof(parameters) <> 'object' THEN
        RAISE EXCEPTION 'parameters must be a JSON object, got %', jsonb_typeof(parameters)
            USING ERRCODE = '22023', HINT = 'Pass parameters like ''{"name": "value"}''.';
    END IF;
    options := coalesce(options, '{}');
    IF jsonb_typeof(options) <> 'object' THEN
        RAISE EXCEPTION 'options must be a JSON object, got %', jsonb_typeof(options)
            USING ERRCODE = '22023', HINT = 'Pass options like ''{"timeout_seconds": 60}''.';
    END IF;
    FOR k IN SELECT jsonb_object_keys(options) LOOP
        IF k NOT IN ('timeout_seconds', 'priority', 'scheduled_at', 'max_attempts') THEN
            RAISE EXCEPTION 'unknown option "%"', k
                USING ERRCODE = '22023', HINT = 'options may hold timeout_seconds, priority, scheduled_at and max_attempts.';
        END IF;
    END LOOP;

    public_parameters := '{}';
    secret_parameters := '{}';
    IF attune._json_deeper_than(parameters, 64) THEN
        RAISE EXCEPTION 'parameters are nested deeper than 64 levels'
            USING ERRCODE = '22023', HINT = 'Flatten the parameters: objects and arrays may nest at most 64 deep.';
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(parameters) LOOP
        decl := a.parameters -> k;
        IF decl IS NULL THEN
            SELECT string_agg(key, ', ' ORDER BY key) INTO declared FROM jsonb_object_keys(a.parameters) AS key;
            RAISE EXCEPTION 'unknown parameter "%" for action %', k, a.ref
                USING ERRCODE = '22023',
                      HINT = coalesce('The action declares: ' || declared || '.', 'The action declares no parameters.');
        END IF;
        PERFORM attune._check_parameter(a.ref, k, decl, v);
        IF coalesce((decl ->> 'secret')::boolean, false) THEN
            public_parameters := public_parameters || jsonb_build_object(k, '********');
            secret_parameters := secret_parameters || jsonb_build_object(k, v);
        ELSE
            public_parameters := public_parameters || jsonb_build_object(k, v);
        END IF;
    END LOOP;
    FOR k, decl IN SELECT * FROM jsonb_each(a.parameters) LOOP
        IF coalesce((decl ->> 'required')::boolean, false) AND NOT parameters ? k AND NOT decl ? 'default' THEN
            RAISE EXCEPTION 'missing required parameter "%" for action %', k, a.ref
                USING ERRCODE = '22023', HINT = 'Give it a value of type ' || coalesce(decl ->> 'type', 'any') || '.';
        END IF;
    END LOOP;

    timeout_seconds := coalesce(attune._int_option(options, 'timeout_seconds', 1, 604800), a.timeout_seconds);
    priority := coalesce(attune._int_option(options, 'priority', 1, 4), 1);
    max_attempts := coalesce(attune._int_option(options, 'max_attempts', 1, 1000), a.max_retries + 1);
    IF options ? 'scheduled_at' AND jsonb_typeof(options -> 'scheduled_at') <> 'null' THEN
        BEGIN
            scheduled_at := (options ->> 'scheduled_at')::timestamptz;
        EXCEPTION WHEN others THEN
            scheduled_at := NULL;
        END;
        -- 'infinity' casts, and would park the job for ever.
        IF scheduled_at IS NULL OR NOT isfinite(scheduled_at) THEN
            RAISE EXCEPTION 'option scheduled_at must be a timestamp such as 2026-01-02T15:04:05Z, got %', left((options -> 'scheduled_at')::text, 80)
                USING ERRCODE = '22023';
        END IF;
    END IF;
    scheduled_at := coalesce(scheduled_at, now());
    rule_ref := fired_rule;
    event_id := fired_event;
    queue := a.runner_type;
    execution_id := nextval(pg_get_serial_sequence('attune.execution', 'id'));
END $$;
-- enqueue_prepare is the public enqueue's validation: rule_ref and event_id
-- are not options (they are unknown options, refused with 22023).
CREATE OR REPLACE FUNCTION attune.enqueue_prepare(
    action_ref text, parameters jsonb, options jsonb,
    OUT execution_id bigint, OUT queue text, OUT public_parameters jsonb, OUT secret_parameters jsonb,
    OUT priority integer, OUT max_attempts integer, OUT scheduled_at timestamptz, OUT timeout_seconds integer,
    OUT rule_ref text, OUT event_id bigint)
LANGUAGE sql AS $$
    SELECT * FROM attune._enqueue_prepare(action_ref, parameters, options, NULL, NULL);
$$;

-- enqueue_prepare_rule validates the enqueue of a rule firing for an event:
-- the rule must exist and name the action, and the event must exist and be
-- of the rule's trigger.
CREATE FUNCTION attune.enqueue_prepare_rule(
    action_ref text, parameters jsonb, rule_ref text, event_id bigint,
    OUT execution_id bigint, OUT queue text, OUT public_parameters jsonb, OUT secret_parameters jsonb,
    OUT priority integer, OUT max_attempts integer, OUT scheduled_at timestamptz, OUT timeout_seconds integer,
    OUT rule_ref_out text, OUT event_id_out bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
    IF NOT EXISTS (SELECT 1 FROM attune.rule r JOIN attune.event ev ON ev.trigger_ref = r.trigger_ref
                   WHERE r.ref = rule_ref AND r.action_ref = action_ref AND ev.id = event_id) THEN
        RAISE EXCEPTION 'rule % with action % and event % of its trigger do not exist', rule_ref, action_ref, event_id
            USING ERRCODE = '22023';
    END IF;
    SELECT * INTO execution_id, queue, public_parameters, secret_parameters, priority, max_attempts,
        scheduled_at, timeout_seconds, rule_ref_out, event_id_out
    FROM attune._enqueue_prepare(action_ref, parameters, '{}', rule_ref, event_id);
END $$;

-- requested | scheduled | running → running
--
-- claim marks an execution running for one attempt of one worker, as in
-- 005, and is the first fence: only while the worker is active (a replica
-- the others reaped claims nothing until it has rejoined), only for the
-- execution's current River job (the reaper gives a retried execution a new
-- job, so a late delivery of the old one claims nothing), and running →
-- running only for a later attempt.
--
-- It commits without waiting for the WAL flush: settle does not depend on
-- it (a claim lost to a crash leaves the row requested, and settle takes
-- the result on the River job's token instead).
DROP FUNCTION attune.claim(bigint, text, integer);
CREATE FUNCTION attune.claim(execution_id bigint, worker text, attempt integer, job_id bigint)
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
    WHERE e.id = claim.execution_id AND a.ref = e.action_ref AND e.job_id = claim.job_id
        AND (e.status IN ('requested', 'scheduled') OR (e.status = 'running' AND e.attempt < claim.attempt))
        AND EXISTS (SELECT 1 FROM attune.worker w WHERE w.name = claim.worker AND w.status = 'active')
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
-- fail_unrunnable settles an execution that claim refused, for River job
-- job_id. It fails the execution only when its action is gone. It returns
-- whether the caller completes the River job: yes when the execution is
-- failed now, finished, or carried by another job; no when it still waits
-- for this one (claim refused a worker the others reaped: the job goes back
-- to the queue).
DROP FUNCTION attune.fail_unrunnable(bigint, text);
CREATE FUNCTION attune.fail_unrunnable(execution_id bigint, worker text, job_id bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    e attune.execution%ROWTYPE;
BEGIN
    SELECT * INTO e FROM attune.execution x WHERE x.id = fail_unrunnable.execution_id FOR UPDATE;
    IF NOT FOUND OR e.job_id IS DISTINCT FROM fail_unrunnable.job_id
            OR e.status NOT IN ('requested', 'scheduled', 'running') THEN
        RETURN true;
    END IF;
    IF EXISTS (SELECT 1 FROM attune.action a WHERE a.ref = e.action_ref) THEN
        RETURN false;
    END IF;
    UPDATE attune.execution x SET status = 'failed', finished_at = now(), worker = fail_unrunnable.worker,
        error = 'Action ' || x.action_ref || ' no longer exists; register its pack again'
    WHERE x.id = fail_unrunnable.execution_id;
    DELETE FROM attune.execution_secret s WHERE s.execution_id = fail_unrunnable.execution_id;
    RETURN true;
END $$;

-- running | canceling → the attempt's outcome, or → requested to retry
--
-- settle writes finished attempts as in 005, with the attempt's token: the
-- execution's River job (job_ids) must still be running at that attempt on
-- this worker's River client (river_id). A reaped worker's late write is
-- refused, and so is one for a job a retry replaced. The row itself may say
-- running (by this worker, this attempt) or still requested: a claim lost to
-- a database crash (it commits without a flush) does not drop the result.
-- started_ats and finished_ats are when the process started and ended, by
-- the worker's clock (NULL when no process ran: the commit time stands in).
DROP FUNCTION attune.settle(bigint[], integer[], text[], jsonb[], integer[], text[], text[], boolean[], boolean[], text[], boolean[], text);
CREATE FUNCTION attune.settle(
    ids bigint[], job_ids bigint[], attempts integer[], statuses text[], results jsonb[], exit_codes integer[],
    stdouts text[], stderrs text[], stdout_truncated boolean[], stderr_truncated boolean[],
    errors text[], retries boolean[], started_ats timestamptz[], finished_ats timestamptz[],
    worker text, river_id text)
RETURNS TABLE (id bigint, retry boolean)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT * FROM unnest(settle.ids, settle.job_ids, settle.attempts, settle.statuses, settle.results,
                    settle.exit_codes, settle.stdouts, settle.stderrs, settle.stdout_truncated,
                    settle.stderr_truncated, settle.errors, settle.retries, settle.started_ats, settle.finished_ats)
            AS u(id, job_id, attempt, status, result, exit_code, stdout, stderr, out_trunc, err_trunc, error,
                 retry, started_at, finished_at)
    ), written AS (
        UPDATE attune.execution e SET
            status = CASE WHEN u.retry AND e.status = 'canceling' THEN 'cancelled' ELSE u.status END,
            result = u.result, exit_code = u.exit_code,
            stdout = u.stdout, stderr = u.stderr, stdout_truncated = u.out_trunc, stderr_truncated = u.err_trunc,
            error = CASE WHEN u.retry AND e.status = 'canceling' THEN 'Cancelled while running' ELSE u.error END,
            worker = settle.worker, attempt = u.attempt,
            started_at = coalesce(u.started_at, e.started_at, now()),
            finished_at = CASE WHEN u.retry AND e.status <> 'canceling' THEN NULL ELSE coalesce(u.finished_at, now()) END
        FROM input u, attune.river_job j
        WHERE e.id = u.id AND e.job_id = u.job_id AND j.id = u.job_id
            AND j.state = 'running' AND j.attempt = u.attempt
            AND j.attempted_by[array_upper(j.attempted_by, 1)] = settle.river_id
            AND ((e.status IN ('running', 'canceling') AND e.worker = settle.worker AND e.attempt = u.attempt)
                 OR e.status IN ('requested', 'scheduled'))
        RETURNING e.id, e.status = 'requested' AS retry
    ), gone AS (
        DELETE FROM attune.execution_secret s
        WHERE s.execution_id IN (SELECT w.id FROM written w WHERE NOT w.retry)
    )
    SELECT w.id, w.retry FROM written w;
END $$;

-- _replace_job gives an execution a new River job for its next attempt and
-- finalizes the old one (completed). A replica still holding the old job,
-- reaped while frozen or cut off, can neither claim nor settle with it, and
-- River's own completion of it lands on a finished job: no late write
-- reaches the new attempt. The new job continues the attempt count from
-- next_attempt - 1 (River's fetch adds one).
CREATE FUNCTION attune._replace_job(execution_id bigint, next_attempt integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    old attune.river_job%ROWTYPE;
    new_id bigint;
BEGIN
    SELECT j.* INTO old FROM attune.river_job j JOIN attune.execution e ON e.job_id = j.id
    WHERE e.id = _replace_job.execution_id FOR UPDATE OF j;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE attune.river_job j SET state = 'completed', finalized_at = now()
    WHERE j.id = old.id AND j.finalized_at IS NULL;
    INSERT INTO attune.river_job (args, kind, max_attempts, priority, queue, scheduled_at, state, attempt, metadata, tags)
    VALUES (old.args, old.kind, old.max_attempts, old.priority, old.queue, now(), 'available',
            greatest(next_attempt - 1, 0), '{}', '{}')
    RETURNING id INTO new_id;
    UPDATE attune.execution e SET job_id = new_id WHERE e.id = _replace_job.execution_id;
    PERFORM attune.wake_workers(ARRAY[old.queue]);
END $$;

-- running → requested (retried) | abandoned, canceling → cancelled
--
-- reap_worker settles the executions of a dead worker, as in 005, with two
-- guards: a worker whose heartbeat is fresher than stale_after is never
-- reaped (NULL: the caller is that worker, settling its own), and every
-- execution that runs again gets a new River job (_replace_job), retried or
-- fetched but never started, so the dead worker's late writes are refused.
DROP FUNCTION attune.reap_worker(text, text);
CREATE FUNCTION attune.reap_worker(worker text, river_id text, stale_after interval)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    IF stale_after IS NOT NULL AND EXISTS (
            SELECT 1 FROM attune.worker w
            WHERE w.name = reap_worker.worker AND w.heartbeat_at > now() - stale_after) THEN
        RETURN 0;
    END IF;
    FOR r IN
        SELECT e.id, e.job_id, e.status, e.attempt, e.attempt < e.max_attempts AS retry
        FROM attune.execution e
        WHERE e.worker = reap_worker.worker AND e.status IN ('running', 'canceling')
        ORDER BY e.id
        FOR UPDATE
    LOOP
        n := n + 1;
        IF r.retry AND r.status = 'running' THEN
            UPDATE attune.execution e SET status = 'requested', finished_at = NULL,
                error = 'Worker ' || reap_worker.worker || ' died while the execution ran'
            WHERE e.id = r.id;
            PERFORM attune._replace_job(r.id, r.attempt + 1);
        ELSE
            UPDATE attune.execution e SET
                status = CASE WHEN r.status = 'canceling' THEN 'cancelled' ELSE 'abandoned' END,
                finished_at = now(),
                error = 'Worker ' || reap_worker.worker || ' died while the execution ran'
            WHERE e.id = r.id;
            DELETE FROM attune.execution_secret s WHERE s.execution_id = r.id;
            UPDATE attune.river_job j SET state = 'completed', finalized_at = now(), scheduled_at = now()
            WHERE j.id = r.job_id AND j.state = 'running';
        END IF;
    END LOOP;

    -- Jobs River had handed to it whose executions never started: back to
    -- the queue on a new job, the attempt not counted. One whose attempt
    -- ran and was settled to retry (the row says that attempt) before River
    -- marked the job retryable: the same, the attempt counted.
    FOR r IN
        SELECT e.id, j.attempt, e.attempt >= j.attempt AS ran
        FROM attune.execution e JOIN attune.river_job j ON j.id = e.job_id
        WHERE e.status IN ('requested', 'scheduled') AND j.state = 'running'
            AND j.attempted_by[array_upper(j.attempted_by, 1)] = reap_worker.river_id
        FOR UPDATE OF e
    LOOP
        PERFORM attune._replace_job(r.id, CASE WHEN r.ran THEN r.attempt + 1 ELSE r.attempt END);
    END LOOP;
    RETURN n;
END $$;

-- (no River job) gone_workers lists the workers that executions still say
-- run them although the worker is gone: inactive (it stopped, or the others
-- reaped it, and something was left) or never registered, silent for
-- stale_after. The caller reaps each (reap_worker).
CREATE FUNCTION attune.gone_workers(stale_after interval)
RETURNS SETOF text LANGUAGE sql STABLE AS $$
    SELECT DISTINCT e.worker FROM attune.execution e
    LEFT JOIN attune.worker w ON w.name = e.worker
    WHERE e.status IN ('running', 'canceling') AND e.worker IS NOT NULL
        AND (w.name IS NULL OR (w.status = 'inactive' AND w.heartbeat_at < now() - stale_after));
$$;

-- Unfinished executions, for the reconciler: the queue and what runs.
CREATE INDEX execution_unfinished_idx ON attune.execution (job_id)
    WHERE status IN ('requested', 'scheduled', 'running', 'canceling');

-- requested | scheduled | running → abandoned, canceling | … → cancelled
--
-- reconcile settles the executions whose River job something other than
-- attune finalized or deleted (River UI, a DBA, River's cleaner, River
-- discarding a job after an error): nothing will run or settle them, so
-- each is settled here with an error naming what happened to its job.
-- Executions being written right now are skipped (SKIP LOCKED) and the job
-- is read again once the row is locked, so a settle committing meanwhile
-- wins. A running execution of a worker whose heartbeat is fresher than
-- stale_after is left to that worker (worker): no replica settles another
-- live one's executions. It returns what it settled, and who ran it.
CREATE FUNCTION attune.reconcile(worker text, stale_after interval)
RETURNS TABLE (id bigint, status text, error text, ran_on text)
LANGUAGE plpgsql AS $$
DECLARE
    r      record;
    jstate text;
    why    text;
    target text;
BEGIN
    FOR r IN
        SELECT e.id, e.job_id, e.status, e.worker FROM attune.execution e
        LEFT JOIN attune.river_job j ON j.id = e.job_id
        WHERE e.status IN ('requested', 'scheduled', 'running', 'canceling')
            AND (j.id IS NULL OR j.state IN ('completed', 'cancelled', 'discarded'))
            AND (e.status IN ('requested', 'scheduled') OR e.worker = reconcile.worker
                 OR NOT EXISTS (SELECT 1 FROM attune.worker w WHERE w.name = e.worker
                                AND w.heartbeat_at > now() - reconcile.stale_after))
        FOR UPDATE OF e SKIP LOCKED
    LOOP
        SELECT j.state::text INTO jstate FROM attune.river_job j WHERE j.id = r.job_id;
        IF FOUND AND jstate NOT IN ('completed', 'cancelled', 'discarded') THEN
            CONTINUE; -- settled meanwhile, or given a new job
        END IF;
        SELECT e.status INTO target FROM attune.execution e WHERE e.id = r.id;
        IF target NOT IN ('requested', 'scheduled', 'running', 'canceling') THEN
            CONTINUE;
        END IF;
        why := 'River job ' || coalesce(r.job_id::text, '(none)') || CASE
            WHEN jstate IS NULL THEN ' was deleted outside attune (River UI, a DBA, River''s cleaner)'
            WHEN jstate = 'cancelled' THEN ' was cancelled outside attune (River UI, a DBA)'
            WHEN jstate = 'discarded' THEN ' was discarded outside attune (River UI, a DBA, or River giving up on an error)'
            ELSE ' was completed without the execution''s result (outside attune: River UI, a DBA)'
        END || '; the execution will not run';
        target := CASE WHEN target = 'canceling' OR jstate = 'cancelled' THEN 'cancelled' ELSE 'abandoned' END;
        UPDATE attune.execution e SET status = target, finished_at = now(), error = why WHERE e.id = r.id;
        DELETE FROM attune.execution_secret s WHERE s.execution_id = r.id;
        id := r.id;
        status := target;
        error := why;
        ran_on := r.worker;
        RETURN NEXT;
    END LOOP;
END $$;

-- (no status change) lost_fetches is 005's, but for executions whose
-- attempt never started: a row back in requested at the job's own attempt
-- ran it and was settled to retry, and River is about to mark the job
-- retryable (after a long outage its attempted_at is old enough to look
-- lost). Requeueing it would run the next attempt under the same number.
CREATE OR REPLACE FUNCTION attune.lost_fetches(river_id text, older_than interval)
RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    SELECT j.id FROM attune.river_job j
    JOIN attune.execution e ON e.job_id = j.id
    WHERE j.state = 'running' AND e.status IN ('requested', 'scheduled') AND e.attempt < j.attempt
        AND j.attempted_by[array_upper(j.attempted_by, 1)] = lost_fetches.river_id
        AND j.attempted_at < now() - lost_fetches.older_than;
END $$;
