//go:build !linux

package worker

// killChildrenOf kills nothing where /proc is not Linux's: a frozen
// worker's children run on until it resumes and fences itself.
func killChildrenOf(ppid int, execs map[string]string) int { return 0 }
