-- (no status change) record_output stores a running attempt's output so far.
-- A NULL stream now keeps its stored value, TOAST pointer and all: the
-- worker sends only streams whose stored text changed, so a capped stream
-- flooding for minutes costs no more WAL after its last change. Only while
-- that attempt of that worker runs, as before.
CREATE OR REPLACE FUNCTION attune.record_output(execution_id bigint, worker text, attempt integer, stdout text, stderr text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE attune.execution e
    SET stdout = coalesce(record_output.stdout, e.stdout), stderr = coalesce(record_output.stderr, e.stderr)
    WHERE e.id = record_output.execution_id AND e.worker = record_output.worker
        AND e.attempt = record_output.attempt AND e.status IN ('running', 'canceling');
END $$;
