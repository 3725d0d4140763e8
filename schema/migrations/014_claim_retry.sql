-- requested | scheduled | running → running
--
-- claim is 009's, and also takes again an execution that the same worker
-- already claimed for the same attempt on the same River job. The worker
-- retries a claim whose reply it never received (the connection dropped
-- after the commit, before the answer: a database restart); 009 refused
-- that second call, the worker gave the job back unstarted, River fetched
-- it again at the same attempt number, and the claim refused it again:
-- the execution stayed running with nothing running it, its job going
-- round for ever. The same worker at the same attempt is the same claim:
-- no other replica can hold that attempt (a replica's own job is only
-- handed to another through the reaper, on a new job).
CREATE OR REPLACE FUNCTION attune.claim(execution_id bigint, worker text, attempt integer, job_id bigint)
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
        AND (e.status IN ('requested', 'scheduled')
             OR (e.status = 'running' AND e.attempt < claim.attempt)
             OR (e.status = 'running' AND e.attempt = claim.attempt AND e.worker = claim.worker))
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
