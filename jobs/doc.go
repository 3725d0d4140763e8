// Package jobs is attune's executions as data: the River job that carries an
// execution, enqueueing from Go inside the caller's transaction, reading,
// listing and cancelling executions, and the encrypted secret store.
//
// Enqueueing validates in the database (attune.enqueue_prepare), once for
// every path, so SQL, Go and CLI callers get the same checks and rows.
package jobs
