package process

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Sentinels for the start failures a caller may branch on. The errors
// Start, Run and CheckBinary return wrap them (errors.Is works) but read as the
// user-facing text SPEC §6 prescribes.
var (
	// ErrBinaryNotFound: the program does not exist (or is a dangling symlink).
	ErrBinaryNotFound = errors.New("binary not found")
	// ErrNotExecutable: the program exists but we may not execute it (no x
	// bit, a directory, a noexec mount).
	ErrNotExecutable = errors.New("binary is not executable")
	// ErrWrongArch: the program is built for another OS or architecture.
	ErrWrongArch = errors.New("binary is built for another platform")
	// ErrNotProgram: the file is neither an executable of this machine's
	// format nor a #! script.
	ErrNotProgram = errors.New("binary is not a program this machine can run")
	// ErrInterpreterNotFound: the program exists, but the interpreter on its
	// #! line or its ELF dynamic loader does not.
	ErrInterpreterNotFound = errors.New("interpreter not found")
	// ErrArgTooLong: the environment (parameters delivered as env) is too
	// large for execve.
	ErrArgTooLong = errors.New("parameters too large for the environment")
	// ErrEnvNUL: an environment value contains a NUL byte, which execve
	// cannot carry.
	ErrEnvNUL = errors.New("environment value contains a NUL byte")
)

// userError is an error whose text is meant for the user (it ends up in
// attune.execution.error) while errors.Is still finds the sentinel and the
// underlying cause.
type userError struct {
	msg   string
	kind  error
	cause error
}

func (e *userError) Error() string { return e.msg }

