// Package process starts, feeds, captures, signals and reaps child
// processes: the one place where attune turns a program into a process, for
// actions (Run), sensors (Start) and the tools attune runs itself (Output)
// alike; only the test helpers in processtest start children of their own. It knows nothing of the
// database; what a child is for is its caller's business.
//
// Every child gets:
//   - no shell: Spec.Path is exec'd with Spec.Args, and a #! script or a
//     binary of the wrong platform is explained in a user-facing error
//     (CheckBinary, and the translation of execve's errno);
//   - an environment built from nothing: Cmd.Env is always set, to Spec.Env
//     plus TMPDIR, so nothing of the worker's own environment leaks;
//   - a private work directory, its working directory and TMPDIR, removed
//     when it is reaped even if it left read-only directories;
//   - a process group of its own, so one signal reaches it and every
//     descendant that stays in the group; on a timeout or cancel the group
//     gets SIGTERM (and SIGCONT), then SIGKILL after the grace, and whenever
//     the child ends what is left of its group is SIGKILLed;
//   - containment beyond the group (contain_linux.go): a cgroup v2 of its
//     own where the host allows it, killed whole when the child ends, else
//     the worker as subreaper killing the descendants that come back to it,
//     so one that left the group (setsid, a double fork, an emptied
//     environment) dies too; Containment says which;
//   - its entry point (Spec.EntryPoint) resolved again and confined to its
//     folder right before the fork (confine.go), and optionally another
//     user (Spec.Credential);
//   - pipes of our own on stdin, stdout and stderr, so the child's exit, not
//     pipe EOF, ends the wait (a grandchild holding a pipe cannot hang it),
//     output captured up to a bound by writers that never return an error
//     to the child (it never sees EPIPE, never blocks on a full pipe) and
//     sanitised to valid UTF-8 without NULs, which PostgreSQL text needs.
//
// The exit code is the child's, or 128+signal when a signal killed it, as
// shells report it.
//
// KillOrphans finds and kills what the children of a dead worker left
// behind on this host, by their environment; SweepDead (run by every
// worker as it starts) kills what is left in a dead worker's cgroups and
// removes its work directories, which carry its pid and start time in
// their names.
//
// # Platforms
//
// Linux is the platform attune runs on, and the one everything above holds
// for. The Linux-only parts live in *_linux.go files; other Unix systems
// (macOS, the BSDs) build with portable fallbacks in *_other.go, and get
// less:
//   - No parent-death signal (Pdeathsig): a child outlives a worker that is
//     killed with SIGKILL, and so does its group. A worker that stops in
//     order still stops its children. (FreeBSD has one, through procctl,
//     which Go's SysProcAttr.Pdeathsig could set; it is untested there, so
//     not used.)
//   - No waitid(WNOWAIT): learning that the child exited means reaping it,
//     before what is left of its group is SIGKILLed. The group id cannot be
//     reused while any member lives, so that kill is still safe in every
//     case that matters; only an empty group's id, recycled by a new group
//     leader in that instant, could be hit. On Linux the child stays a
//     zombie until the group is dead, so its pid, the group id, is reserved.
//   - No per-string execve limit (MAX_ARG_STRLEN) to check in advance:
//     MaxArgLen is unbounded and an environment too large in total is
//     reported when execve refuses it (E2BIG), as on Linux.
//   - KillOrphans, which reads /proc, kills nothing, and there is no
//     containment beyond the process group: no cgroups, no subreaper
//     (Containment reports "process-group").
//   - CheckBinary takes Mach-O as native on macOS and ELF as foreign there.
//
// Windows is not supported: process groups and signals are POSIX.
package process
