-- Concurrency holders are the seats alone: what an admission, a release
-- and a settle write for a limited execution, fewer statements each.
--   * policy_slot goes. Since 016_policy_fixes.sql every holder also held
--     a seat (policy_seat), so the slot row was a second copy: inserted with
--     a foreign key check at every admission, deleted at every release and
--     again looked for at every settle, each delete firing a trigger to
--     free the seat and a deferred one to wake. A held seat is now the
--     holder; freeing it (execution_id to NULL) wakes the key's next waiter
--     at commit (policy_seat_freed), as a slot's delete did.
--   * policy_admit walks its keys in arrays instead of JSON sets, reads the
--     facts that choose its path in one statement, takes a seat in one, and
--     reads the parameters only to render a key template: one admission of
--     a key nobody waits for is six statements instead of fifteen.
--
-- Like 016_policy_fixes.sql, this file was written against:
--
-- River schema version: 8

-- A holder's seats are found by its execution (release, settle, claim).
CREATE INDEX policy_seat_execution_idx ON attune.policy_seat (execution_id) WHERE execution_id IS NOT NULL;

-- Every slot has had its seat since 016; should one lack it, it gets one
-- past the key's highest (a holder past the limit, not taken again).
INSERT INTO attune.policy_seat (key, n, execution_id)
SELECT s.key, coalesce((SELECT max(st.n) FROM attune.policy_seat st WHERE st.key = s.key), 0)
              + row_number() OVER (PARTITION BY s.key ORDER BY s.execution_id), s.execution_id
FROM attune.policy_slot s
WHERE NOT EXISTS (SELECT 1 FROM attune.policy_seat st WHERE st.key = s.key AND st.execution_id = s.execution_id);

DROP TABLE attune.policy_slot; -- and its triggers policy_slot_freed, policy_slot_seat_free
DROP FUNCTION attune._policy_seat_free();

-- _policy_freed is 011's, and calls the waker only when the key has a
-- waiter not yet woken: most frees have none, and it runs at every one.
CREATE OR REPLACE FUNCTION attune._policy_freed()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM attune.policy_waiter pw WHERE pw.key = OLD.key AND NOT pw.woken) THEN
        PERFORM attune._policy_wake(OLD.key);
    END IF;
    RETURN NULL;
END $$;

-- It wakes the next waiter of a freed seat's key when the freeing
-- transaction commits, as it did for a slot's delete.
CREATE CONSTRAINT TRIGGER policy_seat_freed AFTER UPDATE OF execution_id ON attune.policy_seat
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
WHEN (OLD.execution_id IS NOT NULL AND NEW.execution_id IS NULL)
EXECUTE FUNCTION attune._policy_freed();

-- A holder's row deleted by hand (prune deletes finished rows only, which
-- hold nothing) frees its seats, as the slot's foreign key cascade did.
CREATE FUNCTION attune._policy_deleted()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE attune.policy_seat st SET execution_id = NULL
    WHERE st.execution_id IN (SELECT g.id FROM gone g);
    RETURN NULL;
END $$;

CREATE TRIGGER execution_policy_deleted AFTER DELETE ON attune.execution
REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
EXECUTE FUNCTION attune._policy_deleted();

-- _policy_release is 016's: the seats are freed where the slots were
-- deleted.
CREATE OR REPLACE FUNCTION attune._policy_release()
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
        IF NEW.started_at IS NULL THEN
            PERFORM attune._policy_unreserve(NEW.id);
        END IF;
    END IF;
    UPDATE attune.policy_seat st SET execution_id = NULL WHERE st.execution_id = NEW.id;
    RETURN NEW;
END $$;

-- _policy_snoozed is 016's: the holders it counts are the held seats.
CREATE OR REPLACE FUNCTION attune._policy_snoozed()
RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    eid bigint := (NEW.args ->> 'execution_id')::bigint;
    at  timestamptz;