func (e *userError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// NotFound is the error for a program, or a script an interpreter is to
// run, that is not at path; it wraps ErrBinaryNotFound and cause.
func NotFound(path string, cause error) error {
	return &userError{msg: "Binary not found: " + path, kind: ErrBinaryNotFound, cause: cause}
}

func errNotExecutable(path string, cause error) error {
	return &userError{msg: "Binary is not executable: " + path, kind: ErrNotExecutable, cause: cause}
}

func errNotProgram(path, why string) error {
	return &userError{
		msg:  fmt.Sprintf("Binary is not a program this machine can run: %s (%s)", path, why),
		kind: ErrNotProgram,
	}
}

// errForeign says what the binary was built for and how to rebuild it for us.
func errForeign(path, builtFor string) error {
	host := runtime.GOOS + "/" + runtime.GOARCH
	hint := fmt.Sprintf("GOOS=%s GOARCH=%s for Go", runtime.GOOS, runtime.GOARCH)
	if triple, ok := rustTargets[runtime.GOOS+"/"+runtime.GOARCH]; ok {
		hint += ", --target " + triple + " for Rust"
	}
	return &userError{
		msg:  fmt.Sprintf("Binary is built for %s, but this worker runs %s: %s; rebuild it for %s (%s)", builtFor, host, path, host, hint),
		kind: ErrWrongArch,
	}
}

// rustTargets maps GOOS/GOARCH to the matching Rust target triple, for the
// rebuild hint.
var rustTargets = map[string]string{
	"linux/amd64":    "x86_64-unknown-linux-gnu",
	"linux/arm64":    "aarch64-unknown-linux-gnu",
	"linux/386":      "i686-unknown-linux-gnu",
	"linux/arm":      "armv7-unknown-linux-gnueabihf",
	"linux/riscv64":  "riscv64gc-unknown-linux-gnu",
	"linux/ppc64le":  "powerpc64le-unknown-linux-gnu",
	"linux/ppc64":    "powerpc64-unknown-linux-gnu",
	"linux/s390x":    "s390x-unknown-linux-gnu",
	"linux/loong64":  "loongarch64-unknown-linux-gnu",
	"linux/mips64le": "mips64el-unknown-linux-gnuabi64",
}

// CheckBinary checks what SPEC §6 requires before an execution starts: the
// program at path exists, we may execute it, and it is a #! script or an
// executable of this machine's format. It returns nil or an error whose text
// is meant for the user and which wraps one of the sentinels above. Files of
// unknown format are left for exec to judge.
func CheckBinary(path string) error {
	fi, err := os.Stat(path) // follows symlinks: a dangling one is "not found"
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return NotFound(path, err)
	case errors.Is(err, fs.ErrPermission):
		return errNotExecutable(path, err) // a directory on the way we may not search
	case err != nil:
		return fmt.Errorf("error checking binary %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return errNotExecutable(path, nil)
	}
	// access(2) rather than the mode bits: it knows our uid and groups, root's
	// rules, ACLs and noexec mounts.
	if err := unix.Access(path, unix.X_OK); err != nil {
		return errNotExecutable(path, err)
	}
	return checkFormat(path)
}

// checkFormat reads the first bytes of path and refuses formats this machine
// cannot run.
func checkFormat(path string) error {
	hdr, err := readHeader(path)
	if err != nil {
		return nil // e.g. execute-only (0111): exec will tell
	}
	switch {
	case bytes.HasPrefix(hdr, []byte("#!")):
		return nil
	case bytes.HasPrefix(hdr, []byte(elf.ELFMAG)):
		return checkELF(path, hdr)
	case isMachO(hdr):
		if runtime.GOOS == "darwin" {
			return nil // our own format; exec judges the architecture
		}
		return errForeign(path, "macOS (Mach-O)")
	case bytes.HasPrefix(hdr, []byte("MZ")):
		return errForeign(path, "Windows (PE)")
	}
	return nil
}

func readHeader(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	hdr := make([]byte, 64)
	n, err := io.ReadFull(f, hdr)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return hdr[:n], nil
}

// checkELF decodes just the ELF identification and the e_type and e_machine
// fields (debug/elf.NewFile wants a whole, well-formed file; a header is all
// we need and all a truncated upload may have).
func checkELF(path string, hdr []byte) error {
	if len(hdr) < 20 {
		return errNotProgram(path, "truncated ELF header")
	}
	class := elf.Class(hdr[elf.EI_CLASS])
	data := elf.Data(hdr[elf.EI_DATA])
	var order binary.ByteOrder = binary.LittleEndian
	if data == elf.ELFDATA2MSB {
		order = binary.BigEndian
	}
	typ := elf.Type(order.Uint16(hdr[16:18]))
	machine := elf.Machine(order.Uint16(hdr[18:20]))

	arch := elfGOARCH(machine, class, data)
	goos := runtime.GOOS
	switch osabi := elf.OSABI(hdr[elf.EI_OSABI]); osabi {
	case elf.ELFOSABI_NONE, elf.ELFOSABI_LINUX:
		if runtime.GOOS == "darwin" {
			goos = "linux" // macOS runs no ELF; an unbranded one is most likely Linux's
		}
	case elf.ELFOSABI_FREEBSD:
		goos = "freebsd"
	case elf.ELFOSABI_NETBSD:
		goos = "netbsd"
	case elf.ELFOSABI_OPENBSD:
		goos = "openbsd"
	case elf.ELFOSABI_SOLARIS:
		goos = "solaris"
	default:
		goos = strings.ToLower(strings.TrimPrefix(osabi.String(), "ELFOSABI_"))
	}
	if goos != runtime.GOOS || !archRuns(arch) {
		return errForeign(path, fmt.Sprintf("%s (ELF)", platformName(goos, arch)))
	}
	switch typ {
	case elf.ET_EXEC, elf.ET_DYN:
		return nil
	case elf.ET_REL:
		return errNotProgram(path, "an ELF object file, not an executable: link it first")
	case elf.ET_CORE:
		return errNotProgram(path, "an ELF core dump")
	}
	return errNotProgram(path, fmt.Sprintf("ELF file of type %s", typ))
}

// platformName names what a binary is built for: "arm64" when only the
// architecture differs from ours, "freebsd/amd64" when the OS does.
func platformName(goos, arch string) string {
	if goos == runtime.GOOS {
		return arch
	}
	return goos + "/" + arch
}

// archRuns reports whether this machine runs binaries of arch: our own, and
// 32-bit x86 on amd64 (IA-32 emulation is all but universal there).
func archRuns(arch string) bool {
	return arch == runtime.GOARCH || (runtime.GOARCH == "amd64" && arch == "386")
}

// elfGOARCH names an ELF machine the way GOARCH does, so the message matches
// the flag the user has to pass.
func elfGOARCH(m elf.Machine, class elf.Class, data elf.Data) string {
	le := data == elf.ELFDATA2LSB
	is64 := class == elf.ELFCLASS64
	switch m {
	case elf.EM_X86_64:
		return "amd64"
	case elf.EM_386:
		return "386"
	case elf.EM_AARCH64:
		return "arm64"
	case elf.EM_ARM:
		return "arm"
	case elf.EM_RISCV:
		if is64 {
			return "riscv64"
		}
		return "riscv32"
	case elf.EM_PPC64:
		if le {
			return "ppc64le"
		}
		return "ppc64"
	case elf.EM_PPC:
		return "ppc"
	case elf.EM_S390:
		if is64 {
			return "s390x"
		}
		return "s390"
	case elf.EM_LOONGARCH:
		return "loong64"
	case elf.EM_MIPS, elf.EM_MIPS_RS3_LE:
		name := "mips"
		if is64 {
			name = "mips64"
		}
		if le {
			name += "le"
		}
		return name
	}
	return strings.ToLower(strings.TrimPrefix(m.String(), "EM_"))
}

// isMachO recognises thin Mach-O files of either byte order and universal
// ("fat") ones. The fat magic 0xcafebabe is also Java's; a class file has
// its version (>= 45) where a fat file has its small architecture count.
func isMachO(hdr []byte) bool {
	if len(hdr) < 8 {
		return false
	}
	switch binary.BigEndian.Uint32(hdr) {
	case 0xfeedface, 0xfeedfacf, 0xcefaedfe, 0xcffaedfe:
		return true
	case 0xcafebabe, 0xcafebabf:
		return binary.BigEndian.Uint32(hdr[4:]) < 20
	}
	return false
}

// explainStartError turns the errno of a failed execve into the message a
// user can act on; it returns nil for errors it has nothing to say about.
func explainStartError(path string, err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return nil
	}
	switch errno {
	case syscall.ENOENT:
		if _, statErr := os.Stat(path); statErr != nil {
			return NotFound(path, err)
		}
		// The file is there, so what is missing is what it asks the kernel
		// to load: its #! interpreter or its ELF dynamic loader.
		if interp := interpreterOf(path); interp != "" {
			return &userError{
				msg:   fmt.Sprintf("Interpreter not found: %s (named by %s); install it or fix the #! line", interp, path),
				kind:  ErrInterpreterNotFound,
				cause: err,
			}
		}
		if loader := dynamicLoaderOf(path); loader != "" {
			return &userError{
				msg: fmt.Sprintf("Binary needs the dynamic loader %s, which this machine lacks: %s; "+
					"link it statically (CGO_ENABLED=0 for Go, a *-linux-musl target for Rust) or install its C library", loader, path),
				kind:  ErrInterpreterNotFound,
				cause: err,
			}
		}
		return NotFound(path, err)
	case syscall.EACCES:
		if checkErr := CheckBinary(path); checkErr != nil {
			return checkErr
		}
		if interp := interpreterOf(path); interp != "" {
			return &userError{
				msg:   fmt.Sprintf("Interpreter is not executable: %s (named by %s)", interp, path),
				kind:  ErrNotExecutable,
				cause: err,
			}
		}
		return errNotExecutable(path, err)
	case syscall.ENOEXEC:
		var ue *userError
		if checkErr := CheckBinary(path); errors.As(checkErr, &ue) {
			return checkErr
		}
		return &userError{
			msg:   fmt.Sprintf("Binary is not a program this machine can run: %s (no ELF header and no #! line)", path),
			kind:  ErrNotProgram,
			cause: err,
		}
	}
	return nil
}

// interpreterOf returns the program named on path's #! line, or "".
func interpreterOf(path string) string {
	hdr, err := readHeader(path)
	if err != nil || !bytes.HasPrefix(hdr, []byte("#!")) {
		return ""
	}
	line, _, _ := bytes.Cut(hdr[2:], []byte("\n"))
	fields := strings.Fields(string(line))
	if len(fields) == 0 {
		return "(empty #! line)"
	}
	return fields[0]
}

// dynamicLoaderOf returns the PT_INTERP of the ELF file at path, or "".
func dynamicLoaderOf(path string) string {
	f, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(p.Open(), 4096))
		if err != nil {
			return ""
		}
		return string(bytes.TrimRight(b, "\x00"))
	}
	return ""
}
