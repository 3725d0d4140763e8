//go:build unix && !linux

package process

import "syscall"

// Containment says how this worker contains its children's descendants:
// here only by their process group (no cgroups, no subreaper).
func Containment() string { return "process-group" }

type jail struct{}

func newJail(workDir string, off, noCgroup bool) (*jail, error) { return &jail{}, nil }
func (j *jail) apply(attr *syscall.SysProcAttr)                 {}
func lockFork()                                                 {}
func unlockFork()                                               {}
func (j *jail) started(pid int)                                 {}
func (j *jail) failed()                                         {}
func (j *jail) killAll(pid, pgid int, tmpdir string)            {}
func (j *jail) released(pid int)                                {}
func ownerTag() string                                          { return "" }

// SweepDead does nothing here: work directories of a dead worker are
// removed when its executions are reaped.
func SweepDead() {}
