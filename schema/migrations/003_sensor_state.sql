-- Which replica runs each sensor, for attune sensor list. The advisory lock
-- held by that replica is the truth; this row is what people read.
CREATE TABLE attune.sensor_state (
    sensor_ref text PRIMARY KEY,
    worker     text NOT NULL,
    status     text NOT NULL,
    pid        integer,
    restarts   integer NOT NULL DEFAULT 0,
    last_error text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
