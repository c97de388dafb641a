// A test image with static C fixtures baked in: allow-lists are resolved in the image's own
// rootfs before runc runs, so a program has to be in the image, not bind-mounted, to be
// allow-listable.
import fs from 'node:fs';
import path from 'node:path';
import { TEST_IMAGE_CONFIG, buildOciImage, testImageFiles } from '../../src/image/oci-image';
import { importImage } from '../../src/sandbox/containerd-process';
import { SANDBOX_NAMESPACE, SandboxPaths } from '../../src/sandbox/sandbox';
import { buildFixture, mktemp } from './kernel';

export const FIXTURE_DIR = '/opt/fx';

/** Builds the image `name` (the test image plus /opt/fx/<fixture>) and imports it into the sandbox. */
export async function importFixtureImage(p: SandboxPaths, name: string, fixtures: string[]): Promise<void> {
  const tmp = mktemp('cgft-fximg');
  try {
    const files = [...testImageFiles(), { path: '/opt', dir: true as const }, { path: FIXTURE_DIR, dir: true as const }];
    for (const f of fixtures) files.push({ path: `${FIXTURE_DIR}/${f}`, source: buildFixture(f, tmp), mode: 0o755 });
    const tarPath = path.join(tmp, 'image.tar');
    await buildOciImage({ name, outFile: tarPath, files, config: TEST_IMAGE_CONFIG });
    await importImage(p.dir, tarPath, SANDBOX_NAMESPACE);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
