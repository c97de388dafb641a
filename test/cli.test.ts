// Black-box tests of the built CLI: exit codes, stdout and stderr, as a person sees them.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog } from '../src/audit/audit-log';

const BIN = path.join(__dirname, '..', 'bin', 'cgfence');
let tmp: string;

function cgfence(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(BIN, args, { encoding: 'utf8', env: { ...process.env, CGFENCE_SOCKET: path.join(tmp, 'none.sock'), ...env } });
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgfence-cli-'));
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('cgfence CLI', () => {
  it('--help lists the commands; no command is a usage error', () => {
    const h = cgfence(['--help']);
    expect(h.status).toBe(0);
    for (const c of ['daemon', 'status', 'ps', 'audit', 'policy check', 'sandbox up|down|status', 'demo']) expect(h.stdout).toContain(c);
    const none = cgfence([]);
    expect(none.status).toBe(1);
  });

  it('every command has --help', () => {
    for (const c of ['daemon', 'status', 'ps', 'audit', 'policy', 'sandbox', 'demo']) {
      const r = cgfence([c, '--help']);
      expect(r.status, c).toBe(0);
      expect(r.stdout, c).toMatch(/^usage: cgfence /);
    }
  });

  it('an unknown command or flag is one clear line and exit 1', () => {
    const r = cgfence(['stauts']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('unknown command "stauts"');
    const f = cgfence(['ps', '--jsn']);
    expect(f.status).toBe(1);
    expect(f.stderr.trim()).toBe('cgfence ps: unknown flag --jsn (known here: --socket, --json, --help)');
  });

  it('status without a daemon says where it looked and what to do, without a stack', () => {
    const r = cgfence(['status']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/cannot reach the cgfence daemon at .*none\.sock: is it running\?/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('policy check accepts a valid policy and lists every error of a bad one', () => {
    const ok = cgfence(['policy', 'check', 'cgfence.io/exec-allow=/bin/sh,/usr/bin/*', 'cgfence.io/egress-deny=10.0.0.0/8,::1/128']);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('valid: mode enforce');
    const bad = cgfence(['policy', 'check', 'cgfence.io/exec-allow=bin/sh', 'cgfence.io/egress-deny=10.0.0.0/33', 'cgfence.io/colour=blue', 'cgfence.io/seccomp-deny=mkdir,nosuchcall']);
    expect(bad.status).toBe(1);
    const lines = bad.stderr.trim().split('\n');
    expect(lines).toHaveLength(4);
    expect(bad.stderr).toContain('cgfence.io/exec-allow: "bin/sh" is not an absolute path');
    expect(bad.stderr).toContain('cgfence.io/egress-deny: "10.0.0.0/33"');
    expect(bad.stderr).toContain('unknown annotation cgfence.io/colour="blue"');
    expect(bad.stderr).toContain('cgfence.io/seccomp-deny: unknown syscall "nosuchcall"');
  });

  it('policy check applies node profiles from --config', () => {
    const cfg = path.join(tmp, 'config.yaml');
    fs.writeFileSync(cfg, 'profiles:\n  web:\n    cgfence.io/exec-allow: /bin/sh\n    cgfence.io/mode: audit\n');
    const ok = cgfence(['policy', 'check', 'cgfence.io/profile=web', '--config', cfg]);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('mode audit, profile web');
    const missing = cgfence(['policy', 'check', 'cgfence.io/profile=db', '--config', cfg]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain('cgfence.io/profile="db": no such profile on this node (known: web)');
  });

  it('audit prints readable lines and verify finds an altered record', () => {
    const file = path.join(tmp, 'audit.log');
    const log = new AuditLog({ path: file });
    log.write({ type: 'lifecycle', action: 'attach', namespace: 'default', container_id: 'c1', pid: 10 });
    log.write({ type: 'exec', action: 'deny', namespace: 'default', container_id: 'c1', pid: 11, comm: 'tool-a', path: '/usr/local/bin/tool-a', inode: '42', dev: '0:46' });
    log.write({ type: 'lifecycle', action: 'detach', namespace: 'default', container_id: 'c1', pid: 10 });
    log.close();
    const shown = cgfence(['audit', '--audit-log', file, '--type', 'exec']);
    expect(shown.status, shown.stderr).toBe(0);
    expect(shown.stdout.trim().split('\n')).toHaveLength(1);
    expect(shown.stdout).toMatch(/deny\s+exec\s+default\/c1\s+pid 11 \(tool-a\) \/usr\/local\/bin\/tool-a/);
    const good = cgfence(['audit', 'verify', file]);
    expect(good.status, good.stderr).toBe(0);
    expect(good.stdout).toContain('hash chain intact, 3 record(s)');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('"action":"deny"', '"action":"allow"'));
    const broken = cgfence(['audit', 'verify', file]);
    expect(broken.status).toBe(1);
    expect(broken.stderr).toMatch(/audit\.log:2: altered/);
  });
});
