// Package process starts, feeds, captures, signals and reaps child
// processes: the one place where attune turns a program into a process, for
// actions (Run) and sensors (Start) alike. It knows nothing of the
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
// behind on this host.
package process
