// Profiles every node has without configuring them (a config file's profile of the same name
// replaces one). `hardened` closes what an exec allow-list cannot: code written into a running
// process by another process of the container (docs/exec-integrity.md).
export const BUILTIN_PROFILES: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  hardened: {
    // ptrace(POKETEXT, SETREGS...) and process_vm_writev write code into a process that the
    // exec fence allowed; both fail with EPERM. Writes through /proc/PID/mem are not syscalls
    // seccomp can tell apart: the kernel's proc_mem.force_override=never closes those.
    'cgfence.io/seccomp-deny': 'ptrace,process_vm_writev',
  },
};
