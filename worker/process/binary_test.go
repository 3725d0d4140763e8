package process

import (
	"debug/elf"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// otherArch names an architecture that is not ours, and its ELF machine.
func otherArch() (string, elf.Machine) {
	if runtime.GOARCH == "arm64" {
		return "amd64", elf.EM_X86_64
	}
	return "arm64", elf.EM_AARCH64
}

func ourMachine(t *testing.T) elf.Machine {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	f, err := elf.Open(self)
	require.NoError(t, err)
	defer f.Close()
	return f.Machine
}

func TestCheckBinary(t *testing.T) {
	t.Parallel()

	b := setupProc(t)
	write := func(name string, content []byte, mode os.FileMode) string {
		path := filepath.Join(b.dir, name)
		require.NoError(t, os.WriteFile(path, content, mode))
		return path
	}
	symlink := func(name, target string) string {
		path := filepath.Join(b.dir, name)
		require.NoError(t, os.Symlink(target, path))
		return path
	}
	self, err := os.Executable()
	require.NoError(t, err)
	host := runtime.GOOS + "/" + runtime.GOARCH
	arch, machine := otherArch()
	rebuild := "; rebuild it for " + host + " (GOOS=" + runtime.GOOS + " GOARCH=" + runtime.GOARCH + " for Go"
	if triple, ok := rustTargets[host]; ok {
		rebuild += ", --target " + triple + " for Rust"
	}
	rebuild += ")"

	missing := filepath.Join(b.dir, "missing")
	script := write("script.sh", []byte("#!/bin/sh\necho hi\n"), 0o755)
	notExec := write("not-exec.sh", []byte("#!/bin/sh\necho hi\n"), 0o644)
	foreign := write("foreign", elfHeader(machine, elf.ELFOSABI_NONE, elf.ET_EXEC), 0o755)
	freebsd := write("freebsd", elfHeader(ourMachine(t), elf.ELFOSABI_FREEBSD, elf.ET_EXEC), 0o755)
	native := write("native", elfHeader(ourMachine(t), elf.ELFOSABI_LINUX, elf.ET_DYN), 0o755)
	object := write("object.o", elfHeader(ourMachine(t), elf.ELFOSABI_NONE, elf.ET_REL), 0o755)
	truncated := write("truncated", []byte("\x7fELF\x02\x01"), 0o755)
	pe := write("tool.exe", append([]byte("MZ\x90\x00"), make([]byte, 60)...), 0o755)
	macho := write("macho", append([]byte{0xcf, 0xfa, 0xed, 0xfe, 0x0c, 0x00, 0x00, 0x01}, make([]byte, 56)...), 0o755)
	fat := write("fat", append([]byte{0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 2}, make([]byte, 56)...), 0o755)
	java := write("Main.class", append([]byte{0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 52}, make([]byte, 56)...), 0o755)
	unknown := write("unknown", []byte("plain text, no header\n"), 0o755)
	empty := write("empty", nil, 0o755)

	tests := []struct {
		name    string
		path    string
		want    string // exact Error(); "" for nil
		wantErr error
	}{
		{"Missing", missing, "Binary not found: " + missing, ErrBinaryNotFound},
		{"DanglingSymlink", symlink("dangling", missing), "Binary not found: " + filepath.Join(b.dir, "dangling"), ErrBinaryNotFound},
		{"MissingParent", filepath.Join(script, "x"), "Binary not found: " + filepath.Join(script, "x"), ErrBinaryNotFound},
		{"NotExecutable", notExec, "Binary is not executable: " + notExec, ErrNotExecutable},
		{"Directory", b.dir, "Binary is not executable: " + b.dir, ErrNotExecutable},
		{"ForeignArch", foreign, "Binary is built for " + arch + " (ELF), but this worker runs " + host + ": " + foreign + rebuild, ErrWrongArch},
		{"ForeignOS", freebsd, "Binary is built for freebsd/" + runtime.GOARCH + " (ELF), but this worker runs " + host + ": " + freebsd + rebuild, ErrWrongArch},
		{"ObjectFile", object, "Binary is not a program this machine can run: " + object + " (an ELF object file, not an executable: link it first)", ErrNotProgram},
		{"TruncatedELF", truncated, "Binary is not a program this machine can run: " + truncated + " (truncated ELF header)", ErrNotProgram},
		{"PE", pe, "Binary is built for Windows (PE), but this worker runs " + host + ": " + pe + rebuild, ErrWrongArch},
		{"MachO", macho, "Binary is built for macOS (Mach-O), but this worker runs " + host + ": " + macho + rebuild, ErrWrongArch},
		{"MachOUniversal", fat, "Binary is built for macOS (Mach-O), but this worker runs " + host + ": " + fat + rebuild, ErrWrongArch},
		{"Script", script, "", nil},
		{"SymlinkToScript", symlink("link", script), "", nil},
		{"NativeELF", native, "", nil},
		{"TestBinary", self, "", nil},
		{"JavaClassIsNotMachO", java, "", nil},
		{"UnknownLeftToExec", unknown, "", nil},
		{"EmptyLeftToExec", empty, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			err := CheckBinary(tt.path)
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tt.want)
			require.ErrorIs(t, err, tt.wantErr)
		})
	}
}

func TestCheckBinary386OnAmd64(t *testing.T) {
	t.Parallel()

	path := filepath.Join(t.TempDir(), "i386")
	hdr := elfHeader(elf.EM_386, elf.ELFOSABI_NONE, elf.ET_EXEC)
	hdr[elf.EI_CLASS] = byte(elf.ELFCLASS32)
	require.NoError(t, os.WriteFile(path, hdr, 0o755))
	err := CheckBinary(path)
	if runtime.GOARCH == "amd64" || runtime.GOARCH == "386" {
		require.NoError(t, err)
	} else {
		require.ErrorIs(t, err, ErrWrongArch)
	}
}
