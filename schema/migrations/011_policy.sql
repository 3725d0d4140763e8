-- Policies across replicas: concurrency limits (per action or pack, per
-- rendered key), rate limits, retry schedules and retention.
--
-- The hooks into the state machine of 005_state_machine.sql are few, so that
-- a rewrite of claim and settle keeps them:
--   * the worker calls policy_admit before claim (worker/execute.go);
--   * a trigger on attune.execution frees the slot of an execution that
--     stops running, whichever function moved it (settle, reap_worker,
--     cancel_execution), and wakes the next waiter;
--   * a trigger on attune.river_job makes a waiter's job available at once
--     when it was woken while its snooze was still on the way.
-- The statements on River's tables (attune.river_job) follow River's own
-- writes as 005_state_machine.sql does, and were written against:
--
-- River schema version: 8
--
-- (schema.TestRiverSchemaVersionPinned).

ALTER TABLE attune.action ADD COLUMN policy jsonb NOT NULL DEFAULT '{}';
ALTER TABLE attune.pack ADD COLUMN policy jsonb NOT NULL DEFAULT '{}';

-- waiting_reason says why a queued execution has not started:
-- "waiting: concurrency limit 2 of examples.deploy (key web-1) reached".
ALTER TABLE attune.execution ADD COLUMN waiting_reason text;

-- policy_slot holds one row per concurrency key an admitted execution
-- holds; the count of rows of a key is the number running under it.
CREATE TABLE attune.policy_slot (
    key          text NOT NULL,
    execution_id bigint NOT NULL REFERENCES attune.execution (id) ON DELETE CASCADE,
    PRIMARY KEY (key, execution_id)
);
CREATE INDEX policy_slot_execution_idx ON attune.policy_slot (execution_id);

-- policy_waiter holds the executions queued behind a full concurrency key,
-- woken oldest first. woken is set when the waker found the waiter's job
-- still in the worker's hands (its snooze not yet written).
CREATE TABLE attune.policy_waiter (
    key          text NOT NULL,
    execution_id bigint NOT NULL REFERENCES attune.execution (id) ON DELETE CASCADE,
    woken        boolean NOT NULL DEFAULT false,
    lim          integer NOT NULL,
    PRIMARY KEY (key, execution_id)
);
CREATE INDEX policy_waiter_execution_idx ON attune.policy_waiter (execution_id);
CREATE INDEX policy_waiter_woken_idx ON attune.policy_waiter (key) WHERE woken;

-- policy_start holds the starts of rate-limited keys, past and reserved:
-- a start that would exceed the limit reserves the first free time in the
-- window and the job is scheduled for it.
CREATE TABLE attune.policy_start (
    key          text NOT NULL,
    start_at     timestamptz NOT NULL,
    execution_id bigint NOT NULL REFERENCES attune.execution (id) ON DELETE CASCADE,
    PRIMARY KEY (key, start_at, execution_id)
);
CREATE INDEX policy_start_execution_idx ON attune.policy_start (execution_id);

-- _policy_key renders a key template such as "{{ parameters.host }}" with
-- the execution's parameters (secret ones included); a parameter left out
-- renders as its declared default, else as the empty string.
CREATE FUNCTION attune._policy_key(template text, parameters jsonb, declarations jsonb)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    m   text[];
    out text := coalesce(template, '');
    v   jsonb;
