-- Policy fixes, on top of 011_policy.sql:
--   * a dead worker's attempt is retried by the reaper under the action's
--     retry policy (retry.on, delay, backoff, max_delay), as the worker's
--     own retry is: reap_worker asks policy_retries and policy_next_retry;
--   * a rate-limit reservation that no start used (its execution was
--     cancelled, or refused by a concurrency limit at its time) is given
--     back: it counts in no window, and the executions reserved after it
--     move up (_policy_unreserve);
--   * an event goes with the last of the executions it led to, whatever
--     retention pruned them (prune_executions);
--   * admissions cost less and never wait for each other: a key's slots
--     are rows (policy_seat) taken with SKIP LOCKED instead of a count
--     under the key's advisory lock, which every admission of a busy key
--     queued for until the holder committed (4.6 ms a call with two
--     replicas); the counts run only for keys someone waits for, and look
--     each waiter's status up by primary key (a generic plan scanned every
--     queued execution: 0.65 ms a count with 1,000 queued); a waiter whose
--     job is still in a worker's hands is told it was woken (NOTIFY
--     attune_policy_woken), so the worker can start it without handing the
--     job back to River and fetching it again;
--   * the seats of keys nobody uses any more are pruned (prune_seats).
--
-- Like 009_settle.sql, this file touches River's tables (attune.river_job);
-- it was written against:
--
-- River schema version: 8

-- policy_retries reports whether the action's retry policy retries an
-- attempt that ended with outcome (failed, timeout, abandoned): yes when it
-- has no retry.on, or when retry.on lists the outcome. The worker reads the
-- same list from policy_admit (retry_on) for the attempts it settles.
CREATE FUNCTION attune.policy_retries(execution_id bigint, outcome text)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT NOT (a.policy -> 'retry' ? 'on') OR (a.policy -> 'retry' -> 'on') ? outcome
                     FROM attune.execution e JOIN attune.action a ON a.ref = e.action_ref
                     WHERE e.id = policy_retries.execution_id), true)
$$;

