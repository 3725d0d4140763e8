//go:build linux

package process

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Containment: every descendant of a child dies with it, those that left
// its process group (setsid, double fork, an emptied environment) too.
//
// Two mechanisms, chosen once per worker process (setupContainment):
//
//   - cgroup: each child starts in a cgroup v2 of its own, created under
//     the worker's own cgroup (clone3's CLONE_INTO_CGROUP, so not even the
//     first instruction of the child runs outside it). A process cannot
//     leave its cgroup without write access to the hierarchy, so when the
//     child ends, cgroup.kill reaches every descendant, however it hid.
//     Chosen where the worker may create cgroups below its own (root, or a
//     delegated subtree such as systemd's Delegate=yes) and the kernel has
//     cgroup.kill (5.14).
//   - subreaper: elsewhere. The worker is the child subreaper of its
//     descendants (PR_SET_CHILD_SUBREAPER), so an orphaned descendant is
//     re-parented to the worker instead of init, where it can be found
//     (it is our child) and its pid cannot be reused until we reap it, so
//     killing it cannot hit a stranger. What it cannot tell is whose
//     descendant an adopted process was, since that is what re-parenting
//     forgets: it goes by what the process still carries, its process
//     group (the child's), its TMPDIR (the child's work directory, which
//     every descendant inherits unless it rewrites its environment), and,
//     for one with an empty environment, the time it was born: it dies
//     when any child alive at its birth ends. A process that sets a new
//     session, a new group and an environment of its own escapes this.
//
// The worker is a subreaper in both modes, so that what is killed is
// reaped by us rather than left to an init that may not reap (a container
// whose pid 1 is the worker itself gets every orphan anyway).
//
// Reaping what we adopted: os/exec waits for the pids it started, by pid
// (or pidfd), and a wait4(-1) of ours would steal their statuses. So we
// never wait for "any child": we list our children (/proc/self/task/*/
// children, every thread's, since a re-parented orphan goes to any live
// thread of the subreaper), leave out the leaders Start registered, and
// reap with waitid(P_PID) only zombies we know are ours: by their cgroup
// (a zombie's /proc/PID/cgroup still reads), or in subreaper mode a zombie
// we killed or one in a session other than ours (no child of the worker's
// own starts a session: leaders only set a group). A leader between fork
// and registration is covered by forkLock: Start holds it shared across
// both, the reaper exclusively while it lists and reaps.
var containment struct {
	once sync.Once
	// mode is "cgroup" or "subreaper" ("process-group" if even prctl failed).
	mode string
	// root is the worker's own cgroup directory; base our children's
	// parent cgroup, root/attune-<pid>.<start>.
	root, base string
	// rel is root as /proc/PID/cgroup names it.
	rel string
	// subreaper is set once we are our descendants' subreaper.
	subreaper bool
	// sid is the worker's session.
	sid int
	// self identifies this process for the names of what it leaves on
	// disk: <pid>.<start time in clock ticks>, unique on the host across
	// pid reuse.
	self string

	forkLock sync.RWMutex
	mu       sync.Mutex
	leaders  map[int]bool // registered, not yet reaped by os/exec
	killed   map[procID]bool
}

// procID is a process, not just a pid: its pid and start time.
type procID struct {
	pid   int
	start uint64
}

// setupContainment chooses the mechanism, once per process, and removes
// what dead workers on this host left: their cgroups (killing what is
// still in them) and their work directories.
func setupContainment() {
	c := &containment
	c.once.Do(func() {
		c.leaders = map[int]bool{}
		c.killed = map[procID]bool{}
		c.sid, _ = unix.Getsid(0)
		st, _ := readStat(os.Getpid())
		c.self = strconv.Itoa(os.Getpid()) + "." + strconv.FormatUint(st.start, 10)
		c.mode = "process-group"
		if unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == nil {
			c.mode, c.subreaper = "subreaper", true
		}
		if root, rel, err := ownCgroup(); err == nil {
			base := filepath.Join(root, "attune-"+c.self)
			if err := probeCgroup(base); err == nil {
				c.root, c.rel, c.base, c.mode = root, rel, base, "cgroup"
			}
		}
		sweepDead(os.TempDir())
	})
}

// Containment says how this worker contains its children's descendants:
// "cgroup", "subreaper" or "process-group" (see the package doc). The
// first call decides.
func Containment() string {
	setupContainment()
	return containment.mode
}

// ownCgroup finds this process's cgroup v2 directory.
func ownCgroup() (dir, rel string, err error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			rel = p
		}
	}
	if rel == "" {
		return "", "", errors.New("no cgroup v2")
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		// mount ID, parent, major:minor, root, mount point, options, ... - fstype source super
		pre, post, ok := strings.Cut(line, " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		f := strings.Fields(pre)
		if len(f) < 5 || f[3] != "/" {
			continue // a bind of a subtree: rel is not relative to it
		}
		return filepath.Join(f[4], rel), rel, nil
	}
	return "", "", errors.New("cgroup2 not mounted")
}

