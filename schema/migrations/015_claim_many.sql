-- Claims in batches: a replica claims the jobs River handed it at about the
-- same time in one statement, and skips the admission round trip for
-- actions that have no policy admission could act on.

-- requested | scheduled | running → running
--
-- claim_many is attune.claim (009_settle.sql) for many executions at once:
-- row i claims execution_ids[i] for attempts[i] of River job job_ids[i], on
-- the same conditions and with the same writes as claim, and returns the
-- same columns, keyed by job_id. An execution that may not run returns no
-- row, as claim does.
--
-- Admission: policy_admit (011_policy.sql) must decide before the claim of
-- an execution whose action or pack has a policy it reads. Such a row,
-- unless admitted[i] says the worker has asked policy_admit already, is
-- neither claimed nor changed: it comes back with must_admit and nothing
-- else, and the worker admits it, then claims it again with admitted. Only
-- a policy that holds nothing but retention (prune's) and a retry block
-- without "on" (policy_next_retry's, read when an attempt fails) is known
-- to leave policy_admit nothing to do but admit; anything else, a policy
-- key a later migration adds included, goes through admission.
--
-- Like claim, it commits without waiting for the WAL flush.
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
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    RETURN QUERY
    WITH input AS (
        SELECT u.id, u.attempt, u.job_id,
            NOT coalesce(u.admitted, false) AND NOT (
                a.policy - 'retention' - 'retry' = '{}'
                AND NOT coalesce(a.policy -> 'retry' ? 'on', false)
                AND coalesce(p.policy, '{}') - 'retention' = '{}') AS must_admit
        FROM unnest(claim_many.execution_ids, claim_many.attempts, claim_many.job_ids, claim_many.admitted)
            AS u(id, attempt, job_id, admitted)
        JOIN attune.execution e ON e.id = u.id
        JOIN attune.action a ON a.ref = e.action_ref
        LEFT JOIN attune.pack p ON p.ref = a.pack_ref
    ), claimed AS (
        UPDATE attune.execution e
        SET status = 'running', started_at = now(), finished_at = NULL, worker = claim_many.worker, attempt = u.attempt
        FROM input u, attune.action a
        WHERE NOT u.must_admit AND e.id = u.id AND a.ref = e.action_ref AND e.job_id = u.job_id
            AND (e.status IN ('requested', 'scheduled') OR (e.status = 'running' AND e.attempt < u.attempt))
            AND EXISTS (SELECT 1 FROM attune.worker w WHERE w.name = claim_many.worker AND w.status = 'active')
        RETURNING u.job_id, false, e.max_attempts, a.ref, a.pack_ref, a.runner_type, a.path, e.parameters,
            (SELECT s.parameters FROM attune.execution_secret s WHERE s.execution_id = e.id),
            a.parameters, a.result_schema, e.timeout_seconds, a.timeout_seconds,
            a.parameter_delivery, a.parameter_format, a.output_format, e.rule_ref,
            (SELECT r.trigger_ref FROM attune.rule r WHERE r.ref = e.rule_ref),
            a.updated,
            (SELECT coalesce(jsonb_agg(jsonb_build_object('name', x.name, 'scope', x.scope, 'scope_ref', x.scope_ref,
                'nonce', encode(x.nonce, 'base64'), 'ciphertext', encode(x.ciphertext, 'base64'))), '[]')
             FROM attune.secret x
             WHERE x.scope = 'global' OR (x.scope = 'pack' AND x.scope_ref = a.pack_ref)
                OR (x.scope = 'action' AND x.scope_ref = a.ref))
    )
    SELECT * FROM claimed
    UNION ALL
    SELECT u.job_id, true, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text, NULL::jsonb, NULL::jsonb,
        NULL::jsonb, NULL::jsonb, NULL::integer, NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text,
        NULL::text, NULL::timestamptz, NULL::jsonb
    FROM input u WHERE u.must_admit;
END $$;

-- claim is claim_many of one execution the caller has admitted (claim never
-- asked about policies): one definition of what a claim does.
CREATE OR REPLACE FUNCTION attune.claim(execution_id bigint, worker text, attempt integer, job_id bigint)
RETURNS TABLE (
    max_attempts integer, action_ref text, pack_ref text, runner_type text, path text,
    parameters jsonb, secret_parameters jsonb, declarations jsonb, result_schema jsonb,
    timeout_seconds integer, action_timeout_seconds integer, parameter_delivery text,
    parameter_format text, output_format text, rule_ref text, trigger_ref text,
    action_updated timestamptz, secrets jsonb)
LANGUAGE sql AS $$
    SELECT c.max_attempts, c.action_ref, c.pack_ref, c.runner_type, c.path, c.parameters, c.secret_parameters,
        c.declarations, c.result_schema, c.timeout_seconds, c.action_timeout_seconds, c.parameter_delivery,
        c.parameter_format, c.output_format, c.rule_ref, c.trigger_ref, c.action_updated, c.secrets
    FROM attune.claim_many(ARRAY[claim.execution_id], ARRAY[claim.attempt], ARRAY[claim.job_id], ARRAY[true],
        claim.worker) c;
$$;