-- _replace_job is 009's, with the time the new job may run: a retry waits
-- for its policy's delay (River's scheduler makes the job available then),
-- a job handed back runs now.
DROP FUNCTION attune._replace_job(bigint, integer);
CREATE FUNCTION attune._replace_job(execution_id bigint, next_attempt integer, run_at timestamptz DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    old attune.river_job%ROWTYPE;
    new_id bigint;
    at timestamptz := greatest(coalesce(run_at, now()), now());
BEGIN
    SELECT j.* INTO old FROM attune.river_job j JOIN attune.execution e ON e.job_id = j.id
    WHERE e.id = _replace_job.execution_id FOR UPDATE OF j;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE attune.river_job j SET state = 'completed', finalized_at = now()
    WHERE j.id = old.id AND j.finalized_at IS NULL;
    INSERT INTO attune.river_job (args, kind, max_attempts, priority, queue, scheduled_at, state, attempt, metadata, tags)
    VALUES (old.args, old.kind, old.max_attempts, old.priority, old.queue, at,
            (CASE WHEN at > now() THEN 'scheduled' ELSE 'available' END)::attune.river_job_state,
            greatest(next_attempt - 1, 0), '{}', '{}')
    RETURNING id INTO new_id;
    UPDATE attune.execution e SET job_id = new_id WHERE e.id = _replace_job.execution_id;
    IF at <= now() THEN
        PERFORM attune.wake_workers(ARRAY[old.queue]);
    END IF;
END $$;

-- running → requested (retried) | abandoned, canceling → cancelled
--
-- reap_worker is 009's, but an attempt a dead worker left running is
-- retried only as the action's retry policy says: it ended abandoned, so
-- only when retry.on is unset or lists abandoned, and after the policy's
-- delay (policy_next_retry, the function the worker's own retries use;
-- without a delay the retry runs at once: the dead worker's silence has
-- already been waited for).
CREATE OR REPLACE FUNCTION attune.reap_worker(worker text, river_id text, stale_after interval)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n integer := 0;
    why text := 'Worker ' || reap_worker.worker || ' died while the execution ran';
BEGIN
    IF stale_after IS NOT NULL AND EXISTS (
            SELECT 1 FROM attune.worker w
            WHERE w.name = reap_worker.worker AND w.heartbeat_at > now() - stale_after) THEN
        RETURN 0;
    END IF;
    FOR r IN
        SELECT e.id, e.job_id, e.status, e.attempt, e.attempt < e.max_attempts AS attempts_left
        FROM attune.execution e
        WHERE e.worker = reap_worker.worker AND e.status IN ('running', 'canceling')
        ORDER BY e.id
        FOR UPDATE
    LOOP
        n := n + 1;
        IF r.status = 'running' AND r.attempts_left AND attune.policy_retries(r.id, 'abandoned') THEN
            UPDATE attune.execution e SET status = 'requested', finished_at = NULL, error = why
            WHERE e.id = r.id;
            PERFORM attune._replace_job(r.id, r.attempt + 1, attune.policy_next_retry(r.id, r.attempt));
        ELSE
            UPDATE attune.execution e SET
                status = CASE WHEN r.status = 'canceling' THEN 'cancelled' ELSE 'abandoned' END,
                finished_at = now(),
                error = why || CASE WHEN r.status = 'running' AND r.attempts_left
                                    THEN ' (not retried: the action''s retry.on does not list abandoned)' ELSE '' END
            WHERE e.id = r.id;
            DELETE FROM attune.execution_secret s WHERE s.execution_id = r.id;
            UPDATE attune.river_job j SET state = 'completed', finalized_at = now(), scheduled_at = now()
            WHERE j.id = r.job_id AND j.state = 'running';
        END IF;
    END LOOP;

    -- Jobs River had handed to it whose executions never started: back to
    -- the queue on a new job, the attempt not counted. One whose attempt
    -- ran and was settled to retry (the row says that attempt) before River
    -- marked the job retryable: the same, the attempt counted, at the time
    -- the retry policy gives it.
    FOR r IN
        SELECT e.id, j.attempt, e.attempt >= j.attempt AS ran
        FROM attune.execution e JOIN attune.river_job j ON j.id = e.job_id
        WHERE e.status IN ('requested', 'scheduled') AND j.state = 'running'
            AND j.attempted_by[array_upper(j.attempted_by, 1)] = reap_worker.river_id
        FOR UPDATE OF e
    LOOP
        PERFORM attune._replace_job(r.id, CASE WHEN r.ran THEN r.attempt + 1 ELSE r.attempt END,
            CASE WHEN r.ran THEN attune.policy_next_retry(r.id, r.attempt) END);
    END LOOP;
    RETURN n;
END $$;

-- _policy_unreserve gives back the rate-limit reservations of an execution
-- that no start used: it left the queue without starting (cancelled, its
-- action gone, its job lost), or a concurrency limit refused it at its
-- reserved time. A reservation is a start promised, and a start that never
-- happened must not hold one of a window's count. The executions reserved
-- after it on the same key each move up to the time of the one before, so
-- the queue keeps its order and the times taken are those of the queue
-- without the one given back (a subset of a schedule that kept the limit
-- keeps it). Only reservations still in the future move: one due already
-- may be starting right now, and a start recorded earlier than it happened
-- would let the next window overfill.
--
-- It takes the key's lock: callers hold the execution's row lock first
-- (policy_admit takes it before any policy lock for a rate-limited action).
-- Each moved execution's job is locked before its reservation changes, as
-- _policy_wake does, so a snooze in flight either lands first (and is
-- moved here) or after (and _policy_snoozed reads the new time).
CREATE FUNCTION attune._policy_unreserve(eid bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r     record;
    f     record;
    prev  timestamptz;
    jid   bigint;
    state text;
BEGIN
    FOR r IN SELECT ps.key, ps.start_at FROM attune.policy_start ps WHERE ps.execution_id = eid LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(r.key, 0));
        DELETE FROM attune.policy_start ps WHERE ps.key = r.key AND ps.start_at = r.start_at AND ps.execution_id = eid;
        IF r.start_at <= now() THEN
            CONTINUE;
        END IF;
        prev := r.start_at;
        FOR f IN SELECT ps.execution_id, ps.start_at FROM attune.policy_start ps
                 WHERE ps.key = r.key AND ps.start_at > r.start_at
                 ORDER BY ps.start_at, ps.execution_id LOOP
            SELECT j.id, j.state::text INTO jid, state
            FROM attune.river_job j JOIN attune.execution e ON e.job_id = j.id
            WHERE e.id = f.execution_id FOR UPDATE OF j;
            UPDATE attune.policy_start ps SET start_at = prev
            WHERE ps.key = r.key AND ps.start_at = f.start_at AND ps.execution_id = f.execution_id;
            IF state IN ('scheduled', 'available') THEN
                UPDATE attune.river_job j SET scheduled_at = least(j.scheduled_at, prev) WHERE j.id = jid;
            END IF;
            -- The reason names the time; a row being written right now (its
            -- admission, a cancel) is skipped: its writer sets it anew.
            UPDATE attune.execution x
            SET waiting_reason = regexp_replace(x.waiting_reason, 'starts at .*$',
                'starts at ' || to_char(prev AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
            WHERE x.id IN (SELECT y.id FROM attune.execution y WHERE y.id = f.execution_id
                               AND y.waiting_reason LIKE 'waiting: rate limit %' FOR UPDATE SKIP LOCKED);
            prev := f.start_at;
        END LOOP;
    END LOOP;
END $$;

-- _policy_release is 011's, and also gives back the rate-limit reservation
-- of an execution that ends without ever having started.
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
    DELETE FROM attune.policy_slot s WHERE s.execution_id = NEW.id;
    RETURN NEW;
END $$;

-- _policy_wake is 011's, and tells a waiter whose job a worker still holds
-- that it was woken (NOTIFY attune_policy_woken, the execution id): a
-- worker waiting for its slot in process admits it again at once. Each
-- waiter's job and status are looked up by primary key.
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

-- _policy_snoozed is 011's, and also moves a rate-limited snooze up to its
-- reservation when _policy_unreserve moved it while the snooze was on the
-- way (the worker snoozes to the time its admission read). The status of
-- the older waiters is looked up by primary key.
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

-- policy_seat holds a concurrency key's slots as rows n = 1 .. its limit,
-- execution_id the holder (NULL: free). An admission takes the first free
-- seat it can lock, skipping those being taken or freed right now: two
-- admissions never take the same seat, and never wait for each other.
-- Seats are made as admissions need them, up to the limit, 64 at a time;
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

-- policy_admit is 011's (same answers), with these changes:
--   * no key lock: the count (holders, woken and older waiters) only ever
--     refuses, and an admission it allows takes a seat of each key with
--     SKIP LOCKED, so two admissions never take the same last slot and
--     never wait for each other; a key nobody waits for (and without
--     holders past a lowered limit) needs no count at all;
--   * its keys are built without a query, and the waiters' statuses are
--     looked up by primary key;
--   * a rate-limited execution's row is locked before any policy lock, so
--     that a cancel (which holds the row and then gives back the
--     reservation under the key's lock) and an admission never wait for
--     each other in opposite orders;
--   * a reservation that a concurrency limit keeps from being used at its
--     time is given back (_policy_unreserve); the execution reserves again
--     once it has its slot;
--   * a woken waiter that a rate limit then holds back gives its slot to
--     the next waiter;
--   * an admitted execution's waiting_reason is left for claim to clear
--     (_policy_release does, when the row goes running): one write less.
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
    top     integer;
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
            IF NOT FOUND THEN
                -- Seats 1 .. top exist. Below the limit, more are made, 64
                -- at a time, as the key's use reaches them: a limit of a
                -- million must not be a million rows.
                top := coalesce((SELECT max(st.n) FROM attune.policy_seat st WHERE st.key = full_key.k), 0);
                IF top < full_key.lim THEN
                    INSERT INTO attune.policy_seat (key, n)
                    SELECT full_key.k, g FROM generate_series(top + 1, least(full_key.lim, top + 64)) g
                    ON CONFLICT DO NOTHING;
                    SELECT st.n INTO seat FROM attune.policy_seat st
                    WHERE st.key = full_key.k AND st.n <= full_key.lim AND st.execution_id IS NULL
                    ORDER BY st.n LIMIT 1 FOR UPDATE SKIP LOCKED;
                END IF;
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

-- Retention: an event goes with the last of the executions it led to.
--
-- prune_executions deletes one batch of prune_candidates, as 011's, and
-- with them the events whose every execution is now gone: an event is
-- history of the executions it led to, kept as long as any of them, so an
-- action's shorter retention: takes its events along. Such an event is at
-- least as old as that retention (it came before the executions finished).
-- Events that led to no execution go by ATTUNE_RETENTION (prune_events).
DROP FUNCTION attune.prune_executions(interval, integer);
CREATE FUNCTION attune.prune_executions(default_retention interval, batch integer,
    OUT executions integer, OUT events integer)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('statement_timeout', '10s', true);
    WITH gone AS (
        DELETE FROM attune.execution e
        WHERE e.id IN (
            SELECT x.id FROM attune.execution x
            WHERE x.id IN (SELECT c.id FROM attune.prune_candidates(default_retention, batch) c)
                AND x.finished_at IS NOT NULL -- not retried meanwhile
                AND x.status IN ('completed', 'failed', 'timeout', 'cancelled', 'abandoned')
            FOR UPDATE SKIP LOCKED)
        RETURNING e.id, e.event_id
    ), orphaned AS (
        DELETE FROM attune.event ev
        WHERE ev.id IN (
            SELECT x.id FROM attune.event x
            WHERE x.id IN (SELECT g.event_id FROM gone g WHERE g.event_id IS NOT NULL)
                AND NOT EXISTS (SELECT 1 FROM attune.execution o
                                WHERE o.event_id = x.id AND o.id NOT IN (SELECT g.id FROM gone g))
            FOR UPDATE SKIP LOCKED)
        RETURNING ev.id
    )
    SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM orphaned) INTO executions, events;
END $$;

-- prune_events deletes one batch of events older than ATTUNE_RETENTION
-- that no execution names (none ever did, or their executions went
-- another way), as 011's; with dry_run it counts them, and also the events
-- prune_executions would take along with their last executions.
CREATE OR REPLACE FUNCTION attune.prune_events(default_retention interval, batch integer, dry_run boolean)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    PERFORM set_config('statement_timeout', '10s', true);
    IF dry_run THEN
        WITH cand AS (
            SELECT c.id FROM attune.prune_candidates(default_retention, 2147483647) c
        )
        SELECT (SELECT count(*) FROM attune.event ev
                WHERE default_retention > interval '0' AND ev.created_at < now() - default_retention
                    AND NOT EXISTS (SELECT 1 FROM attune.execution e WHERE e.event_id = ev.id))
             + (SELECT count(*) FROM attune.event ev
                WHERE ev.id IN (SELECT e.event_id FROM attune.execution e WHERE e.id IN (SELECT cand.id FROM cand))
                    AND NOT EXISTS (SELECT 1 FROM attune.execution e
                                    WHERE e.event_id = ev.id AND e.id NOT IN (SELECT cand.id FROM cand)))
        INTO n;
        RETURN n;
    END IF;
    IF default_retention <= interval '0' THEN
        RETURN 0;
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
