import { DEFAULT_SANDBOX_DIR, sandboxDown, sandboxStatus, sandboxUp } from '../../sandbox/sandbox';
import { UsageError, parseArgs } from '../args';

export const help = `usage: cgfence sandbox up|down|status [--dir DIR]

A private containerd (config, root, state and socket under DIR) and a cgfence daemon, with
a small busybox test image imported: a place to try cgfence on a machine with no
containerd set up. DIR defaults to ${DEFAULT_SANDBOX_DIR}.

  up      start whatever of the two is not running; writes DIR/env (source it for ctr),
          DIR/containerd.pid and DIR/daemon.pid
  down    stop both; every fence is detached and nothing stays pinned
  status  what runs

The daemon inherits this environment's CGFENCE_* settings (CGFENCE_EXEC_DENY=kill,
CGFENCE_CONFIG, ...), except the paths the sandbox sets itself.`;

export async function run(argv: string[]): Promise<number> {
  const a = parseArgs(argv, { values: ['dir'] });
  const verb = a.positionals[0];
  if (a.bools.has('help') || !verb) {
    console.log(help);
    return verb || a.bools.has('help') ? 0 : 1;
  }
  const dir = a.flags.dir ?? DEFAULT_SANDBOX_DIR;
  const progress = (m: string) => console.log(`sandbox: ${m}`);
  switch (verb) {
    case 'up': {
      const p = await sandboxUp(dir, progress);
      console.log(`\nready. try:\n  . ${p.env}\n  ctr run --rm --runc-binary "$CGFENCE_RUNC" --annotation cgfence.io/exec-allow=/bin/sh cgfence.local/test:latest try1 sh -c 'echo allowed; /usr/local/bin/tool-a echo denied'\n  cgfence audit --follow`);
      return 0;
    }
    case 'down':
      await sandboxDown(dir, progress);
      return 0;
    case 'status': {
      const s = sandboxStatus(dir);
      console.log(`dir         ${s.dir}`);
      console.log(`containerd  ${s.containerd ? 'running' : 'stopped'}`);
      console.log(`daemon      ${s.daemon ? `running (pid ${s.daemon})` : 'stopped'}`);
      console.log(`env         ${s.env ?? '-'}`);
      return s.containerd && s.daemon ? 0 : 3;
    }
    default:
      throw new UsageError(`unknown sandbox command ${JSON.stringify(verb)} (expected up, down or status)`);
  }
}
