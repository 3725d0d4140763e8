package jobs

import "github.com/riverqueue/river"

// Kind is the River job kind of an execution; attune.enqueue writes it too.
const Kind = "attune_execution"

// ExecutionArgs is the River job of one execution. It carries only the id:
// the execution row is the truth, and parameters with secrets stay out of
// River's table.
type ExecutionArgs struct {
	ExecutionID int64 `json:"execution_id"`
}

// Kind implements river.JobArgs.
func (ExecutionArgs) Kind() string { return Kind }

// InsertOpts implements river.JobArgsWithInsertOpts. It sets nothing: the
// queue (one per runtime, so a worker takes only executions whose runtime it
// advertises), priority and max attempts come from the action and the
// options, and Enqueue passes them with each job.
func (ExecutionArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{} }
