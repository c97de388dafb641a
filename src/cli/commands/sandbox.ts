import { DEFAULT_SANDBOX_DIR, sandboxDown, sandboxStatus, sandboxUp } from '../../sandbox/sandbox';
import { UsageError, parseArgs } from '../args';
import { OUTPUT_FLAGS, outputFormat } from '../output';

export const help = `usage: cgfence sandbox up|down|status [--dir DIR] [--config FILE] [-o table|wide|json]

A private containerd (config, root, state and socket under DIR) and a cgfence daemon, with
a small busybox test image imported: a place to try cgfence on a machine with no
containerd set up. DIR defaults to ${DEFAULT_SANDBOX_DIR}.

  up      start whatever of the two is not running (the daemon with --config FILE if
          given: profiles and selectors, reloaded on change); writes DIR/env (source it for ctr and
          to have cgfence on PATH), DIR/containerd.pid and DIR/daemon.pid
  down    stop both; every fence is detached and nothing stays pinned
  status  what runs (exit 0 when both run, 3 otherwise)

The daemon inherits this environment's CGFENCE_* settings (CGFENCE_EXEC_DENY=kill, ...),
except the paths the sandbox sets itself.`;

export async function run(argv: string[]): Promise<number> {
  const a = parseArgs(argv, { values: ['dir', 'config', ...OUTPUT_FLAGS.values], bools: OUTPUT_FLAGS.bools, short: OUTPUT_FLAGS.short });
  const verb = a.positionals[0];
  if (a.bools.has('help') || !verb) {
    console.log(help);
    return verb || a.bools.has('help') ? 0 : 1;
  }
  const dir = a.flags.dir ?? DEFAULT_SANDBOX_DIR;
  const progress = (m: string) => console.log(`sandbox: ${m}`);
  switch (verb) {
    case 'up': {
      const p = await sandboxUp(dir, progress, { config: a.flags.config });
      console.log(
        `\nready. try:\n  . ${p.env}\n  ctr run --rm --runc-binary "$CGFENCE_RUNC" --annotation cgfence.io/exec-allow=/bin/sh cgfence.local/test:latest try1 sh -c 'echo allowed; /usr/local/bin/tool-a echo denied'\n  cgfence audit --follow`,
      );
      return 0;
    }
    case 'down':
      await sandboxDown(dir, progress);
      return 0;
    case 'status': {
      const s = sandboxStatus(dir);
      const code = s.containerd && s.daemon ? 0 : 3;
      if (outputFormat(a) === 'json') {
        console.log(JSON.stringify(s, null, 2));
        return code;
      }
      console.log(`dir         ${s.dir}`);
      console.log(`containerd  ${s.containerd ? 'running' : 'stopped'}`);
      console.log(`daemon      ${s.daemon ? `running (pid ${s.daemon})` : 'stopped'}`);
      console.log(`env         ${s.env ?? '-'}`);
      return code;
    }
    default:
      throw new UsageError(`unknown sandbox command ${JSON.stringify(verb)} (expected up, down or status)`);
  }
}
