-- What each event led to, rule by rule, so `attune event show` can say which
-- rules fired, which were skipped and why (a skipped rule was otherwise a
-- WARN line in one replica's log): a list of
-- {"rule": ref, "execution_id": N} | {"rule": ref, "skipped": reason} |
-- {"rule": ref, "not_matched": true}.
ALTER TABLE attune.event ADD COLUMN rules jsonb NOT NULL DEFAULT '[]';
