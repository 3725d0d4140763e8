package worker

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// resolveRunAs turns ATTUNE_RUN_AS (user[:group], names or numeric ids)
// into the credential children start with. Only root may start a child as
// someone else, so a worker that is not root refuses it rather than
// failing every execution.
func resolveRunAs(spec string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("only a worker running as root can run children as another user; unset it, or start attune as root")
	}
	name, group, hasGroup := strings.Cut(spec, ":")
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return nil, fmt.Errorf("no user %q on this host", name)
		}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q has a uid that is not a number", name)
	}
	gidText := u.Gid
	if hasGroup {
		g, err := user.LookupGroup(group)
		if err != nil {
			if g, err = user.LookupGroupId(group); err != nil {
				return nil, fmt.Errorf("no group %q on this host", group)
			}
		}
		gidText = g.Gid
	}
	gid, err := strconv.ParseUint(gidText, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("group %q has a gid that is not a number", gidText)
	}
	if uid == 0 {
		return nil, errors.New("names root; name the unprivileged user children should run as")
	}
	// Groups set to the one group: the child keeps none of root's.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{uint32(gid)}}, nil
}
