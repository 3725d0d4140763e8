// Package packs loads and validates attune packs from disk.
//
// A pack is a directory holding a pack.yaml and, beside it, the folders
// actions/, sensors/, triggers/ and rules/, each with one YAML file per item
// (SPEC §5). [Load] reads one pack and [LoadAll] every pack under a base
// directory; both return what loaded cleanly together with every [Problem]
// they met, each naming the file and, when the YAML parser gives one, the
// line. A bad file is skipped and the rest still loads, so `attune pack
// check` can report every mistake at once.
//
// The package touches no database: registering what it loads is the caller's
// business. It also holds the small pieces of pack semantics the rest of
// attune shares: parameter declarations turned into JSON Schema and checked
// ([Params.Validate]), the environment variable name of a parameter
// ([EnvName]), rule conditions ([Condition.Match]) and the `{{ event.payload.x
// }}` templates of a rule's action_params ([RenderParams]).
package packs