BEGIN
    IF EXISTS (SELECT 1 FROM attune.policy_waiter pw
               WHERE pw.execution_id = eid
                   AND (pw.woken
                        -- The head of the queue, with a slot free that no
                        -- woken waiter is owed: its release missed it.
                        OR ((SELECT count(*) FROM attune.policy_seat st WHERE st.key = pw.key AND st.execution_id IS NOT NULL)
                            + (SELECT count(*) FROM (SELECT 1 FROM attune.policy_waiter o
                                                     WHERE o.key = pw.key AND o.woken LIMIT pw.lim) x) < pw.lim
                            AND NOT EXISTS (SELECT 1 FROM attune.policy_waiter o
                                            WHERE o.key = pw.key AND NOT o.woken AND o.execution_id < pw.execution_id
                                                AND (SELECT q.status FROM attune.execution q WHERE q.id = o.execution_id)
                                                    IN ('requested', 'scheduled'))))) THEN
        NEW.state := 'available';
        NEW.scheduled_at := least(NEW.created_at, now());
        PERFORM attune.wake_workers(ARRAY[NEW.queue]);
        RETURN NEW;
    END IF;
    -- Only a reservation no start used yet (a retry keeps the one its
    -- first attempt used, long past).
    SELECT min(ps.start_at) INTO at FROM attune.policy_start ps JOIN attune.execution e ON e.id = ps.execution_id
    WHERE ps.execution_id = eid AND e.started_at IS NULL;
    IF at IS NOT NULL AND at < NEW.scheduled_at THEN
        NEW.scheduled_at := at;
        IF at <= now() THEN
            NEW.state := 'available';
            PERFORM attune.wake_workers(ARRAY[NEW.queue]);
        END IF;
    END IF;
    RETURN NEW;
END $$;

