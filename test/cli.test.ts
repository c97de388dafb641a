// Black-box tests of the built CLI: exit codes, stdout and stderr, as a person sees them.
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog } from '../src/audit/audit-log';
import { COMPLETION } from '../src/cli/commands/completion';
import { formatTime } from '../src/cli/time-format';

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
    expect(f.stderr.trim()).toBe('cgfence ps: unknown flag --jsn (known here: --socket, --output, --utc, --json, --help, -o)');
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
    const bad = cgfence([
      'policy',
      'check',
      'cgfence.io/exec-allow=bin/sh',
      'cgfence.io/egress-deny=10.0.0.0/33',
      'cgfence.io/colour=blue',
      'cgfence.io/seccomp-deny=mkdir,nosuchcall',
    ]);
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

  it("policy check previews what the node's selectors give a pod", () => {
    const cfg = path.join(tmp, 'selectors.yaml');
    fs.writeFileSync(
      cfg,
      'profiles:\n  web:\n    cgfence.io/exec-allow: /bin/sh\n  shop:\n    cgfence.io/mode: audit\n    cgfence.io/exec-allow: /bin/sh\nselectors:\n  - namespace: shop\n    profile: shop\n  - namespace: shop\n    podLabels: {app: web}\n    profile: web\n',
    );
    const web = cgfence(['policy', 'check', '--config', cfg, '--pod-namespace', 'shop', '--pod-labels', 'app=web,tier=front']);
    expect(web.status, web.stderr).toBe(0);
    expect(web.stdout).toContain('valid: mode enforce, profile web (selector 1: namespace=shop,app=web)');
    const ns = cgfence(['policy', 'check', '--config', cfg, '--pod-namespace', 'shop']);
    expect(ns.stdout).toContain('valid: mode audit, profile shop (selector 0: namespace=shop)');
    const own = cgfence(['policy', 'check', '--config', cfg, '--pod-namespace', 'shop', 'cgfence.io/profile=web']);
    expect(own.stdout).toMatch(/profile web\n/);
    const bad = cgfence(['policy', 'check', '--config', cfg, '--pod-labels', 'app']);
    expect(bad.status).toBe(1);
    expect(bad.stderr.trim()).toBe('cgfence policy: --pod-labels: "app" is not NAME=VALUE');
  });

  it('audit prints readable lines and verify finds an altered record', () => {
    const file = path.join(tmp, 'audit.log');
    const log = new AuditLog({ path: file });
    log.write({ type: 'lifecycle', action: 'attach', namespace: 'default', container_id: 'c1', pid: 10 });
    log.write({
      type: 'exec',
      action: 'deny',
      namespace: 'default',
      container_id: 'c1',
      pid: 11,
      comm: 'tool-a',
      path: '/usr/local/bin/tool-a',
      inode: '42',
      dev: '0:46',
    });
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

  /** A user's mistake: exit 1, exactly one line on stderr naming the command, no stack. */
  function oneLine(r: ReturnType<typeof cgfence>, cmd: string, pattern: RegExp) {
    expect(r.status, r.stderr).toBe(1);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^cgfence ${cmd}: `));
    expect(lines[0]).toMatch(pattern);
  }

  it('user mistakes are one line and exit 1, unknown values included', () => {
    const log = path.join(tmp, 'mistakes.log');
    new AuditLog({ path: log }).close();
    oneLine(cgfence(['audit', '--since', '10x', '--audit-log', log]), 'audit', /--since "10x": expected a duration like 90s/);
    oneLine(
      cgfence(['audit', '--type', 'bogus', '--audit-log', log]),
      'audit',
      /--type "bogus": expected one of exec, net, seccomp, lifecycle, tamper, agent/,
    );
    oneLine(cgfence(['audit', '--audit-log', path.join(tmp, 'nope.log')]), 'audit', /no audit log at .*nope\.log/);
    const acts = path.join(tmp, 'actions.log');
    const al = new AuditLog({ path: acts });
    al.write({ type: 'exec', action: 'deny', namespace: 'n', container_id: 'c' });
    al.write({ type: 'lifecycle', action: 'attach', namespace: 'n', container_id: 'c' });
    al.close();
    oneLine(
      cgfence(['audit', '--audit-log', acts, '--type', 'exec', '--action', 'denied']),
      'audit',
      /--action "denied": no exec record in .*actions\.log has it \(there: deny\)/,
    );
    expect(cgfence(['audit', '--audit-log', acts, '--action', 'deny']).stdout.trim().split('\n')).toHaveLength(1);
    oneLine(cgfence(['policy', 'check', '--file', '/missing/config.json']), 'policy', /--file \/missing\/config\.json: no such file/);
    const notJson = path.join(tmp, 'bad.json');
    fs.writeFileSync(notJson, '{"annotations": ');
    oneLine(cgfence(['policy', 'check', '--file', notJson]), 'policy', /bad\.json: not JSON/);
    oneLine(cgfence(['ps', '-o', 'yaml']), 'ps', /--output "yaml": expected table, wide or json/);
    oneLine(cgfence(['status', '-x']), 'status', /unknown flag -x/);
    oneLine(cgfence(['ps', '--json', '-o', 'wide']), 'ps', /contradict/);
    oneLine(
      cgfence(['daemon', '--metrics-address', 'localhost'], { CGFENCE_PIN_DIR: '/nonexistent' }),
      'daemon',
      /metrics-address "localhost": expected HOST:PORT/,
    );
    oneLine(cgfence(['daemon', '--cgroup-mode', 'v3']), 'daemon', /--cgroup-mode "v3": expected auto, v2 or v1/);
    oneLine(cgfence(['completion', 'zsh']), 'completion', /bash is the one shell supported/);
    oneLine(cgfence(['sandbox', 'sideways']), 'sandbox', /unknown sandbox command "sideways"/);
  });

  it('audit: -o json is the raw records, -o wide the whole ids, times local with date and zone or UTC with --utc', () => {
    const file = path.join(tmp, 'times.log');
    const id = 'a'.repeat(64);
    const log = new AuditLog({ path: file });
    log.write({
      ts: '2026-01-02T03:04:05.678901234Z',
      type: 'exec',
      action: 'deny',
      namespace: 'k8s.io',
      container_id: id,
      pid: 7,
      path: '/bin/x',
    });
    log.close();
    const utc = cgfence(['audit', '--audit-log', file, '--utc']);
    expect(utc.stdout).toMatch(/^2026-01-02 03:04:05\.678 Z deny\s+exec\s+k8s\.io\/aaaaaaaaaaaa\s/);
    const local = cgfence(['audit', '--audit-log', file], { TZ: 'Asia/Kolkata' });
    expect(local.stdout).toMatch(/^2026-01-02 08:34:05\.678 \+05:30 deny/);
    const wide = cgfence(['audit', '--audit-log', file, '-o', 'wide', '--utc']);
    expect(wide.stdout).toContain(`k8s.io/${id}`);
    for (const args of [['-o', 'json'], ['--json'], ['-ojson']]) {
      const j = cgfence(['audit', '--audit-log', file, ...args]);
      expect(j.status, j.stderr).toBe(0);
      expect(JSON.parse(j.stdout).container_id).toBe(id);
    }
  });

  it('formatTime: local date, time and offset; UTC with Z', () => {
    const d = new Date(Date.UTC(2026, 10, 30, 23, 59, 58, 7));
    expect(formatTime(d, { utc: true })).toBe('2026-11-30 23:59:58.007 Z');
    expect(formatTime(d)).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.007 [+-]\d\d:\d\d$/);
  });

  it('bash completion: valid bash, every listed flag accepted by its command', async () => {
    const script = cgfence(['completion', 'bash']);
    expect(script.status, script.stderr).toBe(0);
    const file = path.join(tmp, 'completion.bash');
    fs.writeFileSync(file, script.stdout);
    const check = spawnSync('bash', ['-n', file], { encoding: 'utf8' });
    expect(check.status, check.stderr).toBe(0);
    // What bash offers after `cgfence ps -`.
    const offered = spawnSync(
      'bash',
      ['-c', `source ${file}; COMP_WORDS=(cgfence ps -); COMP_CWORD=2; _cgfence; echo "\${COMPREPLY[*]}"`],
      { encoding: 'utf8' },
    );
    expect(offered.stdout.trim().split(' ')).toEqual(expect.arrayContaining(['-o', '--output', '--json', '--utc', '--socket']));
    const values = spawnSync(
      'bash',
      ['-c', `source ${file}; COMP_WORDS=(cgfence audit --type l); COMP_CWORD=3; _cgfence; echo "\${COMPREPLY[*]}"`],
      { encoding: 'utf8' },
    );
    expect(values.stdout.trim()).toBe('lifecycle');
    const valueFlags = new Set([
      '-o',
      '--output',
      '--containerd-socket',
      '--state-dir',
      '--audit-log',
      '--socket',
      '--cgroup-mode',
      '--pin-dir',
      '--fail-mode',
      '--metrics-address',
      '--spool-dir',
      '--config',
      '--container',
      '--namespace',
      '--type',
      '--action',
      '--since',
      '--tail',
      '--file',
      '--prefix-len4',
      '--prefix-len6',
      '--dir',
      '--runc-path',
      '--runc-conf',
      '--runc-conf-from',
      '--pod-namespace',
      '--pod-labels',
    ]);
    // Asynchronously, a few at a time: sixty synchronous spawns would stall the test worker.
    const cases = Object.entries(COMPLETION).flatMap(([cmd, c]) =>
      c.flags.map((flag) => [cmd, flag, ...(valueFlags.has(flag) ? ['x'] : []), '--help']),
    );
    const results: Array<{ args: string[]; code: number; stderr: string }> = [];
    for (let i = 0; i < cases.length; i += 6) {
      results.push(
        ...(await Promise.all(
          cases.slice(i, i + 6).map(
            (args) =>
              new Promise<{ args: string[]; code: number; stderr: string }>((resolve) => {
                execFile(BIN, args, { env: { ...process.env, CGFENCE_SOCKET: path.join(tmp, 'none.sock') } }, (err, _out, stderr) =>
                  resolve({ args, code: err ? Number(err.code ?? 99) : 0, stderr }),
                );
              }),
          ),
        )),
      );
    }
    expect(results.length).toBeGreaterThan(30);
    for (const r of results)
      expect({ args: r.args.join(' '), code: r.code, stderr: r.stderr }).toEqual({ args: r.args.join(' '), code: 0, stderr: '' });
  });

  it("uninstall keeps what does not look like cgfence's: a system directory, a state directory with foreign files", () => {
    const foreign = path.join(tmp, 'not-state');
    fs.mkdirSync(foreign, { recursive: true });
    fs.writeFileSync(path.join(foreign, 'precious.txt'), 'x');
    const r = cgfence([
      'uninstall',
      '--pin-dir',
      `/sys/fs/bpf/cgft-none-${process.pid}`,
      '--state-dir',
      foreign,
      '--spool-dir',
      '/var',
      '--runc-path',
      path.join(tmp, 'no-runc'),
      '--runc-conf',
      path.join(tmp, 'no.conf'),
      '--audit-log',
      path.join(tmp, 'a.log'),
    ]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^kept\s+state\s+\S*not-state \(does not look like cgfence's/m);
    expect(r.stdout).toMatch(/^kept\s+spool\s+\/var /m);
    expect(r.stdout).toMatch(/^absent\s+pins\s/m);
    expect(fs.existsSync(path.join(foreign, 'precious.txt'))).toBe(true);
    expect(fs.existsSync('/var')).toBe(true);
    const bad = cgfence(['uninstall', '--pin-dir', '/tmp/x']);
    expect(bad.status).toBe(1);
    expect(bad.stderr.trim()).toBe('cgfence uninstall: --pin-dir /tmp/x: expected a directory under /sys/fs/bpf/');
  });
});
