-- A freed seat is handed to the key's oldest waiter when the freeing
-- transaction commits, instead of the waiter being marked woken to come
-- and take one. Measured under a binding limit (twice the limit's worth of
-- process slots), every limited execution was refused once, then woken,
-- then admitted: the woken claim counted holders and waiters again and
-- took a seat, and now and then lost the race for it and was refused
-- again (2.25 admissions per execution).
--   * _policy_wake takes a free seat for the oldest waiter, deletes its
--     waiter row and tells its worker (or makes its River job available).
--     A waiter is woken only with a seat in hand: its claim finds the seat
--     held and skips the count.
--   * So nothing is owed to woken waiters any more: the count is holders
--     and older waiters. policy_waiter.woken stays false (016's
--     _policy_release still reads it, and finds nothing woken).
--   * A refusal, by another key or by the rate limit, gives back every
--     seat the execution holds, a handed one too: a waiter never holds a
--     seat of one key while queued behind another.
--   * A snoozed job whose execution holds a seat is made available at
--     once, as a woken one was.
--   * policy_give_back frees the seats of a queued execution whose policy
--     cannot be read: the worker calls it before it snoozes the job.
--   * A waiter's limit follows its action's or pack's when that changes,
--     since the hand-over counts by it.
--
-- Like 018_policy_seats.sql, this file was written against:
--
-- River schema version: 8

-- Waiters marked woken before this migration are plain waiters again; a
-- freed seat or their own claim admits them.
UPDATE attune.policy_waiter SET woken = false WHERE woken;
DROP INDEX attune.policy_waiter_woken_idx;

-- _policy_take_seat takes a free seat of key k (limit lim) for execution
-- eid, skipping the seats other admissions and releases are writing, so
-- that two never take the same seat and never wait for each other. Seats
-- 1 .. top exist; below the limit, more are made, 64 at a time, as the
-- key's use reaches them: a limit of a million must not be a million rows.
-- False when every seat is held or being written.
CREATE FUNCTION attune._policy_take_seat(k text, lim integer, eid bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    top integer;
BEGIN
    LOOP
        UPDATE attune.policy_seat st SET execution_id = eid
        WHERE (st.key, st.n) = (SELECT x.key, x.n FROM attune.policy_seat x
                                WHERE x.key = k AND x.n <= lim AND x.execution_id IS NULL
                                ORDER BY x.n LIMIT 1 FOR UPDATE SKIP LOCKED);
        IF FOUND THEN
            RETURN true;
        END IF;
        top := coalesce((SELECT max(st.n) FROM attune.policy_seat st WHERE st.key = k), 0);
        IF top >= lim THEN
            RETURN false;
        END IF;
        INSERT INTO attune.policy_seat (key, n)
        SELECT k, g FROM generate_series(top + 1, least(lim, top + 64)) g
        ON CONFLICT DO NOTHING;
    END LOOP;
END $$;

-- _policy_wake is 018's, and hands the oldest waiter (older than before,
-- when given) a free seat of key k, or does nothing when there is none.
-- Its waiter row goes: it is a holder now. Its job, still in a worker's
-- hands, is told by NOTIFY attune_policy_woken; snoozed, it is made
-- available.
CREATE OR REPLACE FUNCTION attune._policy_wake(k text, before bigint DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    w     record;
    state text;
BEGIN
    SELECT pw.execution_id, pw.lim, (SELECT e.job_id FROM attune.execution e WHERE e.id = pw.execution_id) AS job_id INTO w
    FROM attune.policy_waiter pw
    WHERE pw.key = k
        AND (SELECT e.status FROM attune.execution e WHERE e.id = pw.execution_id) IN ('requested', 'scheduled')
        AND (before IS NULL OR pw.execution_id < before)
    ORDER BY pw.execution_id LIMIT 1
    -- Two releases at once wake two waiters, not the same one twice.
    FOR UPDATE OF pw SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Holders past a lowered limit still count: a free seat below it is
    -- not one to hand over while they hold theirs.
    IF (SELECT count(*) FROM (SELECT 1 FROM attune.policy_seat st
                              WHERE st.key = k AND st.execution_id IS NOT NULL LIMIT w.lim) x) >= w.lim
       OR NOT attune._policy_take_seat(k, w.lim, w.execution_id) THEN
        RETURN;
    END IF;
    DELETE FROM attune.policy_waiter pw WHERE pw.key = k AND pw.execution_id = w.execution_id;
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
END $$;

-- A waiter's lim is the limit its key's seats are handed over under
-- (_policy_wake, _policy_snoozed); it was the limit when it was refused.
-- When an action's or a pack's concurrency limit changes (pack register,
-- or by hand), its waiters' rows follow at once: else a lowered limit
-- would be exceeded by hand-overs at the old one, and a raised one left
-- unused until each waiter's own claim. The next waiter of each key is
-- handed a seat the new limit frees. A limit that is not a plain number
-- is left to policy_admit, which reports it.
CREATE FUNCTION attune._policy_limit_changed()
RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    prefix text := 'concurrency:' || TG_ARGV[0] || ':' || NEW.ref || ':';
    l      text := NEW.policy -> 'concurrency' ->> 'limit';
    k      text;
BEGIN
    IF l !~ '^[0-9]{1,9}$' THEN
        RETURN NULL;
    END IF;
    FOR k IN UPDATE attune.policy_waiter pw SET lim = l::integer
             WHERE left(pw.key, length(prefix)) = prefix AND pw.lim <> l::integer
             RETURNING pw.key LOOP
        PERFORM attune._policy_wake(k);
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER action_policy_limit AFTER UPDATE OF policy ON attune.action
FOR EACH ROW WHEN (OLD.policy -> 'concurrency' IS DISTINCT FROM NEW.policy -> 'concurrency')
EXECUTE FUNCTION attune._policy_limit_changed('action');
CREATE TRIGGER pack_policy_limit AFTER UPDATE OF policy ON attune.pack
FOR EACH ROW WHEN (OLD.policy -> 'concurrency' IS DISTINCT FROM NEW.policy -> 'concurrency')
EXECUTE FUNCTION attune._policy_limit_changed('pack');

-- _policy_freed is 018's: any waiter of the key may be handed the seat.
CREATE OR REPLACE FUNCTION attune._policy_freed()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM attune.policy_waiter pw WHERE pw.key = OLD.key) THEN
        PERFORM attune._policy_wake(OLD.key);
    END IF;
    RETURN NULL;