// probeCgroup creates base and checks that a cgroup below it can be made
// and killed.
func probeCgroup(base string) error {
	if err := os.Mkdir(base, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	probe := filepath.Join(base, "probe")
	if err := os.Mkdir(probe, 0o755); err != nil {
		_ = os.Remove(base)
		return err
	}
	defer os.Remove(probe)
	if _, err := os.Stat(filepath.Join(probe, "cgroup.kill")); err != nil {
		_ = os.Remove(probe)
		_ = os.Remove(base)
		return err
	}
	return nil
}

// jail is one child's containment: its cgroup, in cgroup mode.
type jail struct {
	dir string   // the cgroup directory; "" without
	fd  *os.File // open until the child started
	// start is the leader's start time, for the subreaper's attribution.
	start uint64
	// off: no containment beyond the process group (tests of the drain).
	off bool
}

// newJail prepares the containment of a child whose work directory is
// workDir; noCgroup has it contained as in subreaper mode (tests).
func newJail(workDir string, off, noCgroup bool) (*jail, error) {
	setupContainment()
	j := &jail{off: off}
	if off || noCgroup || containment.base == "" {
		return j, nil
	}
	j.dir = filepath.Join(containment.base, filepath.Base(workDir))
	if err := os.Mkdir(j.dir, 0o755); err != nil {
		return nil, fmt.Errorf("error creating the child's cgroup: %w", err)
	}
	fd, err := os.Open(j.dir)
	if err != nil {
		_ = os.Remove(j.dir)
		return nil, fmt.Errorf("error opening the child's cgroup: %w", err)
	}
	j.fd = fd
	return j, nil
}

// apply puts the child in the jail from its first instruction.
func (j *jail) apply(attr *syscall.SysProcAttr) {
	if j.fd != nil {
		attr.UseCgroupFD, attr.CgroupFD = true, int(j.fd.Fd())
	}
}

// lockFork is held, shared, from before a child is forked until it is
// registered; the reaper of adopted processes takes it exclusively.
func lockFork()   { containment.forkLock.RLock() }
func unlockFork() { containment.forkLock.RUnlock() }

// started records the leader, once forked.
func (j *jail) started(pid int) {
	if j.fd != nil {
		_ = j.fd.Close()
		j.fd = nil
	}
	containment.mu.Lock()
	containment.leaders[pid] = true
	containment.mu.Unlock()
	if st, err := readStat(pid); err == nil {
		j.start = st.start
	}
}

// failed undoes newJail when the child did not start.
func (j *jail) failed() {
	if j.fd != nil {
		_ = j.fd.Close()
		j.fd = nil
	}
	if j.dir != "" {
		_ = os.Remove(j.dir)
	}
}

// killAll kills every descendant of the child led by pid, which has
// exited and is still a zombie, after its group was killed; reaped is
// called once os/exec reaped the leader.
func (j *jail) killAll(pid, pgid int, tmpdir string) {
	if j.off {
		return
	}
	if j.dir != "" {
		killCgroup(j.dir)
		return
	}
	if !containment.subreaper {
		return
	}
	// Killing a process makes its children ours, to be found in the next
	// round; a tree is gone in as many rounds as it is deep.
	for round := 0; round < 50; round++ {
		n := 0
		containment.forkLock.Lock()
		forEachAdopted(func(id procID, st stat) {
			if st.state == 'Z' {
				return
			}
			ours := st.pgrp == pgid || (tmpdir != "" && environHas(id.pid, "TMPDIR="+tmpdir))
			if !ours && id.start >= j.start {
				env, err := os.ReadFile("/proc/" + strconv.Itoa(id.pid) + "/environ")
				ours = err == nil && len(env) == 0
			}
			if ours {
				containment.mu.Lock()
				containment.killed[id] = true
				containment.mu.Unlock()
				_ = syscall.Kill(id.pid, syscall.SIGKILL) // our child: its pid is not reusable
				n++
			}
		})
		containment.forkLock.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(2 * time.Millisecond)
		reapAdopted()
	}
}

// released runs after os/exec reaped the leader: it forgets it, removes
// the cgroup and reaps what was killed.
func (j *jail) released(pid int) {
	containment.mu.Lock()
	delete(containment.leaders, pid)
	containment.mu.Unlock()
	reapAdopted()
	if j.dir != "" {
		removeCgroup(j.dir)
	}
}

// killCgroup kills everything in dir and waits, briefly, for it to be
// empty; zombies no longer count as members.
func killCgroup(dir string) {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		ev, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if err != nil || bytes.Contains(ev, []byte("populated 0")) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// removeCgroup removes an emptied cgroup (and any the child made below it,
// which a root child may).
func removeCgroup(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeCgroup(filepath.Join(dir, e.Name()))
		}
	}
	_ = os.Remove(dir)
}

