// Package packs loads attune packs from disk, validates them and registers
// them in the database.
//
// A pack is a directory holding a pack.yaml and, beside it, the folders
// actions/, sensors/, triggers/ and rules/, each with one YAML file per item
// (SPEC §5). [Load] reads one pack and [LoadAll] every pack under a base
// directory; both return what loaded cleanly together with every [Problem]
// they met, each naming the file, the line when the YAML parser gives one,
// and the directory of its pack. A bad file is skipped and the rest still
// loads, so `attune pack check` can report every mistake at once. Loading
// touches no database, takes time linear in the size of the files (a file
// over [MaxFileBytes] or a mapping over [MaxMappingKeys] is refused first),
// and [LoadContext] and [LoadAllContext] stop at the next file once their
// context is done.
//
// [Register] writes what loaded into the attune schema inside the caller's
// transaction, a savepoint per pack, so one bad pack does not spoil the
// others; [RegisterPool] does the same with a transaction per pack for a
// caller that has none. Either orders the packs itself (a rule may name
// another pack's action) and reports on each pack in a [RegisterResult].
// [SetRuleEnabled] turns a rule on or off and tells the running sensor
// supervisors ([RuleChannel]); registering the pack again keeps that state
// unless the rule's YAML changed its own enabled.
//
// The package also holds the small pieces of pack semantics the rest of
// attune shares: parameter declarations turned into JSON Schema and checked
// ([Params.Validate]), the environment variable name of a parameter
// ([EnvName]), rule conditions ([Condition.Match]) and the `{{ event.payload.x
// }}` templates of a rule's action_params ([RenderParams]).
package packs
