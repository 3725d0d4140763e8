-- Concurrency limits at the cost of an unlimited action: admission inside
-- the claim, and a slot given back when the process ends.
--
-- Measured with 017 (TestReplicaThroughputWithLimit, two replicas of 5
-- slots and a limit of 10, which never binds), a limited action ran at
-- about half the rate of an unlimited one, for two reasons:
--   * three round trips before a start instead of one: claim_many flagged
--     the row, the worker called policy_admit, then claim_many again; and
--     each policy_admit waited for the key's lock behind the other Work
--     calls' (4.6 ms a call);
--   * a slot was freed by the settle's transaction, which commits after
--     the process slot has gone to the next job: that job's admission
--     found the key full, queued, and waited for the settle to commit and
--     wake it, then asked again (1.9 admissions per execution).
-- Now:
--   * claim_many admits a row that needs it itself, with policy_admit
--     (same answers), in the same statement as its claim: one round trip;
--   * claim_many first gives back the slots of the executions whose
--     process has ended (released_ids, released_attempts): the worker
--     sends them in its next batch, which the next job's claim may share.
--     A slot stands for a running process; its result is still written by
--     settle, which frees what is left as before (a release lost to a
--     crash, an execution reaped). Only the worker's own running attempt
--     is released, so that a late release never frees the slot of a later
--     attempt admitted elsewhere;
--   * a key's slots are rows (policy_seat) that an admission takes with
--     SKIP LOCKED, instead of a count under the key's advisory lock, which
--     every admission of the key queued for (the lock was held to commit,
--     1.6 ms a call once the two fixes above had removed the rest);
--   * cheaper plans for the waiter counts (below policy_admit's header).
--
-- River's tables are read only through attune.claim.

-- policy_seat holds a concurrency key's slots as rows n = 1 .. its limit,
-- execution_id the holder (NULL: free). An admission takes the first free
-- seat it can lock, skipping those being taken or freed right now: two
-- admissions never take the same seat, and never wait for each other.
-- Seats are made at a key's first admission (and when its limit grows);
-- seats past a lowered limit are not taken again. policy_slot stays the
-- list of holders that counts, waits and wakes read; a slot's delete frees
-- its seat (_policy_seat_free), whoever deletes it. The fill factor leaves
-- room for an update in place: a seat changes hands at every admission.
CREATE TABLE attune.policy_seat (
    key          text NOT NULL,
    n            integer NOT NULL,
    execution_id bigint,
    PRIMARY KEY (key, n)
) WITH (fillfactor = 50);

-- The slots held now get seats 1 .. their number.
INSERT INTO attune.policy_seat (key, n, execution_id)
SELECT s.key, row_number() OVER (PARTITION BY s.key ORDER BY s.execution_id), s.execution_id FROM attune.policy_slot s;

CREATE FUNCTION attune._policy_seat_free()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE attune.policy_seat st SET execution_id = NULL WHERE st.key = OLD.key AND st.execution_id = OLD.execution_id;
    RETURN NULL;
END $$;

CREATE TRIGGER policy_slot_seat_free AFTER DELETE ON attune.policy_slot
FOR EACH ROW EXECUTE FUNCTION attune._policy_seat_free();

-- requested | scheduled | running → running
--
-- claim_many claims execution_ids[i] for attempts[i] of River job
-- job_ids[i] with attune.claim (009_settle.sql, 014_claim_retry.sql), as
-- 017's did, and returns one row per execution that may run or waits:
--   admitted   true: claimed, the other columns filled (retry_on from the
--              action's retry policy, when it has one admission reads);
--              false: not claimed, and cancelled, retry_at and reason are
--              policy_admit's answer
--   holds_slots  claimed holding concurrency slots: the worker gives them
--              back as its process ends
-- An execution that may not run returns no row, as with claim.
CREATE FUNCTION attune.claim_many(execution_ids bigint[], attempts integer[], job_ids bigint[], worker text,
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
        -- The deferred trigger policy_slot_freed (011_policy.sql) wakes the
        -- next waiter of each key at commit. A slot being deleted already
        -- (its settle or a cancel in flight, which lock the execution row
        -- first) is skipped, not waited for: two orders of locking the same
        -- rows could deadlock, and that writer frees it anyway.
        DELETE FROM attune.policy_slot s
        WHERE (s.key, s.execution_id) IN (
            SELECT x.key, x.execution_id FROM attune.policy_slot x
            WHERE x.execution_id = claim_many.released_ids[i]
                AND EXISTS (SELECT 1 FROM attune.execution e
                            WHERE e.id = claim_many.released_ids[i] AND e.status IN ('running', 'canceling')
                                AND e.worker = claim_many.worker AND e.attempt = claim_many.released_attempts[i])
            FOR UPDATE OF x SKIP LOCKED);
    END LOOP;
    FOR i IN 1 .. coalesce(cardinality(claim_many.execution_ids), 0) LOOP
        x_id := claim_many.execution_ids[i];
        x_job := claim_many.job_ids[i];
        x_on := NULL;
        x_held := false;
        -- 017's test: only retention and a retry block without "on" leave
        -- policy_admit nothing to do but admit.
        x_must := EXISTS (
            SELECT 1 FROM attune.execution e JOIN attune.action a ON a.ref = e.action_ref
                LEFT JOIN attune.pack p ON p.ref = a.pack_ref
            WHERE e.id = x_id AND NOT (a.policy - 'retention' - 'retry' = '{}'
                AND NOT coalesce(a.policy -> 'retry' ? 'on', false)
                AND coalesce(p.policy, '{}') - 'retention' = '{}'));
        IF x_must THEN
            -- An error of policy_admit's fails the statement: the worker
            -- tells it by its context (worker/claim.go) and looks again
            -- later. (A subtransaction to catch it here cost more than the
            -- rest of the admission.)
            SELECT * INTO adm FROM attune.policy_admit(x_id, claim_many.worker);
            IF NOT adm.admitted THEN
                RETURN QUERY SELECT x_job, false, adm.cancelled, adm.retry_at, adm.reason, NULL::text[], false,
                    NULL::integer, NULL::text, NULL::text, NULL::text, NULL::text,
                    NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::jsonb, NULL::integer, NULL::integer, NULL::text,
                    NULL::text, NULL::text, NULL::text, NULL::text, NULL::timestamptz, NULL::jsonb;
                CONTINUE;
            END IF;
            x_on := adm.retry_on;
            x_held := EXISTS (SELECT 1 FROM attune.policy_slot s WHERE s.execution_id = x_id);
        END IF;
        RETURN QUERY SELECT x_job, true, false, NULL::timestamptz, NULL::text, x_on, x_held, c.*
            FROM attune.claim(x_id, claim_many.worker, claim_many.attempts[i], x_job) c;
    END LOOP;
END $$;

DROP FUNCTION attune.claim_many(bigint[], integer[], bigint[], boolean[], text);


-- policy_admit, _policy_wake and _policy_snoozed are 016's, with the same
-- answers and cheaper plans. Their generic plans (kept per connection,
-- made while the tables were small) joined the waiters of a key to
-- attune.execution by scanning every queued execution for the status
-- test: 0.65 ms per admission with 1,000 queued, twice per admission, and
-- more the longer the queue. The status of each waiter is now looked up
-- by primary key, from the waiters of the key. A key's holders are counted
-- only up to its limit, which is all the tests need.

CREATE OR REPLACE FUNCTION attune.policy_admit(execution_id bigint, worker text,
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
    keyname text;
    starts  timestamptz[];
    per     interval;
    cnt     integer;
    at      timestamptz;
    full_key record;
    refused boolean := false;
    k       text;
    seat    integer;
    taken   text[] := '{}';
    held    text[] := '{}';
    queued  boolean := false;
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
    params := e.parameters || coalesce((SELECT s.parameters FROM attune.execution_secret s WHERE s.execution_id = e.id), '{}');

    -- Concurrency: the action's limit, then the pack's, in key order
    -- ("concurrency:action:…" sorts before "concurrency:pack:…"). Built
    -- without a query: one statement over both scopes was a third of an
    -- admission's cost.
    conc := '[]';
    IF jsonb_typeof(a.policy -> 'concurrency') = 'object' THEN
        k := attune._policy_key(a.policy -> 'concurrency' ->> 'key', params, a.parameters);
        conc := conc || jsonb_build_object('k', 'concurrency:action:' || a.ref || ':' || k,
            'lim', (a.policy -> 'concurrency' ->> 'limit')::integer,
            'on_limit', coalesce(a.policy -> 'concurrency' ->> 'on_limit', 'queue'), 'what', a.ref, 'label', k);
    END IF;
    IF jsonb_typeof(pk -> 'concurrency') = 'object' THEN
        k := attune._policy_key(pk -> 'concurrency' ->> 'key', params, a.parameters);
        conc := conc || jsonb_build_object('k', 'concurrency:pack:' || a.pack_ref || ':' || k,
            'lim', (pk -> 'concurrency' ->> 'limit')::integer,
            'on_limit', coalesce(pk -> 'concurrency' ->> 'on_limit', 'queue'), 'what', 'pack ' || a.pack_ref, 'label', k);
    END IF;

    -- The count decides first, and only ever refuses; an admission the
    -- count allows then takes a seat of each key (policy_seat), skipping
    -- the seats other admissions and releases are writing, so that two
    -- admissions never take the same last slot and never wait for each
    -- other. Seats taken for a key are given back if a later key has none.
    -- A key nobody waits for, and without holders past its limit (it was
    -- lowered), needs no count: its seats alone decide.
    FOR full_key IN SELECT * FROM jsonb_to_recordset(conc) AS r(k text, lim integer, on_limit text, what text, label text) LOOP
        IF EXISTS (SELECT 1 FROM attune.policy_slot s WHERE s.key = full_key.k AND s.execution_id = e.id) THEN
            held := held || full_key.k;
            queued := queued OR EXISTS (SELECT 1 FROM attune.policy_waiter pw WHERE pw.key = full_key.k);
            CONTINUE; -- admitted before, its claim not yet made (a lost fetch)
        END IF;
        IF EXISTS (SELECT 1 FROM attune.policy_waiter pw WHERE pw.key = full_key.k) THEN
            queued := true;
        ELSIF NOT EXISTS (SELECT 1 FROM attune.policy_seat st
                           WHERE st.key = full_key.k AND st.n > full_key.lim AND st.execution_id IS NOT NULL) THEN
            CONTINUE;
        END IF;
        -- A slot whose release is in flight still counts: the release
        -- wakes the oldest waiter when it commits.
        SELECT count(*) INTO holders FROM (SELECT 1 FROM attune.policy_slot s WHERE s.key = full_key.k LIMIT full_key.lim) x;
        -- Slots are also owed to the waiters already woken (on their
        -- way), and, to one not woken itself, to every older waiter:
        -- FIFO. A woken waiter is owed its slot, so it does not bounce
        -- behind older ones. Counted only up to the limit: a long
        -- queue must not make every admission slower.
        woken := EXISTS (SELECT 1 FROM attune.policy_waiter pw
                         WHERE pw.key = full_key.k AND pw.execution_id = e.id AND pw.woken);
        SELECT count(*) INTO older FROM (
            SELECT 1 FROM attune.policy_waiter pw
            WHERE pw.key = full_key.k AND pw.execution_id <> e.id
                AND (pw.woken OR (NOT woken AND pw.execution_id < e.id))
                AND (SELECT q.status FROM attune.execution q WHERE q.id = pw.execution_id) IN ('requested', 'scheduled')
            LIMIT greatest(full_key.lim - holders, 0)) x;
        IF holders + older >= full_key.lim THEN
            c := full_key;
            refused := true;
            EXIT;
        END IF;
    END LOOP;
    IF NOT refused THEN
        FOR full_key IN SELECT * FROM jsonb_to_recordset(conc) AS r(k text, lim integer, on_limit text, what text, label text) LOOP
            CONTINUE WHEN full_key.k = ANY (held);
            SELECT st.n INTO seat FROM attune.policy_seat st
            WHERE st.key = full_key.k AND st.n <= full_key.lim AND st.execution_id IS NULL
            ORDER BY st.n LIMIT 1 FOR UPDATE SKIP LOCKED;
            IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM attune.policy_seat st WHERE st.key = full_key.k AND st.n = full_key.lim) THEN
                -- The key's first admission, or its limit raised.
                INSERT INTO attune.policy_seat (key, n) SELECT full_key.k, g FROM generate_series(1, full_key.lim) g
                ON CONFLICT DO NOTHING;
                SELECT st.n INTO seat FROM attune.policy_seat st
                WHERE st.key = full_key.k AND st.n <= full_key.lim AND st.execution_id IS NULL
                ORDER BY st.n LIMIT 1 FOR UPDATE SKIP LOCKED;
            END IF;
            IF NOT FOUND THEN
                c := full_key;
                refused := true;
                EXIT;
            END IF;
            UPDATE attune.policy_seat st SET execution_id = e.id WHERE st.key = full_key.k AND st.n = seat;
            taken := taken || full_key.k;
        END LOOP;
        IF refused THEN
            UPDATE attune.policy_seat st SET execution_id = NULL WHERE st.key = ANY (taken) AND st.execution_id = e.id;
        END IF;
    END IF;

    IF refused THEN
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
        -- Its reserved start (if any) is not used now: give it back.
        IF e.started_at IS NULL AND EXISTS (SELECT 1 FROM attune.policy_start ps WHERE ps.execution_id = e.id) THEN
            PERFORM attune._policy_unreserve(e.id);
        END IF;
        -- Queued behind one key at a time; not woken until a slot frees.
        DELETE FROM attune.policy_waiter pw WHERE pw.execution_id = e.id AND pw.key <> c.k;
        INSERT INTO attune.policy_waiter (key, execution_id, lim) VALUES (c.k, e.id, c.lim)
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
                                                          WHERE pw.key = c.k AND pw.woken LIMIT c.lim) x) < c.lim THEN
            PERFORM attune._policy_wake(c.k, e.id);
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

    INSERT INTO attune.policy_slot (key, execution_id)
    SELECT r.k, e.id FROM jsonb_to_recordset(conc) AS r(k text) ON CONFLICT DO NOTHING;
    -- Nobody waits for these keys (so neither does this execution): no
    -- waiter to wake, no waiter row to delete.
    IF NOT queued THEN
        RETURN;
    END IF;
    -- Slots still free beyond the waiters already woken: wake one more, so
    -- that a wake lost to a race costs one start, not the slot.
    FOR c IN SELECT * FROM jsonb_to_recordset(conc) AS r(k text, lim integer, on_limit text, what text, label text) LOOP
        IF (SELECT count(*) FROM attune.policy_slot s WHERE s.key = c.k)
           + (SELECT count(*) FROM (SELECT 1 FROM attune.policy_waiter pw
                                    WHERE pw.key = c.k AND pw.woken AND pw.execution_id <> e.id LIMIT c.lim) x) < c.lim THEN
            PERFORM attune._policy_wake(c.k);
        END IF;
    END LOOP;
    DELETE FROM attune.policy_waiter pw WHERE pw.execution_id = e.id;
END $$;

CREATE OR REPLACE FUNCTION attune._policy_wake(k text, before bigint DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    w     record;
    state text;
BEGIN
    SELECT pw.execution_id, (SELECT e.job_id FROM attune.execution e WHERE e.id = pw.execution_id) AS job_id INTO w
    FROM attune.policy_waiter pw
    WHERE pw.key = k AND NOT pw.woken
        AND (SELECT e.status FROM attune.execution e WHERE e.id = pw.execution_id) IN ('requested', 'scheduled')
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
    ELSIF state = 'running' THEN
        PERFORM pg_notify('attune_policy_woken', w.execution_id::text);
    END IF;
    -- Woken: on its way to the slot, so the next release wakes the next
    -- waiter rather than this one again.
    UPDATE attune.policy_waiter pw SET woken = true WHERE pw.key = k AND pw.execution_id = w.execution_id;
END $$;

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
                        OR ((SELECT count(*) FROM attune.policy_slot s WHERE s.key = pw.key)
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

-- prune_seats deletes the seats of up to batch concurrency keys that
-- nobody holds or waits for (a keyed limit makes seats for every rendered
-- key ever admitted), a key's seats all or none: those a seat of is being
-- taken right now (locked) are left for the next round. It returns the
-- number of keys whose seats went. An admission of the key while its
-- seats go finds none free and waits; its snooze (_policy_snoozed) finds
-- the key free and makes it available again, and the next admission makes
-- the seats anew.
CREATE FUNCTION attune.prune_seats(batch integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    k      text;
    total  integer;
    locked integer;
    n      integer := 0;
BEGIN
    PERFORM set_config('statement_timeout', '10s', true);
    FOR k IN SELECT DISTINCT st.key FROM attune.policy_seat st
             WHERE NOT EXISTS (SELECT 1 FROM attune.policy_slot s WHERE s.key = st.key)
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