// reapAdopted reaps the zombies among our children that are ours to reap
// (see the comment on containment).
func reapAdopted() {
	containment.forkLock.Lock()
	defer containment.forkLock.Unlock()
	forEachAdopted(func(id procID, st stat) {
		if st.state != 'Z' {
			return
		}
		containment.mu.Lock()
		ours := containment.killed[id] || st.session != containment.sid
		delete(containment.killed, id)
		containment.mu.Unlock()
		if !ours && containment.root != "" {
			ours = inAttuneCgroup(id.pid)
		}
		if ours {
			var info unix.Siginfo
			_ = unix.Waitid(unix.P_PID, id.pid, &info, unix.WEXITED|unix.WNOHANG, nil)
		}
	})
}

// inAttuneCgroup reports whether pid is in a cgroup some worker made
// below our own cgroup.
func inAttuneCgroup(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return strings.HasPrefix(p, strings.TrimSuffix(containment.rel, "/")+"/attune-")
		}
	}
	return false
}

// forEachAdopted calls fn for each child of ours that no Start registered
// as a leader. Children hang off the thread that forked them (adopted ones
// off any live thread), so every thread's children file is read: listed
// once, not globbed, which would read each thread's directory too, twice
// per process run.
func forEachAdopted(fn func(procID, stat)) {
	d, err := os.Open("/proc/self/task")
	if err != nil {
		return
	}
	tids, _ := d.Readdirnames(-1)
	_ = d.Close()
	for _, tid := range tids {
		b, err := os.ReadFile("/proc/self/task/" + tid + "/children")
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			containment.mu.Lock()
			leader := containment.leaders[pid]
			containment.mu.Unlock()
			if leader {
				continue
			}
			st, err := readStat(pid)
			if err != nil {
				continue
			}
			fn(procID{pid, st.start}, st)
		}
	}
}

// stat is what we read of /proc/PID/stat.
type stat struct {
	state         byte
	pgrp, session int
	start         uint64 // clock ticks after boot
}

func readStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, err
	}
	// The command name (field 2) may hold spaces and parentheses; fields
	// 3 on follow its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, errors.New("malformed stat")
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 20 {
		return stat{}, errors.New("malformed stat")
	}
	var st stat
	st.state = f[0][0]
	st.pgrp, _ = strconv.Atoi(string(f[2]))
	st.session, _ = strconv.Atoi(string(f[3]))
	st.start, _ = strconv.ParseUint(string(f[19]), 10, 64)
	return st, nil
}

func environHas(pid int, kv string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	for _, e := range bytes.Split(b, []byte{0}) {
		if string(e) == kv {
			return true
		}
	}
	return false
}

// ownerTag goes into the name of every work directory, so that the next
// worker on the host can tell one whose worker died (kill -9 runs no
// cleanup) from a live one's.
func ownerTag() string {
	setupContainment()
	return "o" + containment.self + "-"
}

// ownerRE finds the owner in a work directory's or a cgroup's name.
var ownerRE = regexp.MustCompile(`(?:-o|^attune-)(\d+)\.(\d+)(?:-|$)`)

// ownerDead reports whether name carries the tag of a process that no
// longer runs (its pid gone, or taken by a process started later).
func ownerDead(name string) bool {
	m := ownerRE.FindStringSubmatch(name)
	if m == nil {
		return false
	}
	pid, _ := strconv.Atoi(m[1])
	start, _ := strconv.ParseUint(m[2], 10, 64)
	st, err := readStat(pid)
	return err != nil || st.start != start
}

// SweepDead removes what dead workers on this host left: what is still
// alive in their cgroups, and their work directories. Every worker does
// it as it starts (the first Containment or Start); a worker reaping a
// dead one on its host does it again.
func SweepDead() {
	setupContainment()
	sweepDead(os.TempDir())
}

// sweepDead removes what dead workers on this host left: it kills what is
// left in their cgroups and removes them, and removes their work
// directories (os.TempDir()/attune-*).
func sweepDead(tmp string) {
	c := &containment
	if c.root != "" {
		bases, _ := filepath.Glob(filepath.Join(c.root, "attune-*"))
		for _, b := range bases {
			if b == c.base || !ownerDead(filepath.Base(b)) {
				continue
			}
			children, _ := os.ReadDir(b)
			for _, ch := range children {
				if ch.IsDir() {
					killCgroup(filepath.Join(b, ch.Name()))
				}
			}
			removeCgroup(b)
		}
		reapAdopted()
	}
	dirs, _ := filepath.Glob(filepath.Join(tmp, "attune-*"))
	for _, d := range dirs {
		if ownerDead(filepath.Base(d)) {
			_ = RemoveWorkDir(d)
		}
	}
}
