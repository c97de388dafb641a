// `--exec-deny kill` (here through CGFENCE_EXEC_DENY in the environment of `sandbox up`,
// which the daemon inherits): no seccomp notification at all, a forbidden exec is killed by
// the kernel fence before its first instruction; status, ps and the attach record say so.
// Real containerd, runc and kernel. (errno, the default, is test/exec-notify*.test.ts.)
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import os from 'node:os';
import { readRecords } from '../src/audit/audit-read';
import { resolveConfig } from '../src/daemon/config';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { IMAGE, cid, cli, ctr, removeContainer, sandboxDir, waitFor } from './helpers/sandbox';

const dir = sandboxDir('xd');
let p: SandboxPaths;
const ALLOW = ['--annotation', 'cgfence.io/exec-allow=/bin/sh'];

beforeAll(async () => {
  const saved = process.env.CGFENCE_EXEC_DENY;
  process.env.CGFENCE_EXEC_DENY = 'kill';
  try {
    p = await sandboxUp(dir);
  } finally {
    if (saved === undefined) delete process.env.CGFENCE_EXEC_DENY;
    else process.env.CGFENCE_EXEC_DENY = saved;
  }
}, 180_000);

afterAll(async () => {
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
}, 120_000);

describe('--exec-deny kill', () => {
  it('status shows it and the daemon runs no notify loop', () => {
    const s = JSON.parse(cli(p, ['status', '--json']).stdout) as {
      daemon: { execDeny: string };
      kernel: { backends: { exec: Record<string, unknown> } };
    };
    expect(s.daemon.execDeny).toBe('kill');
    expect(s.kernel.backends.exec.notify).toBeUndefined();
    expect(cli(p, ['status']).stdout).toMatch(/^exec deny\s+kill/m);
  });

  it('a forbidden exec is killed (137) before it runs, its config routes nothing to seccomp notify, the attach record says kill', async () => {
    const id = cid('kill');
    const r = ctr(
      p,
      [
        'run',
        '--rm',
        '--runc-binary',
        p.runc,
        ...ALLOW,
        IMAGE,
        id,
        '/bin/sh',
        '-c',
        '/usr/local/bin/tool-a echo FORBIDDEN-RAN; echo rc=$?; ls / >/dev/null && echo ls-ok',
      ],
      120_000,
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('FORBIDDEN-RAN');
    expect(r.stdout).toContain('rc=137');
    expect(r.stdout).toContain('ls-ok');
    let recs: Awaited<ReturnType<typeof readRecords>> = [];
    const attach = await waitFor('attach record', () => {
      void readRecords(p.auditLog, { container: id }).then((x) => (recs = x));
      return recs.find((x) => x.type === 'lifecycle' && x.action === 'attach');
    });
    expect(attach).toMatchObject({ exec_deny: 'kill', mode: 'enforce' });
    const deny = await waitFor('deny record', () => {
      void readRecords(p.auditLog, { container: id }).then((x) => (recs = x));
      return recs.find((x) => x.type === 'exec' && x.action === 'deny');
    });
    expect(deny.via).toBeUndefined(); // the kernel fence's, not the notify loop's
    expect(fs.existsSync(path.join(p.stateDir, 'seccomp-agent.sock'))).toBe(false);
  });

  it('ps shows exec-deny kill for a running enforce container', async () => {
    const id = cid('ps');
    const r = ctr(p, ['run', '-d', '--runc-binary', p.runc, ...ALLOW, IMAGE, id, '/bin/sh', '-c', 'sleep 60'], 120_000);
    expect(r.status, r.stderr).toBe(0);
    try {
      const rows = JSON.parse(cli(p, ['ps', '--json']).stdout) as Array<{ id: string; execDeny: string | null }>;
      expect(rows.find((x) => x.id === id)?.execDeny).toBe('kill');
      const table = cli(p, ['ps']).stdout;
      expect(table).toMatch(/EXEC-DENY/);
      expect(table.split('\n').find((l) => l.includes(id))).toMatch(/\bkill\b/);
    } finally {
      await removeContainer(p, id);
    }
  });
});

describe('the setting', () => {
  it('comes from the flag, then CGFENCE_EXEC_DENY, then the config file, else errno; anything else is refused by name', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgft-xd-'));
    try {
      const file = path.join(tmp, 'daemon.yaml');
      fs.writeFileSync(file, 'execDeny: kill\n');
      expect(resolveConfig({}, {}).execDeny).toBe('errno');
      expect(resolveConfig({ config: file }, {}).execDeny).toBe('kill');
      expect(resolveConfig({ config: file }, { CGFENCE_EXEC_DENY: 'errno' }).execDeny).toBe('errno');
      expect(resolveConfig({ 'exec-deny': 'kill' }, { CGFENCE_EXEC_DENY: 'errno' }).execDeny).toBe('kill');
      expect(() => resolveConfig({ 'exec-deny': 'eperm' }, {})).toThrow(/--exec-deny "eperm": expected errno or kill/);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
