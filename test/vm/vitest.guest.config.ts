// The tests test/vm.test.ts runs inside the VM (scripts/vm-run.sh): the kernel-level tests of
// both exec backends on the stock kernel, and the end-to-end run with the BPF-LSM backend.
import { defineConfig } from 'vitest/config';
export default defineConfig({
  test: {
    include: (process.env.CGFENCE_VM_TESTS ?? 'test/vm/guest/*.guest.ts').split(','),
    testTimeout: 600000,
    hookTimeout: 600000,
    fileParallelism: false,
    // The guest's root is an overlay over 9p, not the build host's ext4: this one test of
    // test/exec-fence.test.ts checks the host's root filesystem and does not apply.
    testNamePattern: /^(?!.*identities computed in user space match the kernel on ext4)/,
  },
});