BEGIN
    FOR m IN SELECT regexp_matches(out, '\{\{\s*parameters\.([A-Za-z0-9_-]+)\s*\}\}', 'g') LOOP
        v := coalesce(parameters -> m[1], declarations -> m[1] -> 'default');
        out := regexp_replace(out, '\{\{\s*parameters\.' || m[1] || '\s*\}\}',
            replace(CASE WHEN v IS NULL OR jsonb_typeof(v) = 'null' THEN ''
                         WHEN jsonb_typeof(v) = 'string' THEN v #>> '{}' ELSE v::text END, '\', '\\'), 'g');
    END LOOP;
    RETURN out;
END $$;

-- _policy_interval reads a duration such as "2s", "5m", "1h30m", "7d",
-- "250ms", as packs/policy.go wrote it; NULL for NULL or ''.
CREATE FUNCTION attune._policy_interval(d text)
RETURNS interval LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN coalesce(d, '') = '' THEN NULL ELSE
        (SELECT coalesce(sum(m[1]::numeric * CASE m[2] WHEN 'ms' THEN interval '1 millisecond'
            WHEN 's' THEN interval '1 second' WHEN 'm' THEN interval '1 minute'
            WHEN 'h' THEN interval '1 hour' ELSE interval '1 day' END), interval '0')
         FROM regexp_matches(d, '([0-9.]+)(ms|s|m|h|d)', 'g') AS m) END
$$;

-- _policy_wake wakes the oldest waiter of a concurrency key: its River job
-- becomes available now, or, while the worker that parked it has not yet
-- written its snooze, the waiter is marked woken and the trigger on
-- river_job makes the snooze a wake-up. The job row is locked first, so
-- the snooze either lands before (and is seen) or after (and sees woken).
CREATE FUNCTION attune._policy_wake(k text, before bigint DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    w     record;
    state text;
BEGIN
    SELECT pw.execution_id, e.job_id INTO w
    FROM attune.policy_waiter pw JOIN attune.execution e ON e.id = pw.execution_id
    WHERE pw.key = k AND NOT pw.woken AND e.status IN ('requested', 'scheduled')
        AND (before IS NULL OR pw.execution_id < before)
    ORDER BY pw.execution_id LIMIT 1
    -- Two releases at once wake two waiters, not the same one twice.
    FOR UPDATE OF pw SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT j.state::text INTO state FROM attune.river_job j WHERE j.id = w.job_id FOR UPDATE;
    -- River writes a short snooze as available at a later scheduled_at.
    IF state IN ('scheduled', 'available') THEN
        -- River fetches by scheduled_at: back to its enqueue time, so the
        -- woken job comes before newer ones that would only wait behind it.
        UPDATE attune.river_job j SET state = 'available', scheduled_at = least(j.scheduled_at, j.created_at, now())
        WHERE j.id = w.job_id;
        PERFORM attune.wake_workers(ARRAY[(SELECT j.queue FROM attune.river_job j WHERE j.id = w.job_id)]);
    END IF;
    -- Woken: on its way to the slot, so the next release wakes the next
    -- waiter rather than this one again.
    UPDATE attune.policy_waiter pw SET woken = true WHERE pw.key = k AND pw.execution_id = w.execution_id;
END $$;

-- _policy_release frees the slots of an execution that stopped running
-- (or was cancelled or failed while queued); _policy_freed wakes one waiter
-- per freed slot. It runs for every status change, from any function.
CREATE FUNCTION attune._policy_release()
RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    k text;
BEGIN
    IF NEW.status IN ('requested', 'scheduled') THEN
        NULL; -- back to the queue (a retry): its slots go below
    ELSIF NEW.status IN ('running', 'canceling') THEN
        NEW.waiting_reason := NULL;
        DELETE FROM attune.policy_waiter pw WHERE pw.execution_id = NEW.id;
        RETURN NEW;
    ELSE
        -- Finished while queued (cancelled, failed): a waiter already woken
        -- was owed a slot, which goes to the next one.
        NEW.waiting_reason := NULL;
        FOR k IN DELETE FROM attune.policy_waiter pw WHERE pw.execution_id = NEW.id RETURNING CASE WHEN pw.woken THEN pw.key END LOOP
            IF k IS NOT NULL THEN
                PERFORM attune._policy_wake(k);
            END IF;
        END LOOP;
    END IF;
    DELETE FROM attune.policy_slot s WHERE s.execution_id = NEW.id;
    RETURN NEW;
END $$;

CREATE TRIGGER execution_policy_release BEFORE UPDATE OF status ON attune.execution
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION attune._policy_release();

-- _policy_freed wakes the next waiter of a freed slot when the freeing
-- transaction commits (a deferred trigger), so that it sees every waiter
-- that committed before: an admission deciding to wait does not block on
-- a settle in flight, and the waiter's snooze (_policy_snoozed) looks again
-- for the rare release that committed in between.
CREATE FUNCTION attune._policy_freed()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM attune._policy_wake(OLD.key);
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER policy_slot_freed AFTER DELETE ON attune.policy_slot
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
EXECUTE FUNCTION attune._policy_freed();

-- _policy_snoozed turns the snooze of a waiter into a wake-up when it was
-- woken while its worker still held the job, or when it heads the queue
-- and a slot freed after it was counted as held (a release committing
-- between the admission and the snooze, which could not see it).
CREATE FUNCTION attune._policy_snoozed()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM attune.policy_waiter pw
               WHERE pw.execution_id = (NEW.args ->> 'execution_id')::bigint
                   AND (pw.woken
                        -- The head of the queue, with a slot free that no
                        -- woken waiter is owed: its release missed it.
                        OR ((SELECT count(*) FROM attune.policy_slot s WHERE s.key = pw.key)
                            + (SELECT count(*) FROM (SELECT 1 FROM attune.policy_waiter o
                                                     WHERE o.key = pw.key AND o.woken LIMIT pw.lim) x) < pw.lim
                            AND NOT EXISTS (SELECT 1 FROM attune.policy_waiter o JOIN attune.execution q ON q.id = o.execution_id
                                            WHERE o.key = pw.key AND NOT o.woken AND o.execution_id < pw.execution_id
                                                AND q.status IN ('requested', 'scheduled'))))) THEN
        NEW.state := 'available';
        NEW.scheduled_at := least(NEW.created_at, now());
        PERFORM attune.wake_workers(ARRAY[NEW.queue]);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER river_job_policy_snoozed BEFORE UPDATE ON attune.river_job
FOR EACH ROW WHEN (OLD.state = 'running' AND NEW.state IN ('scheduled', 'available') AND NEW.kind = 'attune_execution')
EXECUTE FUNCTION attune._policy_snoozed();

-- policy_admit decides whether an execution may start now. Called by the
-- worker before claim. It returns:
--   admitted   true: claim and run it (its slots are held from now on)
--   cancelled  true: the limit cancelled it (on_limit: cancel); the worker
--              completes its River job
--   retry_at   when it may be tried again: a rate limit's reserved start,
--              or a fallback for a concurrency waiter, which is woken by
--              the release of a slot long before
--   reason     why it waits (also stored in waiting_reason)
--   retry_on   the outcomes the action's retry policy retries (NULL: all)
-- An execution not queued any more (running again after a lost attempt,
-- cancelled, finished) is admitted: claim decides about it as before.
-- Slots are counted under a per-key advisory lock, so two admissions never
-- take the same last slot; releases do not take it, so a settle never waits
-- for an admission nor the other way round.
CREATE FUNCTION attune.policy_admit(execution_id bigint, worker text,
    OUT admitted boolean, OUT cancelled boolean, OUT retry_at timestamptz, OUT reason text, OUT retry_on text[])
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    e       attune.execution%ROWTYPE;
    a       attune.action%ROWTYPE;
    pk      jsonb;
    params  jsonb;
    c       record;
    conc    jsonb;
    holders integer;
    older   integer;
    woken   boolean;
    lim     integer;
    keyname text;
    starts  timestamptz[];
    per     interval;
    cnt     integer;
    at      timestamptz;
BEGIN
    admitted := true;
    cancelled := false;
    SELECT * INTO e FROM attune.execution x WHERE x.id = execution_id;
    SELECT * INTO a FROM attune.action x WHERE x.ref = e.action_ref;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF a.policy -> 'retry' ? 'on' THEN
        retry_on := ARRAY(SELECT jsonb_array_elements_text(a.policy -> 'retry' -> 'on'));
    END IF;
    IF e.status NOT IN ('requested', 'scheduled') THEN
        RETURN;
    END IF;
    SELECT p.policy INTO pk FROM attune.pack p WHERE p.ref = a.pack_ref;
    IF NOT (a.policy ? 'concurrency' OR a.policy ? 'rate_limit' OR coalesce(pk, '{}') ? 'concurrency') THEN
        RETURN;
    END IF;
    -- Admissions of one key are serialized by its lock, held to commit: a
    -- WAL flush each would bound the key to one admission per flush. Like
    -- claim's, this commit need not wait for it: WAL is replayed in order,
    -- so a claim that survives a crash has its admission too.
    PERFORM set_config('synchronous_commit', 'off', true);
    params := e.parameters || coalesce((SELECT s.parameters FROM attune.execution_secret s WHERE s.execution_id = e.id), '{}');

    -- Concurrency: the action's limit, then the pack's, locks in key order.
    SELECT coalesce(jsonb_agg(to_jsonb(x) ORDER BY x.k), '[]') INTO conc FROM (
        SELECT 'concurrency:' || s.scope || ':' || s.ref || ':' || attune._policy_key(s.pol ->> 'key', params, a.parameters) AS k,
               (s.pol ->> 'limit')::integer AS lim, coalesce(s.pol ->> 'on_limit', 'queue') AS on_limit, s.what,
               attune._policy_key(s.pol ->> 'key', params, a.parameters) AS label
        FROM (VALUES ('action', a.ref, a.policy -> 'concurrency', a.ref),
                     ('pack', a.pack_ref, pk -> 'concurrency', 'pack ' || a.pack_ref)) AS s(scope, ref, pol, what)
        WHERE jsonb_typeof(s.pol) = 'object') x;

    FOR c IN SELECT * FROM jsonb_to_recordset(conc) AS r(k text, lim integer, on_limit text, what text, label text) LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(c.k, 0));
    END LOOP;
    FOR c IN SELECT * FROM jsonb_to_recordset(conc) AS r(k text, lim integer, on_limit text, what text, label text) LOOP
        IF EXISTS (SELECT 1 FROM attune.policy_slot s WHERE s.key = c.k AND s.execution_id = e.id) THEN
            CONTINUE; -- admitted before, its claim not yet made (a lost fetch)
        END IF;
        -- A slot whose release is in flight still counts: the release wakes
        -- the oldest waiter when it commits.
        SELECT count(*) INTO holders FROM attune.policy_slot s WHERE s.key = c.k;
        -- Slots are also owed to the waiters already woken (on their way),
        -- and, to one not woken itself, to every older waiter: FIFO. A woken
        -- waiter is owed its slot, so it does not bounce behind older ones.
        -- Counted only up to the limit: the admission runs under the key's
        -- lock, and a long queue must not make every admission slower.
        woken := EXISTS (SELECT 1 FROM attune.policy_waiter pw
                         WHERE pw.key = c.k AND pw.execution_id = e.id AND pw.woken);
        SELECT count(*) INTO older FROM (
            SELECT 1 FROM attune.policy_waiter pw JOIN attune.execution q ON q.id = pw.execution_id
            WHERE pw.key = c.k AND pw.execution_id <> e.id AND q.status IN ('requested', 'scheduled')
                AND (pw.woken OR (NOT woken AND pw.execution_id < e.id))
            LIMIT greatest(c.lim - holders, 0)) x;
        IF holders + older >= c.lim THEN
            reason := format('waiting: concurrency limit %s of %s%s reached', c.lim, c.what,
                CASE WHEN c.label <> '' THEN ' (key ' || c.label || ')' ELSE '' END);
            IF c.on_limit = 'cancel' THEN
                UPDATE attune.execution x SET status = 'cancelled', finished_at = now(), worker = policy_admit.worker,
                    error = 'Cancelled: concurrency limit ' || c.lim || ' of ' || c.what
                        || CASE WHEN c.label <> '' THEN ' (key ' || c.label || ')' ELSE '' END || ' reached (on_limit: cancel)'
                WHERE x.id = e.id;
                DELETE FROM attune.execution_secret s WHERE s.execution_id = e.id;
                admitted := false;
                cancelled := true;
                reason := NULL;
                RETURN;
            END IF;
            -- Queued behind one key at a time; not woken until a slot frees.
            DELETE FROM attune.policy_waiter pw WHERE pw.execution_id = e.id AND pw.key <> c.k;
            INSERT INTO attune.policy_waiter (key, execution_id, lim) VALUES (c.k, e.id, c.lim)
            ON CONFLICT ON CONSTRAINT policy_waiter_pkey DO UPDATE SET woken = false, lim = EXCLUDED.lim;
            UPDATE attune.execution x SET waiting_reason = reason WHERE x.id = e.id;
            admitted := false;
            retry_at := now() + interval '5 minutes';
            -- A slot may be free and owed to an older waiter nobody woke
            -- (its release missed it): wake that one, unless the woken
            -- ones already take every free slot.
            IF holders + (SELECT count(*) FROM (SELECT 1 FROM attune.policy_waiter pw
                                               WHERE pw.key = c.k AND pw.woken LIMIT c.lim) x) < c.lim THEN
                PERFORM attune._policy_wake(c.k, e.id);
            END IF;
            RETURN;
        END IF;
    END LOOP;

    -- Rate limit: at most count starts in any window of length per.
    IF jsonb_typeof(a.policy -> 'rate_limit') = 'object' THEN
        keyname := 'rate:' || a.ref || ':' || attune._policy_key(a.policy -> 'rate_limit' ->> 'key', params, a.parameters);
        PERFORM pg_advisory_xact_lock(hashtextextended(keyname, 0));
        SELECT min(ps.start_at) INTO at FROM attune.policy_start ps
        WHERE ps.key = keyname AND ps.execution_id = e.id;
        IF at IS NULL THEN
            per := attune._policy_interval(a.policy -> 'rate_limit' ->> 'per');
            cnt := (a.policy -> 'rate_limit' ->> 'count')::integer;
            DELETE FROM attune.policy_start ps WHERE ps.key = keyname AND ps.start_at < now() - per;
            starts := ARRAY(SELECT ps.start_at FROM attune.policy_start ps WHERE ps.key = keyname
                            ORDER BY ps.start_at DESC LIMIT cnt);
            at := now();
            IF cardinality(starts) >= cnt THEN
                at := greatest(now(), starts[cnt] + per);
            END IF;
            INSERT INTO attune.policy_start (key, start_at, execution_id) VALUES (keyname, at, e.id);
        END IF;
        IF at > now() THEN
            reason := format('waiting: rate limit %s per %s of %s reached; starts at %s',
                a.policy -> 'rate_limit' ->> 'count', a.policy -> 'rate_limit' ->> 'per', a.ref,
                to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'));
            UPDATE attune.execution x SET waiting_reason = reason WHERE x.id = e.id;
            admitted := false;
            retry_at := at;
            DELETE FROM attune.policy_waiter pw WHERE pw.execution_id = e.id;
            RETURN;
        END IF;
    END IF;

    INSERT INTO attune.policy_slot (key, execution_id)
    SELECT r.k, e.id FROM jsonb_to_recordset(conc) AS r(k text) ON CONFLICT DO NOTHING;
    -- Slots still free beyond the waiters already woken: wake one more, so
    -- that a wake lost to a race costs one start, not the slot.
    FOR c IN SELECT * FROM jsonb_to_recordset(conc) AS r(k text, lim integer, on_limit text, what text, label text) LOOP
        IF (SELECT count(*) FROM attune.policy_slot s WHERE s.key = c.k)
           + (SELECT count(*) FROM (SELECT 1 FROM attune.policy_waiter pw
                                    WHERE pw.key = c.k AND pw.woken LIMIT c.lim) x) < c.lim THEN
            PERFORM attune._policy_wake(c.k);
        END IF;
    END LOOP;
    DELETE FROM attune.policy_waiter pw WHERE pw.execution_id = e.id;
    IF e.waiting_reason IS NOT NULL THEN
        UPDATE attune.execution x SET waiting_reason = NULL WHERE x.id = e.id;
    END IF;
END $$;

-- policy_next_retry is when attempt (just failed) of an execution runs
-- again under its action's retry policy; NULL when the action has none
-- (the worker's default applies).
CREATE FUNCTION attune.policy_next_retry(execution_id bigint, attempt integer)
RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
DECLARE
    r     jsonb;
    base  interval;
    cap   interval;
    d     interval;
BEGIN
    SELECT a.policy -> 'retry' INTO r FROM attune.execution e JOIN attune.action a ON a.ref = e.action_ref
    WHERE e.id = policy_next_retry.execution_id;
    IF r IS NULL OR NOT r ? 'delay' THEN
        RETURN NULL;
    END IF;
    base := attune._policy_interval(r ->> 'delay');
    cap := attune._policy_interval(r ->> 'max_delay');
    d := CASE coalesce(r ->> 'backoff', 'constant')
        WHEN 'exponential' THEN base * power(2, least(greatest(attempt - 1, 0), 40))
        WHEN 'linear' THEN base * greatest(attempt, 1)
        ELSE base END;
    IF cap IS NOT NULL AND d > cap THEN
        d := cap;
    END IF;
    RETURN now() + d;
END $$;

-- execution_policy is what execution show adds: why a queued execution
-- waits, and when River runs its next attempt.
CREATE FUNCTION attune.execution_policy(execution_id bigint,
    OUT waiting_reason text, OUT next_attempt_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT e.waiting_reason,
        CASE WHEN e.status IN ('requested', 'scheduled') AND j.state IN ('available', 'scheduled', 'retryable')
                  AND j.scheduled_at > now()
             THEN j.scheduled_at END
    FROM attune.execution e LEFT JOIN attune.river_job j ON j.id = e.job_id
    WHERE e.id = execution_policy.execution_id
$$;

-- Retention. Finished executions older than their action's retention (or
-- the default, ATTUNE_RETENTION) go, and events older than the default that
-- no execution names any more. A zero retention keeps everything. Rows are
-- deleted in small batches, each its own short transaction, and skip rows
-- another transaction holds (SKIP LOCKED), so pruning never waits on, nor
-- blocks, enqueues and claims: it touches only finished executions, which
-- nothing else writes. River's finished jobs are River's to clean
-- (JobCleaner); nothing joins an execution to its job except with a LEFT
-- JOIN (execution_policy), so either may go first.
CREATE INDEX execution_finished_idx ON attune.execution (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX execution_event_idx ON attune.execution (event_id) WHERE event_id IS NOT NULL;
CREATE INDEX event_created_idx ON attune.event (created_at);

-- prune_candidates lists up to batch finished executions past their
-- retention, oldest first (for attune prune --dry-run, and for prune).
CREATE FUNCTION attune.prune_candidates(default_retention interval, batch integer)
RETURNS TABLE (id bigint, action_ref text, status text, finished_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT e.id, e.action_ref, e.status, e.finished_at
    FROM attune.execution e LEFT JOIN attune.action a ON a.ref = e.action_ref
    WHERE e.finished_at IS NOT NULL
        AND e.status IN ('completed', 'failed', 'timeout', 'cancelled', 'abandoned')
        AND coalesce(attune._policy_interval(a.policy ->> 'retention'), default_retention) > interval '0'
        AND e.finished_at < now() - coalesce(attune._policy_interval(a.policy ->> 'retention'), default_retention)
    ORDER BY e.finished_at
    LIMIT batch
$$;

-- prune_executions deletes one batch of prune_candidates and returns how
-- many went; the caller repeats while a batch is full.
CREATE FUNCTION attune.prune_executions(default_retention interval, batch integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    PERFORM set_config('statement_timeout', '10s', true);
    DELETE FROM attune.execution e
    WHERE e.id IN (
        SELECT x.id FROM attune.execution x
        WHERE x.id IN (SELECT c.id FROM attune.prune_candidates(default_retention, batch) c)
            AND x.finished_at IS NOT NULL -- not retried meanwhile
            AND x.status IN ('completed', 'failed', 'timeout', 'cancelled', 'abandoned')
        FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- prune_events deletes one batch of events older than the retention that
-- no execution names; with dry_run it only counts them.
CREATE FUNCTION attune.prune_events(default_retention interval, batch integer, dry_run boolean)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    IF default_retention <= interval '0' THEN
        RETURN 0;
    END IF;
    PERFORM set_config('statement_timeout', '10s', true);
    IF dry_run THEN
        SELECT count(*) INTO n FROM attune.event ev
        WHERE ev.created_at < now() - default_retention
            AND NOT EXISTS (SELECT 1 FROM attune.execution e WHERE e.event_id = ev.id);
        RETURN n;
    END IF;
    DELETE FROM attune.event ev
    WHERE ev.id IN (
        SELECT x.id FROM attune.event x
        WHERE x.created_at < now() - default_retention
            AND NOT EXISTS (SELECT 1 FROM attune.execution e WHERE e.event_id = x.id)
        ORDER BY x.created_at LIMIT batch
        FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
