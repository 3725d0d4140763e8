-- yaml_enabled is the `enabled` a rule's YAML gave when its pack was last
-- registered, NULL while its file is gone from disk. Registration compares
-- it with the YAML it loads: unchanged, the rule keeps the state `attune rule
-- enable/disable` gave it; changed, the YAML wins. Existing rows take their
-- current state, so the first registration after this migration behaves as
-- before it: the YAML wins where it disagrees.
ALTER TABLE attune.rule ADD COLUMN yaml_enabled boolean;
UPDATE attune.rule SET yaml_enabled = enabled;
