import { defineConfig } from 'vitest/config';

// Test tiers, each runnable alone (`npm run test:unit` ... `test:vm`); `npm test` runs them in
// this order, one file at a time (kernel state such as the tamper watch is node-wide).
//   unit    pure TypeScript: no root, no BPF, no containerd
//   kernel  real BPF programs and seccomp on this kernel, the launcher's parsers and their
//           fuzz targets (test/fuzz/), without containerd (root)
//   e2e     a real containerd and runc through the sandbox (root); new test files land here
//   vm      the same checks on stock distro kernels booted in QEMU (scripts/vm-run.sh):
//           test/vm.test.ts boots them and runs test/vm/guest/* inside
const UNIT = [
  'allow-list-check',
  'annotations-property',
  'bench-stats',
  'cli',
  'fence-registry',
  'learned-policy',
  'net-rules',
  'replace-file',
  'seccomp-profile',
];
const KERNEL = [
  'audit-log',
  'cgfence-runc',
  'cgfence-runc-differential',
  'launcher-build',
  'exec-fence',
  'fd-holder',
  'learn-kernel',
  'net-fence',
];
const files = (names: string[]) => names.map((n) => `test/${n}.test.ts`);

const common = { testTimeout: 120000, hookTimeout: 120000, fileParallelism: false };

export default defineConfig({
  test: {
    ...common,
    projects: [
      { test: { ...common, name: 'unit', include: files(UNIT) } },
      { test: { ...common, name: 'kernel', include: [...files(KERNEL), 'test/fuzz/**/*.test.ts'] } },
      { test: { ...common, name: 'e2e', include: ['test/*.test.ts'], exclude: [...files(UNIT), ...files(KERNEL), 'test/vm.test.ts'] } },
      { test: { ...common, name: 'vm', include: ['test/vm.test.ts'] } },
    ],
  },
});
