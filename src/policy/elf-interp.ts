// The PT_INTERP of an ELF file: the loader the kernel maps and starts a dynamic program in.
// Hand-read rather than through a library: it is the ELF header and the program headers,
// fixed layouts, and no ELF parser in the npm registry is both maintained and widely used
// (checked: @bugsplat/elfy, ~2.6k weekly downloads, is the closest).
import fs from 'node:fs';

const PT_INTERP = 3;
const MAX_INTERP = 4096; // PATH_MAX: the kernel refuses a longer PT_INTERP itself

export class ElfError extends Error {}

/**
 * The loader path `file` names in its PT_INTERP, or null when it has none (a static program,
 * or not an ELF file at all: a #! script, whose interpreter the kernel execs as a program).
 */
export function elfInterpreter(file: string): string | null {
  const fd = fs.openSync(file, 'r');
  try {
    const read = (pos: number, len: number): Buffer => {
      const b = Buffer.alloc(len);
      const n = fs.readSync(fd, b, 0, len, pos);
      if (n !== len) throw new ElfError(`${file}: truncated ELF file (wanted ${len} bytes at ${pos}, got ${n})`);
      return b;
    };
    const ident = Buffer.alloc(16);
    if (fs.readSync(fd, ident, 0, 16, 0) < 16 || ident.readUInt32BE(0) !== 0x7f454c46) return null;
    const is64 = ident[4] === 2;
    const le = ident[5] === 1;
    if (ident[4] !== 1 && !is64) throw new ElfError(`${file}: unknown ELF class ${ident[4]}`);
    if (ident[5] !== 1 && ident[5] !== 2) throw new ElfError(`${file}: unknown ELF byte order ${ident[5]}`);
    const hdr = read(0, is64 ? 64 : 52);
    const u16 = (b: Buffer, o: number) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
    const u32 = (b: Buffer, o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
    const word = (b: Buffer, o: number) => (is64 ? Number(le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o)) : u32(b, o));
    const phoff = word(hdr, is64 ? 32 : 28);
    const phentsize = u16(hdr, is64 ? 54 : 42);
    const phnum = u16(hdr, is64 ? 56 : 44);
    if (phnum === 0) return null;
    if (phentsize < (is64 ? 56 : 32)) throw new ElfError(`${file}: program header entries of ${phentsize} bytes`);
    const phs = read(phoff, phentsize * phnum);
    for (let i = 0; i < phnum; i++) {
      const ph = i * phentsize;
      if (u32(phs, ph) !== PT_INTERP) continue;
      const offset = word(phs, ph + (is64 ? 8 : 4));
      const size = word(phs, ph + (is64 ? 32 : 16));
      if (size < 2 || size > MAX_INTERP) throw new ElfError(`${file}: PT_INTERP of ${size} bytes`);
      const s = read(offset, size);
      const end = s.indexOf(0);
      return s.toString('utf8', 0, end < 0 ? size : end);
    }
    return null;
  } finally {
    fs.closeSync(fd);
  }
}