-- policy_admit is 016's, with the same answers (see the top of this file
-- for what changed), and one more: holds_slots, whether the execution it
-- admitted holds concurrency seats, which claim_many returns.
DROP FUNCTION attune.policy_admit(bigint, text);
CREATE FUNCTION attune.policy_admit(execution_id bigint, worker text,
    OUT admitted boolean, OUT cancelled boolean, OUT retry_at timestamptz, OUT reason text, OUT retry_on text[],
    OUT holds_slots boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    e       attune.execution%ROWTYPE;
    a       attune.action%ROWTYPE;
    pk      jsonb;
    pol     jsonb;
    params  jsonb;
    -- The concurrency keys, in key order ("concurrency:action:…" sorts
    -- before "concurrency:pack:…"): the key, its limit and on_limit, what
    -- the limit is of, the rendered key. c is the one that refuses.
    ks      text[] := '{}';
    lims    integer[] := '{}';
    onls    text[] := '{}';
    whats   text[] := '{}';
    labels  text[] := '{}';
    c       integer;
    is_held boolean;
    waiters boolean;
    past    boolean;
    holders integer;
    older   integer;
    woken   boolean;
    keyname text;
    starts  timestamptz[];
    per     interval;
    cnt     integer;
    at      timestamptz;
    refused boolean := false;
    k       text;
    top     integer;
    taken   text[] := '{}';
    held    text[] := '{}';
    queued  boolean := false;
BEGIN
    admitted := true;
    cancelled := false;
    holds_slots := false;
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
    -- Like claim's, this commit need not wait for the WAL flush: WAL is
    -- replayed in order, so a claim that survives a crash has its
    -- admission too.
    PERFORM set_config('synchronous_commit', 'off', true);
    IF jsonb_typeof(a.policy -> 'rate_limit') = 'object' THEN
        SELECT * INTO e FROM attune.execution x WHERE x.id = execution_id FOR NO KEY UPDATE;
        IF e.status NOT IN ('requested', 'scheduled') THEN
            RETURN; -- cancelled meanwhile
        END IF;
    END IF;
    -- The parameters (secret ones included) only render key templates.
    IF a.policy -> 'concurrency' ? 'key' OR pk -> 'concurrency' ? 'key' OR a.policy -> 'rate_limit' ? 'key' THEN
        params := e.parameters || coalesce((SELECT s.parameters FROM attune.execution_secret s WHERE s.execution_id = e.id), '{}');
    END IF;

    -- Concurrency: the action's limit, then the pack's. Built without a
    -- query, into arrays that the loops below walk without one either.
    FOR scope IN 1 .. 2 LOOP
        pol := CASE scope WHEN 1 THEN a.policy ELSE pk END -> 'concurrency';
        CONTINUE WHEN jsonb_typeof(pol) IS DISTINCT FROM 'object';
        k := coalesce(pol ->> 'key', '');
        IF k <> '' THEN
            k := attune._policy_key(k, params, a.parameters);
        END IF;
        ks := ks || (CASE scope WHEN 1 THEN 'concurrency:action:' || a.ref ELSE 'concurrency:pack:' || a.pack_ref END
                     || ':' || k);
        lims := lims || (pol ->> 'limit')::integer;
        onls := onls || coalesce(pol ->> 'on_limit', 'queue');
        whats := whats || CASE scope WHEN 1 THEN a.ref ELSE 'pack ' || a.pack_ref END;
        labels := labels || k;
    END LOOP;

    -- The count decides first, and only ever refuses; an admission the
    -- count allows then takes a seat of each key, skipping the seats other
    -- admissions and releases are writing, so that two admissions never
    -- take the same last slot and never wait for each other. Seats taken
    -- for a key are given back if a later key has none. A key nobody waits
    -- for, and without holders past its limit (it was lowered), needs no
    -- count: its seats alone decide. The three facts that choose the path
    -- are read in one statement.
    FOR i IN 1 .. cardinality(ks) LOOP
        SELECT EXISTS (SELECT 1 FROM attune.policy_seat st WHERE st.execution_id = e.id AND st.key = ks[i]),
               EXISTS (SELECT 1 FROM attune.policy_waiter pw WHERE pw.key = ks[i]),
               EXISTS (SELECT 1 FROM attune.policy_seat st
                       WHERE st.key = ks[i] AND st.n > lims[i] AND st.execution_id IS NOT NULL)
        INTO is_held, waiters, past;
        IF is_held THEN
            held := held || ks[i];
            queued := queued OR waiters;
            CONTINUE; -- admitted before, its claim not yet made (a lost fetch)
        END IF;
        IF waiters THEN
            queued := true;
        ELSIF NOT past THEN
            CONTINUE;
        END IF;
        -- A seat whose release is in flight still counts: the release
        -- wakes the oldest waiter when it commits.
        SELECT count(*) INTO holders FROM (SELECT 1 FROM attune.policy_seat st
                                           WHERE st.key = ks[i] AND st.execution_id IS NOT NULL LIMIT lims[i]) x;
        -- Slots are also owed to the waiters already woken (on their
        -- way), and, to one not woken itself, to every older waiter:
        -- FIFO. A woken waiter is owed its slot, so it does not bounce
        -- behind older ones. Counted only up to the limit: a long
        -- queue must not make every admission slower.
        woken := EXISTS (SELECT 1 FROM attune.policy_waiter pw
                         WHERE pw.key = ks[i] AND pw.execution_id = e.id AND pw.woken);
        SELECT count(*) INTO older FROM (
            SELECT 1 FROM attune.policy_waiter pw
            WHERE pw.key = ks[i] AND pw.execution_id <> e.id
                AND (pw.woken OR (NOT woken AND pw.execution_id < e.id))
                AND (SELECT q.status FROM attune.execution q WHERE q.id = pw.execution_id) IN ('requested', 'scheduled')
            LIMIT greatest(lims[i] - holders, 0)) x;
        IF holders + older >= lims[i] THEN
            c := i;
            refused := true;
            EXIT;
        END IF;
    END LOOP;
    IF NOT refused THEN
        FOR i IN 1 .. cardinality(ks) LOOP
            CONTINUE WHEN ks[i] = ANY (held);
            -- Seats 1 .. top exist. Below the limit, more are made, 64 at a
            -- time, as the key's use reaches them: a limit of a million must
            -- not be a million rows.
            LOOP
                UPDATE attune.policy_seat st SET execution_id = e.id
                WHERE (st.key, st.n) = (SELECT x.key, x.n FROM attune.policy_seat x
                                        WHERE x.key = ks[i] AND x.n <= lims[i] AND x.execution_id IS NULL
                                        ORDER BY x.n LIMIT 1 FOR UPDATE SKIP LOCKED);
                EXIT WHEN FOUND;
                top := coalesce((SELECT max(st.n) FROM attune.policy_seat st WHERE st.key = ks[i]), 0);
                EXIT WHEN top >= lims[i]; -- every seat held or being written: refused
                INSERT INTO attune.policy_seat (key, n)
                SELECT ks[i], g FROM generate_series(top + 1, least(lims[i], top + 64)) g
                ON CONFLICT DO NOTHING;
            END LOOP;
            IF NOT FOUND THEN
                c := i;
                refused := true;
                EXIT;
            END IF;
            taken := taken || ks[i];
        END LOOP;
        IF refused THEN
            UPDATE attune.policy_seat st SET execution_id = NULL WHERE st.key = ANY (taken) AND st.execution_id = e.id;
        END IF;
    END IF;

    IF refused THEN
        reason := format('waiting: concurrency limit %s of %s%s reached', lims[c], whats[c],
            CASE WHEN labels[c] <> '' THEN ' (key ' || labels[c] || ')' ELSE '' END);
        IF onls[c] = 'cancel' THEN
            UPDATE attune.execution x SET status = 'cancelled', finished_at = now(), worker = policy_admit.worker,
                error = 'Cancelled: concurrency limit ' || lims[c] || ' of ' || whats[c]
                    || CASE WHEN labels[c] <> '' THEN ' (key ' || labels[c] || ')' ELSE '' END || ' reached (on_limit: cancel)'
            WHERE x.id = e.id;
            DELETE FROM attune.execution_secret s WHERE s.execution_id = e.id;
            admitted := false;
            cancelled := true;
            reason := NULL;
            RETURN;
        END IF;
        -- Its reserved start (if any) is not used now: give it back.
        IF e.started_at IS NULL AND EXISTS (SELECT 1 FROM attune.policy_start ps WHERE ps.execution_id = e.id) THEN
            PERFORM attune._policy_unreserve(e.id);
        END IF;
        -- Queued behind one key at a time; not woken until a slot frees.
        DELETE FROM attune.policy_waiter pw WHERE pw.execution_id = e.id AND pw.key <> ks[c];
        INSERT INTO attune.policy_waiter (key, execution_id, lim) VALUES (ks[c], e.id, lims[c])
        ON CONFLICT ON CONSTRAINT policy_waiter_pkey DO UPDATE SET woken = false, lim = EXCLUDED.lim;
        IF e.waiting_reason IS DISTINCT FROM reason THEN
            UPDATE attune.execution x SET waiting_reason = reason WHERE x.id = e.id;
        END IF;
        admitted := false;
        retry_at := now() + interval '5 minutes';
        -- A slot may be free and owed to an older waiter nobody woke (its
        -- release missed it): wake that one, unless the woken ones already
        -- take every free slot. (Two refusals at once wake two different
        -- waiters at most, and one woken without a slot is refused again.)
        IF holders + (SELECT count(*) FROM (SELECT 1 FROM attune.policy_waiter pw
                                            WHERE pw.key = ks[c] AND pw.woken LIMIT lims[c]) x) < lims[c] THEN
            PERFORM attune._policy_wake(ks[c], e.id);
        END IF;
        RETURN;
    END IF;

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
            UPDATE attune.policy_seat st SET execution_id = NULL WHERE st.key = ANY (taken) AND st.execution_id = e.id;
            -- A woken waiter was owed a slot it does not take now: the next
            -- waiter gets it.
            FOR k IN DELETE FROM attune.policy_waiter pw WHERE pw.execution_id = e.id RETURNING CASE WHEN pw.woken THEN pw.key END LOOP
                IF k IS NOT NULL THEN
                    PERFORM attune._policy_wake(k);
                END IF;
            END LOOP;
            RETURN;
        END IF;
    END IF;

    -- Admitted: a seat of every key is its own.
    holds_slots := cardinality(ks) > 0;
    -- Nobody waits for these keys (so neither does this execution): no
    -- waiter to wake, no waiter row to delete.
    IF NOT queued THEN
        RETURN;
    END IF;
    -- Slots still free beyond the waiters already woken: wake one more, so
    -- that a wake lost to a race costs one start, not the slot.
    FOR i IN 1 .. cardinality(ks) LOOP
        IF (SELECT count(*) FROM attune.policy_seat st WHERE st.key = ks[i] AND st.execution_id IS NOT NULL)
           + (SELECT count(*) FROM (SELECT 1 FROM attune.policy_waiter pw
                                    WHERE pw.key = ks[i] AND pw.woken AND pw.execution_id <> e.id LIMIT lims[i]) x) < lims[i] THEN
            PERFORM attune._policy_wake(ks[i]);
        END IF;
    END LOOP;
    DELETE FROM attune.policy_waiter pw WHERE pw.execution_id = e.id;
END $$;


-- prune_seats is 016's: a key is unused when none of its seats is held.
CREATE OR REPLACE FUNCTION attune.prune_seats(batch integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    k      text;
    total  integer;
    locked integer;
    n      integer := 0;
BEGIN
    PERFORM set_config('statement_timeout', '10s', true);
    FOR k IN SELECT DISTINCT st.key FROM attune.policy_seat st
             WHERE NOT EXISTS (SELECT 1 FROM attune.policy_seat h WHERE h.key = st.key AND h.execution_id IS NOT NULL)
                 AND NOT EXISTS (SELECT 1 FROM attune.policy_waiter w WHERE w.key = st.key)
             LIMIT batch LOOP
        SELECT count(*) INTO total FROM attune.policy_seat st WHERE st.key = k;
        SELECT count(*) INTO locked FROM (
            SELECT 1 FROM attune.policy_seat st WHERE st.key = k AND st.execution_id IS NULL
            FOR UPDATE SKIP LOCKED) x;
        IF locked = total THEN
            DELETE FROM attune.policy_seat st WHERE st.key = k;
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END $$;

-- claim_many is 017's: a release frees the attempt's seats, and a claim
-- holds slots when admission says it holds seats.
CREATE OR REPLACE FUNCTION attune.claim_many(execution_ids bigint[], attempts integer[], job_ids bigint[], worker text,
    released_ids bigint[], released_attempts integer[])
RETURNS TABLE (
    job_id bigint, admitted boolean, cancelled boolean, retry_at timestamptz, reason text, retry_on text[],
    holds_slots boolean,
    max_attempts integer, action_ref text, pack_ref text, runner_type text, path text,
    parameters jsonb, secret_parameters jsonb, declarations jsonb, result_schema jsonb,
    timeout_seconds integer, action_timeout_seconds integer, parameter_delivery text,
    parameter_format text, output_format text, rule_ref text, trigger_ref text,
    action_updated timestamptz, secrets jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    x_id   bigint;
    x_job  bigint;
    x_must boolean;
    adm    record;
    x_on   text[];
    x_held boolean;
BEGIN
    -- Like claim's, this commit need not wait for the WAL flush (a lost
    -- release is made again by settle).
    PERFORM set_config('synchronous_commit', 'off', true);
    FOR i IN 1 .. coalesce(cardinality(claim_many.released_ids), 0) LOOP
        -- The attempt's row is locked first, as settle, cancel and the
        -- reaper lock it before they free its seats; one of them holding
        -- it is skipped, not waited for: that writer frees the seats.
        -- Without the row's lock, a settle's free that ran while this one
        -- committed would lock the seat just freed until the settle
        -- committed, and the waiter woken by this release, skipping the
        -- locked seat, would find none free. The deferred trigger
        -- policy_seat_freed wakes the next waiter of each key at commit.
        CONTINUE WHEN NOT EXISTS (
            SELECT 1 FROM attune.execution e
            WHERE e.id = claim_many.released_ids[i] AND e.status IN ('running', 'canceling')
                AND e.worker = claim_many.worker AND e.attempt = claim_many.released_attempts[i]
            FOR SHARE SKIP LOCKED);
        UPDATE attune.policy_seat st SET execution_id = NULL WHERE st.execution_id = claim_many.released_ids[i];
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(claim_many.execution_ids), 0) LOOP
        x_id := claim_many.execution_ids[i];
        x_job := claim_many.job_ids[i];
        x_on := NULL;
        x_held := false;
        -- What needs policy_admit: see Admission in 017_claim_many.sql.
        x_must := EXISTS (
            SELECT 1 FROM attune.execution e JOIN attune.action a ON a.ref = e.action_ref
                LEFT JOIN attune.pack p ON p.ref = a.pack_ref
            WHERE e.id = x_id AND NOT (a.policy - 'retention' - 'retry' = '{}'
                AND NOT coalesce(a.policy -> 'retry' ? 'on', false)
                AND coalesce(p.policy, '{}') - 'retention' = '{}'));
        IF x_must THEN
            SELECT * INTO adm FROM attune.policy_admit(x_id, claim_many.worker);
            IF NOT adm.admitted THEN
                RETURN QUERY SELECT x_job, false, adm.cancelled, adm.retry_at, adm.reason, NULL::text[], false,
                    NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text,
                    NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::integer, NULL::integer, NULL::text,
                    NULL::text, NULL::text, NULL::text, NULL::text, NULL::timestamptz, NULL::jsonb;
                CONTINUE;
            END IF;
            x_on := adm.retry_on;
            x_held := adm.holds_slots;
        END IF;
        RETURN QUERY SELECT x_job, true, false, NULL::timestamptz, NULL::text, x_on, x_held, c.*
            FROM attune.claim(x_id, claim_many.worker, claim_many.attempts[i], x_job) c;
    END LOOP;
END $$;