END $$;

-- _policy_snoozed is 018's: a job whose execution was handed a seat is
-- made available at once (its wake reached the worker too late, or not
-- at all), and so is the head of a queue with a seat free that no waiter
-- was handed (its release missed it).
CREATE OR REPLACE FUNCTION attune._policy_snoozed()
RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    eid bigint := (NEW.args ->> 'execution_id')::bigint;
    at  timestamptz;
BEGIN
    IF EXISTS (SELECT 1 FROM attune.policy_seat st WHERE st.execution_id = eid)
       OR EXISTS (SELECT 1 FROM attune.policy_waiter pw
                  WHERE pw.execution_id = eid
                      AND (SELECT count(*) FROM (SELECT 1 FROM attune.policy_seat st
                                                 WHERE st.key = pw.key AND st.execution_id IS NOT NULL LIMIT pw.lim) x) < pw.lim
                      AND NOT EXISTS (SELECT 1 FROM attune.policy_waiter o
                                      WHERE o.key = pw.key AND o.execution_id < pw.execution_id
                                          AND (SELECT q.status FROM attune.execution q WHERE q.id = o.execution_id)
                                              IN ('requested', 'scheduled'))) THEN
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

-- policy_admit is 018's, with the same answers but for the hand-over
-- (see the top of this file): the count leaves out woken waiters, a
-- refusal gives back every seat, and seats are taken by
-- _policy_take_seat.
CREATE OR REPLACE FUNCTION attune.policy_admit(execution_id bigint, worker text,
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
    keyname text;
    starts  timestamptz[];
    per     interval;
    cnt     integer;
    at      timestamptz;
    refused boolean := false;
    k       text;
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
        -- hands it to the oldest waiter when it commits.
        SELECT count(*) INTO holders FROM (SELECT 1 FROM attune.policy_seat st
                                           WHERE st.key = ks[i] AND st.execution_id IS NOT NULL LIMIT lims[i]) x;
        -- Slots are also owed to every older waiter: FIFO. Counted only
        -- up to the limit: a long queue must not make every admission
        -- slower.
        SELECT count(*) INTO older FROM (
            SELECT 1 FROM attune.policy_waiter pw
            WHERE pw.key = ks[i] AND pw.execution_id < e.id
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
            IF NOT attune._policy_take_seat(ks[i], lims[i], e.id) THEN
                c := i;
                refused := true;
                holders := lims[i]; -- every seat held or being written
                EXIT;
            END IF;
        END LOOP;
    END IF;
    -- Refused, it holds no seat of any key: those taken above, and those
    -- handed to it, go back, to the next waiters. Not only the keys looked
    -- at (held): the count stops at the first key that refuses, and a
    -- later key's seat may have been handed to it.
    IF refused THEN
        UPDATE attune.policy_seat st SET execution_id = NULL WHERE st.key = ANY (ks) AND st.execution_id = e.id;
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
        -- A slot may be free and owed to an older waiter nobody was handed
        -- it (its release missed it): hand it over.
        IF holders < lims[c] THEN
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
            -- Its seats go to the next waiters, as the seats freed commit.
            IF cardinality(ks) > 0 THEN
                UPDATE attune.policy_seat st SET execution_id = NULL WHERE st.key = ANY (ks) AND st.execution_id = e.id;
            END IF;
            DELETE FROM attune.policy_waiter pw WHERE pw.execution_id = e.id;
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
    DELETE FROM attune.policy_waiter pw WHERE pw.execution_id = e.id;
    -- A seat still free: hand it to the next waiter, so that a hand-over
    -- lost to a race costs one start, not the slot. Counted first: a key
    -- with every seat held (the common case under a queue) is left alone,
    -- its oldest waiter's row not locked, so a release at the same instant
    -- does not skip it for the next one.
    FOR i IN 1 .. cardinality(ks) LOOP
        IF (SELECT count(*) FROM (SELECT 1 FROM attune.policy_seat st
                                  WHERE st.key = ks[i] AND st.execution_id IS NOT NULL LIMIT lims[i]) x) < lims[i] THEN
            PERFORM attune._policy_wake(ks[i]);
        END IF;
    END LOOP;
END $$;



-- policy_give_back frees the seats of a queued execution that cannot be
-- admitted now because its policy cannot be read (the worker snoozes it
-- for a minute): a seat handed to it before would keep the key's next
-- waiter out, and make its snoozed job available again at once
-- (_policy_snoozed), over and over. An execution whose row is being
-- written (claimed, cancelled) right now keeps them: that writer decides.
-- It returns how many seats it freed.
CREATE FUNCTION attune.policy_give_back(execution_id bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    PERFORM 1 FROM attune.execution e
    WHERE e.id = policy_give_back.execution_id AND e.status IN ('requested', 'scheduled')
    FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    UPDATE attune.policy_seat st SET execution_id = NULL WHERE st.execution_id = policy_give_back.execution_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
