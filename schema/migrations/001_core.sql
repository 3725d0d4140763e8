-- attune's own tables. River's tables live in the same schema (River
-- Config.Schema = "attune") and are created by rivermigrate before this runs.

CREATE TABLE attune.runtime (
    ref           text PRIMARY KEY,
    pack_ref      text NOT NULL,
    name          text NOT NULL,
    description   text,
    runtime_type  text NOT NULL CHECK (runtime_type IN ('action', 'sensor')),
    distributions jsonb NOT NULL DEFAULT '[]',
    installation  jsonb NOT NULL DEFAULT '{}',
    created       timestamptz NOT NULL DEFAULT now(),
    updated       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE attune.pack (
    ref         text PRIMARY KEY,
    label       text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    version     text NOT NULL DEFAULT '',
    path        text NOT NULL DEFAULT '',
    created     timestamptz NOT NULL DEFAULT now(),
    updated     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE attune.action (
    ref                text PRIMARY KEY,
    pack_ref           text NOT NULL REFERENCES attune.pack (ref) ON DELETE CASCADE,
    name               text NOT NULL,
    label              text NOT NULL DEFAULT '',
    description        text NOT NULL DEFAULT '',
    enabled            boolean NOT NULL DEFAULT true,
    runner_type        text NOT NULL CHECK (runner_type IN ('native', 'shell', 'python', 'node')),
    entry_point        text NOT NULL,
    path               text NOT NULL,
    parameters         jsonb NOT NULL DEFAULT '{}',
    result_schema      jsonb,
    timeout_seconds    integer CHECK (timeout_seconds > 0),
    parameter_delivery text NOT NULL DEFAULT 'env' CHECK (parameter_delivery IN ('env', 'stdin', 'file')),
    parameter_format   text NOT NULL DEFAULT 'json' CHECK (parameter_format IN ('json', 'dotenv', 'yaml')),
    output_format      text NOT NULL DEFAULT 'json' CHECK (output_format IN ('json', 'text', 'yaml', 'jsonl')),
    max_retries        integer NOT NULL DEFAULT 0 CHECK (max_retries >= 0),
    tags               text[] NOT NULL DEFAULT '{}',
    extra              jsonb NOT NULL DEFAULT '{}',
    created            timestamptz NOT NULL DEFAULT now(),
    updated            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE attune.trigger (
    ref            text PRIMARY KEY,
    pack_ref       text NOT NULL REFERENCES attune.pack (ref) ON DELETE CASCADE,
    name           text NOT NULL,
    description    text NOT NULL DEFAULT '',
    parameters     jsonb NOT NULL DEFAULT '{}',
    payload_schema jsonb,
    extra          jsonb NOT NULL DEFAULT '{}',
    created        timestamptz NOT NULL DEFAULT now(),
    updated        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE attune.sensor (
    ref           text PRIMARY KEY,
    pack_ref      text NOT NULL REFERENCES attune.pack (ref) ON DELETE CASCADE,
    name          text NOT NULL,
    description   text NOT NULL DEFAULT '',
    enabled       boolean NOT NULL DEFAULT true,
    runner_type   text NOT NULL CHECK (runner_type IN ('native', 'shell', 'python', 'node')),
    entry_point   text NOT NULL,
    path          text NOT NULL,
    trigger_types text[] NOT NULL DEFAULT '{}',
    parameters    jsonb NOT NULL DEFAULT '{}',
    extra         jsonb NOT NULL DEFAULT '{}',
    created       timestamptz NOT NULL DEFAULT now(),
    updated       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE attune.rule (
    id             bigserial UNIQUE,
    ref            text PRIMARY KEY,
    pack_ref       text NOT NULL REFERENCES attune.pack (ref) ON DELETE CASCADE,
    name           text NOT NULL,
    description    text NOT NULL DEFAULT '',
    trigger_ref    text NOT NULL,
    trigger_params jsonb NOT NULL DEFAULT '{}',
    conditions     jsonb NOT NULL DEFAULT '[]',
    action_ref     text NOT NULL,
    action_params  jsonb NOT NULL DEFAULT '{}',
    enabled        boolean NOT NULL DEFAULT true,
    extra          jsonb NOT NULL DEFAULT '{}',
    created        timestamptz NOT NULL DEFAULT now(),
    updated        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rule_trigger_ref_idx ON attune.rule (trigger_ref) WHERE enabled;

CREATE TABLE attune.event (
    id          bigserial PRIMARY KEY,
    trigger_ref text NOT NULL,
    sensor_ref  text,
    payload     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE attune.execution (
    id               bigserial PRIMARY KEY,
    action_ref       text NOT NULL,
    status           text NOT NULL DEFAULT 'requested' CHECK (status IN (
        'requested', 'scheduled', 'running', 'completed', 'failed',
        'timeout', 'canceling', 'cancelled', 'abandoned')),
    parameters       jsonb NOT NULL DEFAULT '{}',
    result           jsonb,
    exit_code        integer,
    stdout           text,
    stderr           text,
    stdout_truncated boolean NOT NULL DEFAULT false,
    stderr_truncated boolean NOT NULL DEFAULT false,
    error            text,
    worker           text,
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 1,
    timeout_seconds  integer,
    priority         smallint NOT NULL DEFAULT 1,
    job_id           bigint,
    rule_ref         text,
    event_id         bigint,
    scheduled_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);
CREATE INDEX execution_status_idx ON attune.execution (status, id);
CREATE INDEX execution_action_ref_idx ON attune.execution (action_ref, id);
CREATE INDEX execution_worker_running_idx ON attune.execution (worker) WHERE status IN ('running', 'canceling');

-- Secret parameter values of queued executions, kept out of
-- attune.execution.parameters and deleted once the execution finishes.
CREATE TABLE attune.execution_secret (
    execution_id bigint PRIMARY KEY REFERENCES attune.execution (id) ON DELETE CASCADE,
    parameters   jsonb NOT NULL
);

CREATE TABLE attune.worker (
    name         text PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    capabilities jsonb NOT NULL DEFAULT '{}',
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- Secret store: AES-256-GCM ciphertexts under ATTUNE_SECRETS_KEY. scope_ref
-- is '' for global secrets, the pack ref or the action ref otherwise.
CREATE TABLE attune.secret (
    name       text NOT NULL,
    scope      text NOT NULL CHECK (scope IN ('global', 'pack', 'action')),
    scope_ref  text NOT NULL DEFAULT '',
    nonce      bytea NOT NULL,
    ciphertext bytea NOT NULL,
    created    timestamptz NOT NULL DEFAULT now(),
    updated    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, scope, scope_ref)
);

-- The seed's runtime rows (attune's seed_runtimes.sql), same columns and values.
INSERT INTO attune.runtime (ref, pack_ref, name, description, runtime_type, distributions, installation) VALUES
    ('core.action.python3', 'core', 'Python 3 Action Runtime', 'Execute actions using Python 3.x interpreter', 'action',
     '["python3"]', '{"method": "system", "package_manager": "pip", "requirements_file": "requirements.txt"}'),
    ('core.action.shell', 'core', 'Shell Action Runtime', 'Execute actions using system shell (bash/sh)', 'action',
     '["bash", "sh"]', '{"method": "system", "shell": "/bin/bash"}'),
    ('core.action.nodejs', 'core', 'Node.js Action Runtime', 'Execute actions using Node.js runtime', 'action',
     '["nodejs", "node"]', '{"method": "system", "package_manager": "npm", "requirements_file": "package.json"}'),
    ('core.action.native', 'core', 'Native Action Runtime', 'Execute actions as native compiled binaries', 'action',
     '["native"]', '{"method": "binary", "description": "Native executable - no runtime installation required"}'),
    ('core.sensor.python3', 'core', 'Python 3 Sensor Runtime', 'Execute sensors using Python 3.x interpreter', 'sensor',
     '["python3"]', '{"method": "system", "package_manager": "pip", "requirements_file": "requirements.txt"}'),
    ('core.sensor.shell', 'core', 'Shell Sensor Runtime', 'Execute sensors using system shell (bash/sh)', 'sensor',
     '["bash", "sh"]', '{"method": "system", "shell": "/bin/bash"}'),
    ('core.sensor.nodejs', 'core', 'Node.js Sensor Runtime', 'Execute sensors using Node.js runtime', 'sensor',
     '["nodejs", "node"]', '{"method": "system", "package_manager": "npm", "requirements_file": "package.json"}'),
    ('core.sensor.native', 'core', 'Native Sensor Runtime', 'Execute sensors as native compiled binaries', 'sensor',
     '["native"]', '{"method": "binary", "description": "Native executable - no runtime installation required"}');
