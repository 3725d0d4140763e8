-- Enqueueing. The checks live here, once, so that SQL callers, the Go API
-- (jobs.Enqueue) and the CLI reject the same inputs with the same words and
-- write the same rows.
--
-- SQLSTATEs a caller can branch on:
--   42704 undefined_object                  unknown action
--   55000 object_not_in_prerequisite_state  disabled action
--   22023 invalid_parameter_value           bad parameters or options

-- _check_parameter raises when value does not fit the StackStorm-style
-- declaration decl of parameter name.
CREATE FUNCTION attune._check_parameter(action_ref text, name text, decl jsonb, value jsonb)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    want text := decl ->> 'type';
    got  text := jsonb_typeof(value);
    num  numeric;
    -- A secret's value stays out of messages: PostgreSQL logs them.
    shown text := CASE WHEN coalesce((decl ->> 'secret')::boolean, false) THEN '(secret)' ELSE left(value::text, 80) END;
BEGIN
    IF got = 'null' THEN
        IF coalesce((decl ->> 'required')::boolean, false) THEN
            RAISE EXCEPTION 'missing required parameter "%" for action %: it is null', name, action_ref
                USING ERRCODE = '22023', HINT = 'Give it a value of type ' || coalesce(want, 'any') || '.';
        END IF;
        RETURN;
    END IF;
    IF got = 'number' THEN
        num := value::text::numeric;
    END IF;
    IF want IS NOT NULL AND NOT (
           (want = got)
        OR (want = 'integer' AND got = 'number' AND num = trunc(num))) THEN
        RAISE EXCEPTION 'parameter "%" of action % must be %, got % %', name, action_ref, want, got, shown
            USING ERRCODE = '22023';
    END IF;
    IF decl ? 'enum' AND jsonb_typeof(decl -> 'enum') = 'array' AND NOT (decl -> 'enum') @> jsonb_build_array(value) THEN
        RAISE EXCEPTION 'parameter "%" of action % must be one of %, got %', name, action_ref, decl -> 'enum', shown
            USING ERRCODE = '22023';
    END IF;
    IF got = 'number' AND jsonb_typeof(decl -> 'minimum') = 'number' AND num < (decl ->> 'minimum')::numeric THEN
        RAISE EXCEPTION 'parameter "%" of action % must be at least %, got %', name, action_ref, decl ->> 'minimum', shown
            USING ERRCODE = '22023';
    END IF;
    IF got = 'number' AND jsonb_typeof(decl -> 'maximum') = 'number' AND num > (decl ->> 'maximum')::numeric THEN
        RAISE EXCEPTION 'parameter "%" of action % must be at most %, got %', name, action_ref, decl ->> 'maximum', shown
            USING ERRCODE = '22023';
    END IF;
END $$;

-- _int_option reads an integer option within [lo, hi], or NULL when absent.
CREATE FUNCTION attune._int_option(options jsonb, name text, lo integer, hi integer)
RETURNS integer LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v   jsonb := options -> name;
    num numeric;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(v) <> 'number' THEN
        RAISE EXCEPTION 'option % must be an integer from % to %, got %', name, lo, hi, left(v::text, 80)
            USING ERRCODE = '22023';
    END IF;
    num := v::text::numeric;
    IF num <> trunc(num) OR num < lo OR num > hi THEN
        RAISE EXCEPTION 'option % must be an integer from % to %, got %', name, lo, hi, num
            USING ERRCODE = '22023';
    END IF;
    RETURN num::integer;
END $$;

-- enqueue_prepare validates an enqueue and returns everything both enqueue
-- paths need; it writes nothing. The execution id is taken from the sequence
-- here so that the River job's args can name it before either row exists.
CREATE FUNCTION attune.enqueue_prepare(
    action_ref text, parameters jsonb, options jsonb,
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
        IF k NOT IN ('timeout_seconds', 'priority', 'scheduled_at', 'max_attempts', 'rule_ref', 'event_id') THEN
            RAISE EXCEPTION 'unknown option "%"', k
                USING ERRCODE = '22023', HINT = 'options may hold timeout_seconds, priority, scheduled_at and max_attempts.';
        END IF;
    END LOOP;

    public_parameters := '{}';
    secret_parameters := '{}';
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
    rule_ref := options ->> 'rule_ref';
    IF options ? 'event_id' AND jsonb_typeof(options -> 'event_id') <> 'null' THEN
        BEGIN
            IF jsonb_typeof(options -> 'event_id') = 'number' THEN
                event_id := (options ->> 'event_id')::bigint;
            END IF;
        EXCEPTION WHEN others THEN
            event_id := NULL;
        END;
        IF event_id IS NULL OR (options ->> 'event_id')::numeric <> event_id THEN
            RAISE EXCEPTION 'option event_id must be an integer, got %', left((options -> 'event_id')::text, 80)
                USING ERRCODE = '22023';
        END IF;
    END IF;
    queue := a.runner_type;
    execution_id := nextval(pg_get_serial_sequence('attune.execution', 'id'));
END $$;

-- enqueue_record writes the execution row (and its secret parameters) that
-- enqueue_prepare validated, once the River job exists.
CREATE FUNCTION attune.enqueue_record(
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
-- the execution row in the caller's transaction, and wakes listening workers.
CREATE FUNCTION attune.enqueue(action_ref text, parameters jsonb DEFAULT '{}', options jsonb DEFAULT '{}')
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
        -- River's insert notification for schema attune; NOTIFY folds
        -- duplicates within a transaction, so bulk enqueues send one.
        PERFORM pg_notify('attune.river_insert', json_build_object('queue', p.queue)::text);
    END IF;
    RETURN p.execution_id;
END $$;
