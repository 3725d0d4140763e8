-- River schema version: 8
--
-- SQL enqueues join the caller's trace: options may hold a W3C traceparent
-- (and tracestate), which attune.enqueue stores in the River job's metadata
-- under attune_trace, as the Go path's insert middleware does, so whichever
-- replica works the job continues the trace and the child gets TRACEPARENT.
-- They are trace context, not execution options: they are taken out before
-- the options are checked.
CREATE OR REPLACE FUNCTION attune.enqueue(action_ref text, parameters jsonb DEFAULT '{}', options jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    p      record;
    job_id bigint;
    trace  jsonb := '{}';
    meta   jsonb := '{}';
BEGIN
    IF jsonb_typeof(options) = 'object' AND options ? 'tracestate' AND NOT options ? 'traceparent' THEN
        RAISE EXCEPTION 'option tracestate needs a traceparent beside it'
            USING ERRCODE = '22023', HINT = 'Pass the caller''s traceparent too, or leave tracestate out.';
    END IF;
    IF jsonb_typeof(options) = 'object' AND options ? 'traceparent' THEN
        IF jsonb_typeof(options -> 'traceparent') <> 'string'
            OR options ->> 'traceparent' !~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
            OR options ->> 'traceparent' ~ '^ff-|-0{32}-|-0{16}-' THEN
            RAISE EXCEPTION 'option traceparent must be a W3C traceparent such as 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
                USING ERRCODE = '22023', HINT = 'Pass the traceparent header of the caller''s span, or leave the option out.';
        END IF;
        trace := jsonb_build_object('traceparent', options ->> 'traceparent');
        IF jsonb_typeof(options -> 'tracestate') = 'string' THEN
            trace := trace || jsonb_build_object('tracestate', options ->> 'tracestate');
        END IF;
        meta := jsonb_build_object('attune_trace', trace);
    END IF;
    IF jsonb_typeof(options) = 'object' THEN
        options := options - 'traceparent' - 'tracestate';
    END IF;
    SELECT * INTO p FROM attune.enqueue_prepare(action_ref, parameters, options);
    INSERT INTO attune.river_job (args, kind, max_attempts, priority, queue, scheduled_at, state, metadata, tags)
    VALUES (jsonb_build_object('execution_id', p.execution_id), 'attune_execution', p.max_attempts, p.priority,
            p.queue, p.scheduled_at,
            (CASE WHEN p.scheduled_at > now() THEN 'scheduled' ELSE 'available' END)::attune.river_job_state,
            meta, '{}')
    RETURNING id INTO job_id;
    PERFORM attune.enqueue_record(p.execution_id, action_ref, p.public_parameters, p.secret_parameters,
                                  p.priority, p.max_attempts, p.scheduled_at, p.timeout_seconds,
                                  p.rule_ref, p.event_id, job_id);
    IF p.scheduled_at <= now() THEN
        PERFORM attune.wake_workers(ARRAY[p.queue]);
    END IF;
    RETURN p.execution_id;
END $$;
