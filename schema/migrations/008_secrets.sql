-- One secrets key per installation, and secret parameters that never
-- outlive their execution.

-- The fingerprint (jobs.KeyID) of the installation's ATTUNE_SECRETS_KEY,
-- recorded by the first replica or command that uses a key
-- (jobs.CheckSecretsKey); at most one row. It names the key, it does not
-- reveal it.
CREATE TABLE attune.secrets_key (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    key_id      text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- attune.execution_secret.parameters is a JSON object in clear when SQL's
-- attune.enqueue wrote it (PostgreSQL never has the key), or the sealed
-- envelope ["aes-256-gcm", key_id, nonce, ciphertext] when the Go API or
-- the CLI had the key (jobs/secret_params.go). Either way only attune's own
-- role may read it: no grant to PUBLIC, ever.
REVOKE ALL ON attune.execution_secret, attune.secret FROM PUBLIC;

-- Whatever moves an execution to a final status, by whichever function or
-- future path, its secret parameters go in the same transaction. The
-- state-machine functions delete them too; this makes it hold for every
-- path, not only those that remember to.
CREATE FUNCTION attune.drop_execution_secret() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM attune.execution_secret s WHERE s.execution_id = NEW.id;
    RETURN NULL;
END $$;

CREATE TRIGGER execution_secret_until_final
AFTER UPDATE OF status ON attune.execution
FOR EACH ROW
WHEN (NEW.status IN ('completed', 'failed', 'timeout', 'cancelled', 'abandoned')
      AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION attune.drop_execution_secret();
