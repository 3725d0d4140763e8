package worker

import "github.com/attune-system/attune/worker/process"

// killOrphans kills what a dead worker's executions left on this host (see
// process.KillOrphans). A process belongs to one of execs (execution id →
// action ref) when its environment names both, as every execution's child
// and its descendants inherit them. It returns how many process groups it
// killed.
func killOrphans(execs map[string]string) int {
	// What a worker killed outright left in its cgroups (setsid and
	// double-forked descendants included) and its sensors' work
	// directories, which no execution names.
	process.SweepDead()
	if len(execs) == 0 {
		return 0 // nothing to look for: spare the walk of /proc
	}
	return process.KillOrphans(func(getenv func(string) string) bool {
		id := getenv("ATTUNE_EXEC_ID")
		return id != "" && execs[id] == getenv("ATTUNE_ACTION")
	})
}
