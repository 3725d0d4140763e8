-- claim marks an execution running and returns, in the same round trip,
-- everything a worker needs to start it. It commits without waiting for the
-- WAL flush: a claim lost to a database crash only loses started_at and the
-- worker name, which the result write does not depend on, and the flush
-- would otherwise sit on the path from pickup to process start.
CREATE FUNCTION attune.claim(execution_id bigint, worker text, attempt integer)
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
