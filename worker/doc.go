// Package worker runs executions: it leases executions through River, runs
// each as a child process through package process (no shell, a clean
// environment, a private work directory, its own process group, bounded and
// sanitised output, a timeout enforced with SIGTERM then SIGKILL to the
// whole group) and writes the results back to the execution row in the same
// transaction that completes the River job. It also supervises the sensors,
// whose processes are started the same way.
package worker
