// How cgfence-runc is built (scripts/build-launcher.sh): static, against musl, so that its
// start-up, paid by every runc call the shim makes, runs no CPUID probe (a VM exit each on a
// virtual machine); and native/musl/fortify.c, which gives the system's glibc-built json-c
// the fortified calls musl lacks, keeps their checks.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../src/native';

const repo = projectRoot();
const launcher = path.join(repo, 'build', 'Release', 'cgfence-runc');
let tmp = '';

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgft-launcher-build-'));
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('the launcher build', () => {
  it('is static and has no CPUID instruction anywhere (a static glibc build has dozens, run at every start)', () => {
    const file = execFileSync('file', ['-L', launcher], { encoding: 'utf8' });
    expect(file).toMatch(/statically linked/);
    const asm = execFileSync('objdump', ['-d', '--no-show-raw-insn', launcher], { encoding: 'utf8', maxBuffer: 256 << 20 });
    expect(asm.length, 'objdump disassembled something').toBeGreaterThan(100_000);
    expect(asm.match(/\tcpuid\b/g) ?? []).toEqual([]);
  });

  it("keeps glibc's fortify checks for json-c: a size that does not fit aborts, one that fits works", () => {
    const src = path.join(tmp, 'probe.c');
    fs.writeFileSync(
      src,
      `#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int __snprintf_chk(char *, size_t, int, size_t, const char *, ...);
char *__strcat_chk(char *, const char *, size_t);
int main(int argc, char **argv) {
  char buf[8] = "ab";
  if (!strcmp(argv[1], "fits")) { __snprintf_chk(buf, 8, 1, 8, "%s", "1234567890"); __strcat_chk(buf, "", 8); printf("%s\\n", buf); return 0; }
  if (!strcmp(argv[1], "snprintf")) __snprintf_chk(buf, 16, 1, 8, "%s", "x");
  if (!strcmp(argv[1], "strcat")) __strcat_chk(buf, "123456", 8);
  printf("not stopped\\n");
  return 0;
}
`,
    );
    const bin = path.join(tmp, 'probe');
    execFileSync('musl-gcc', ['-std=gnu11', '-O2', '-static', src, path.join(repo, 'native', 'musl', 'fortify.c'), '-o', bin]);
    expect(spawnSync(bin, ['fits'], { encoding: 'utf8' }).stdout).toBe('1234567\n');
    for (const call of ['snprintf', 'strcat']) {
      const r = spawnSync(bin, [call], { encoding: 'utf8' });
      expect(r.signal, call).toBe('SIGABRT');
      expect(r.stderr, call).toContain('buffer overflow detected');
      expect(r.stdout, call).not.toContain('not stopped');
    }
  });
});
