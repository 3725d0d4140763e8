package processtest

import (
	"debug/elf"
	"encoding/binary"
)

// ELFHeader returns the 64-byte header of a little-endian 64-bit ELF file;
// it is all process.CheckBinary (and the kernel, to refuse it) reads.
func ELFHeader(machine elf.Machine, osabi elf.OSABI, typ elf.Type) []byte {
	b := make([]byte, 64)
	copy(b, elf.ELFMAG)
	b[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	b[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	b[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	b[elf.EI_OSABI] = byte(osabi)
	binary.LittleEndian.PutUint16(b[16:], uint16(typ))
	binary.LittleEndian.PutUint16(b[18:], uint16(machine))
	binary.LittleEndian.PutUint32(b[20:], uint32(elf.EV_CURRENT))
	binary.LittleEndian.PutUint16(b[52:], 64) // e_ehsize
	return b
}
