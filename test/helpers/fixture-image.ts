// A test image with static C fixtures baked in: allow-lists are resolved in the image's own
// rootfs before runc runs, so a program has to be in the image, not bind-mounted, to be
// allow-listable. Dynamic fixtures bring the host's ELF loader and libc with them.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ImageFile, TEST_IMAGE_CONFIG, buildOciImage, testImageFiles } from '../../src/image/oci-image';
import { importImage } from '../../src/sandbox/containerd-process';
import { SANDBOX_NAMESPACE, SandboxPaths } from '../../src/sandbox/sandbox';
import { buildDynamicFixture, buildFixture, buildFreestandingFixture, mktemp } from './kernel';

export const FIXTURE_DIR = '/opt/fx';

export interface FixtureSet {
  /** Built -static into /opt/fx/<name>. */
  static?: string[];
  /** Built dynamically into /usr/bin/<name>, with the loader and libc they need. */
  dynamic?: string[];
  /** Built freestanding (no libc) into /opt/fx/<name>. */
  freestanding?: string[];
}

/** The loader and libraries of a dynamic program, as `ldd` lists them: [path in the image, host file]. */
function sharedObjects(program: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const line of execFileSync('ldd', [program], { encoding: 'utf8' }).split('\n')) {
    const m = /^\s*(?:\S+ => )?(\/\S+) \(0x[0-9a-f]+\)/.exec(line);
    if (m) out.push([m[1], fs.realpathSync(m[1])]);
  }
  return out;
}

/** Builds the image `name` (the test image plus the fixtures) and imports it into the sandbox. */
export async function importFixtureImage(p: SandboxPaths, name: string, fixtures: string[] | FixtureSet): Promise<void> {
  const set: FixtureSet = Array.isArray(fixtures) ? { static: fixtures } : fixtures;
  const tmp = mktemp('cgft-fximg');
  try {
    const files: ImageFile[] = [...testImageFiles(), { path: '/opt', dir: true as const }, { path: FIXTURE_DIR, dir: true as const }];
    for (const f of set.static ?? []) files.push({ path: `${FIXTURE_DIR}/${f}`, source: buildFixture(f, tmp), mode: 0o755 });
    for (const f of set.freestanding ?? [])
      files.push({ path: `${FIXTURE_DIR}/${f}`, source: buildFreestandingFixture(f, tmp), mode: 0o755 });
    const libs = new Map<string, string>();
    for (const f of set.dynamic ?? []) {
      const bin = buildDynamicFixture(f, tmp);
      files.push({ path: `/usr/bin/${f}`, source: bin, mode: 0o755 });
      for (const [inImage, host] of sharedObjects(bin)) libs.set(inImage, host);
    }
    const dirs = new Set<string>();
    for (const inImage of libs.keys()) {
      for (let d = path.posix.dirname(inImage); d !== '/' && !files.some((x) => x.path === d); d = path.posix.dirname(d)) dirs.add(d);
    }
    for (const d of [...dirs].sort()) files.push({ path: d, dir: true as const });
    for (const [inImage, host] of libs) files.push({ path: inImage, source: host, mode: 0o755 });
    const tarPath = path.join(tmp, 'image.tar');
    await buildOciImage({ name, outFile: tarPath, files, config: TEST_IMAGE_CONFIG });
    await importImage(p.dir, tarPath, SANDBOX_NAMESPACE);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
