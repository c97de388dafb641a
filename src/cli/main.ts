// cgfence's command line. Each subcommand is one file in commands/; this file only routes.
// Two error tiers: a user's mistake (UsageError, a refused request, a bad config) or a
// problem of the machine (a system call's errno: a missing file, no permission) prints one
// sentence and exits 1; anything else is a bug and keeps its stack (exit 2).
import { ConfigError } from '../daemon/config';
import { UsageError } from './args';
import { DaemonClientError } from '../daemon/daemon-client';

const COMMANDS: Record<string, () => { run(argv: string[]): Promise<number>; help: string }> = {
  daemon: () => require('./commands/daemon'),
  status: () => require('./commands/status'),
  ps: () => require('./commands/ps'),
  audit: () => require('./commands/audit'),
  policy: () => require('./commands/policy'),
  learn: () => require('./commands/learn'),
  sandbox: () => require('./commands/sandbox'),
  demo: () => require('./commands/demo'),
  completion: () => require('./commands/completion'),
  install: () => require('./commands/install'),
  uninstall: () => require('./commands/uninstall'),
};

export const USAGE = `usage: cgfence COMMAND [flags]

kernel-enforced fences for containerd containers: exec allow-lists in eBPF, per container.

commands:
  daemon             run the node agent (see cgfence daemon --help)
  status             a health verdict (exit 3 if unhealthy), then the daemon, containerd, kernel, backends
  ps                 fenced containers: policy per control, every denial counted, cgroup
  audit [--follow]   the audit log, readable and filterable; audit verify checks its hash chain
  policy check       validate cgfence.io/* annotations
  learn CONTAINER    the annotations learned for a cgfence.io/mode=learn container
  policy set         change a running container's policy (map updates, audited)
  sandbox up|down|status   a private containerd + daemon to try cgfence
  demo               sandbox up, a fenced container, the audit log, sandbox down
  install            put cgfence-runc (and runc.conf) where containerd's handler names it
  uninstall          stop the daemon with fences detached; remove pins, state, cgfence-runc
  completion bash    a bash completion script: source <(cgfence completion bash)

listings (status, ps, audit, sandbox status) take -o table|wide|json (--json = -o json);
times are local with date and zone, UTC with --utc.

the runtime for containerd is the separate binary cgfence-runc (ctr run --runc-binary).
cgfence COMMAND --help tells more.`;

export async function runMain(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    console.log(USAGE);
    return cmd ? 0 : 1;
  }
  if (cmd === '--version') {
    console.log(require(require('node:path').join(require('../native').projectRoot(), 'package.json')).version);
    return 0;
  }
  const load = COMMANDS[cmd];
  if (!load) {
    console.error(`cgfence: unknown command ${JSON.stringify(cmd)}\n\n${USAGE}`);
    return 1;
  }
  try {
    return await load().run(rest);
  } catch (e) {
    if (e instanceof UsageError || e instanceof ConfigError || e instanceof DaemonClientError || isSystemError(e)) {
      console.error(`cgfence ${cmd}: ${(e as Error).message}`);
      return 1;
    }
    throw e;
  }
}

/** An error from a system call (ENOENT, EACCES, EADDRINUSE...): the machine's state, not a bug. */
function isSystemError(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  return (
    e instanceof Error && typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) && typeof (e as NodeJS.ErrnoException).syscall === 'string'
  );
}

export function main(): void {
  runMain(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      console.error(`cgfence: ${(e as Error).stack ?? e}`);
      process.exitCode = 2;
    },
  );
}

if (require.main === module) main();
