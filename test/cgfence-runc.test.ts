// cgfence-runc, the launcher containerd's shim runs instead of runc, as real processes: the
// launcher compiled from native/cgfence-runc, a shell script standing in for the real runc
// (it records its argv and writes the pid file on create), and a small `net` server standing
// in for the daemon's socket. The end-to-end tests run it under containerd with the real
// daemon; this pins down the launcher's own contract.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buildStrictC } from './helpers/kernel';

const repo = path.resolve(__dirname, '..');
let tmp: string;
let launcher: string;
let fakeRunc: string;
let record: string;
let sock: string;
let server: net.Server | null = null;
let requests: Record<string, unknown>[] = [];
let connections = 0;

/** What the fake daemon answers: a reply line (without "\n"), null to hang up without one, undefined to say nothing. */
let answer: (req: Record<string, unknown>) => string | null | undefined = () => '{"ok":true}';
/**
 * After its next reply the fake daemon closes that connection (a daemon that died, or one
 * that serves a single request per connection); otherwise, as the real one, it answers
 * every request line of a connection in order.
 */
let hangUpAfterReply = false;
/** A line the fake daemon sends unasked this long after its reply to prepare (the attach pushed at the hand-off). */
let pushAfterPrepare: { line: string; ms: number } | null = null;

const FAKE_RUNC = `#!/bin/sh
# Records each invocation: arguments separated by \\037, invocations by \\036.
for a in "$@"; do printf '%s\\037' "$a"; done >> "$FAKE_RUNC_RECORD"
printf '\\036' >> "$FAKE_RUNC_RECORD"
# Which process runs runc: the launcher's own (it became runc) or a child of it.
if [ -n "$FAKE_RUNC_PIDS" ]; then echo "$$ $PPID" >> "$FAKE_RUNC_PIDS"; fi
create=0; pidfile=""; prev=""
for a in "$@"; do
  case "$a" in create) create=1;; --pid-file=*) pidfile="\${a#--pid-file=}";; esac
  case "$prev" in --pid-file) pidfile="$a";; esac
  prev="$a"
done
if [ "$create" = 1 ] && [ -n "$pidfile" ] && [ "\${FAKE_RUNC_EXIT:-0}" = 0 ]; then
  printf '%s' "\${FAKE_RUNC_PID:-4242}" > "$pidfile"
fi
echo "fake runc stdout"
echo "fake runc stderr" >&2
exit "\${FAKE_RUNC_EXIT:-0}"
`;

interface Result {
  pid: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Asynchronous on purpose: the fake daemon lives in this event loop and must answer meanwhile. */
function run(args: string[], env: Record<string, string> = {}, cwd = tmp, bin = launcher): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, {
      cwd,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        CGFENCE_RUNC_CONFIG: path.join(tmp, 'no-such-runc.conf'),
        CGFENCE_SOCKET: sock,
        CGFENCE_REAL_RUNC: fakeRunc,
        CGFENCE_SPOOL_DIR: path.join(tmp, 'spool'),
        FAKE_RUNC_RECORD: record,
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ pid: child.pid!, code, stdout, stderr }));
  });
}

/** The fake runc's invocations since the last reset, argv[1..] each. */
function runcCalls(): string[][] {
  if (!fs.existsSync(record)) return [];
  return fs
    .readFileSync(record, 'utf8')
    .split('\x1e')
    .filter((s, i, all) => i < all.length - 1 || s !== '')
    .map((inv) => inv.split('\x1f').slice(0, -1));
}

function logLines(file: string): Record<string, unknown>[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));
}

function startDaemon(): Promise<void> {
  return new Promise((resolve) => {
    server = net.createServer((c) => {
      connections++;
      let buf = '';
      let closing = false;
      c.on('error', () => c.destroy());
      c.on('data', (d) => {
        if (closing) return;
        buf += d;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const req = JSON.parse(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
          requests.push(req);
          const reply = answer(req);
          if (reply === undefined) continue;
          if (reply === null || hangUpAfterReply) {
            closing = true;
            if (reply === null) c.destroy();
            else c.end(reply + '\n', () => c.destroy());
            return;
          }
          c.write(reply + '\n');
          const push = pushAfterPrepare;
          if (req.op === 'prepare' && push) setTimeout(() => !c.destroyed && c.write(push.line + '\n'), push.ms);
        }
      });
    });
    server.listen(sock, resolve);
  });
}

function stopDaemon(): Promise<void> {
  return new Promise((resolve) => {
    if (!server) return resolve();
    server.close(() => resolve());
    server = null;
  });
}

/** A create line the way go-runc builds it for the runc.v2 shim. */
function goRuncCreate(opts: { id?: string; bundle?: string; log?: string; format?: 'json' | 'text' } = {}) {
  const bundle = opts.bundle ?? path.join(tmp, 'bundle');
  const log = opts.log ?? path.join(tmp, 'log.json');
  return [
    '--root',
    path.join(tmp, 'runc-root'),
    '--log',
    log,
    '--log-format',
    opts.format ?? 'json',
    '--systemd-cgroup',
    '--rootless=false',
    'create',
    '--bundle',
    bundle,
    '--pid-file',
    path.join(bundle, 'init.pid'),
    '--console-socket',
    path.join(tmp, 'console.sock'),
    '--no-pivot',
    '--preserve-fds',
    '0',
    opts.id ?? 'c1',
  ];
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgfence-runc-test-'));
  launcher = path.join(tmp, 'cgfence-runc');
  const sources = fs
    .readdirSync(path.join(repo, 'native/cgfence-runc'))
    .filter((f) => f.endsWith('.c'))
    .map((f) => path.join(repo, 'native/cgfence-runc', f));
  buildStrictC(launcher, sources, ['-ljson-c']);
  fakeRunc = path.join(tmp, 'fake-runc');
  fs.writeFileSync(fakeRunc, FAKE_RUNC, { mode: 0o755 });
  record = path.join(tmp, 'runc-calls');
  sock = path.join(tmp, 'daemon.sock');
  fs.mkdirSync(path.join(tmp, 'bundle'));
});

afterAll(async () => {
  await stopDaemon();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

beforeEach(async () => {
  requests = [];
  connections = 0;
  answer = () => '{"ok":true}';
  hangUpAfterReply = false;
  pushAfterPrepare = null;
  fs.rmSync(record, { force: true });
  fs.rmSync(path.join(tmp, 'log.json'), { force: true });
  fs.rmSync(path.join(tmp, 'spool'), { recursive: true, force: true });
  fs.rmSync(path.join(tmp, 'bundle', 'init.pid'), { force: true });
  await startDaemon();
});

afterEach(async () => {
  await stopDaemon();
});

describe('pass-through', () => {
  for (const [sub, code] of [
    ['state', 0],
    ['start', 3],
    ['delete', 7],
  ] as const) {
    it(`${sub}: same argv to runc, exit code ${code} propagated, daemon untouched`, async () => {
      const args = [
        '--root',
        '/run/containerd/runc/k8s.io',
        '--log',
        path.join(tmp, 'log.json'),
        '--log-format',
        'json',
        sub,
        ...(sub === 'delete' ? ['--force'] : []),
        'c1',
      ];
      const r = await run(args, { FAKE_RUNC_EXIT: String(code) });
      expect(r.code).toBe(code);
      expect(runcCalls()).toEqual([args]);
      expect(r.stdout).toBe('fake runc stdout\n');
      expect(r.stderr).toBe('fake runc stderr\n');
      expect(connections).toBe(0);
    });
  }

  it('passes through no arguments, --version, --help and create --help', async () => {
    for (const args of [[], ['--version'], ['--help'], ['--root', 'x', 'create', '--help']]) {
      fs.rmSync(record, { force: true });
      const r = await run(args);
      expect(r.code).toBe(0);
      expect(runcCalls()).toEqual([args]);
    }
    expect(connections).toBe(0);
  });

  it('finds runc in PATH, skipping a runc that is the launcher itself', async () => {
    const self = path.join(tmp, 'path-self');
    const real = path.join(tmp, 'path-real');
    fs.mkdirSync(self);
    fs.mkdirSync(real);
    fs.symlinkSync(launcher, path.join(self, 'runc'));
    fs.copyFileSync(fakeRunc, path.join(real, 'runc'));
    fs.chmodSync(path.join(real, 'runc'), 0o755);
    const r = await run(['state', 'c1'], { CGFENCE_REAL_RUNC: '', PATH: `${self}:${real}:/usr/bin:/bin` });
    expect(r.code).toBe(0);
    expect(runcCalls()).toEqual([['state', 'c1']]);

    const loop = await run(['state', 'c1'], { CGFENCE_REAL_RUNC: '', PATH: `${self}:/nonexistent` });
    expect(loop.code).toBe(127);
    expect(loop.stderr).toMatch(/^cgfence: the real runc resolves to cgfence-runc itself/);
  });
});

describe('create', () => {
  it('prepare, runc create with the identical argv, attach with the init pid', async () => {
    const args = goRuncCreate();
    const r = await run(args, { FAKE_RUNC_PID: '31337' });
    expect(r.stderr).toBe('fake runc stderr\n');
    expect(r.code).toBe(0);
    expect(runcCalls()).toEqual([args]);
    const common = { id: 'c1', bundle: path.join(tmp, 'bundle'), runcRoot: path.join(tmp, 'runc-root') };
    // push: this launcher takes the attach's outcome unasked when the daemon offers it (this one does not).
    expect(requests).toEqual([
      { op: 'prepare', ...common, push: true },
      { op: 'attach', ...common, pid: 31337 },
    ]);
    // One connection for both: the daemon answers a connection's requests in order.
    expect(connections).toBe(1);
    expect(fs.existsSync(path.join(tmp, 'log.json'))).toBe(false);
  });

  describe('the attach outcome pushed at the seccomp listener hand-off', () => {
    const offered = (req: Record<string, unknown>) => (req.op === 'prepare' ? '{"ok":true,"fence":true,"push":true}' : '{"ok":true}');
    const pushed = (o: Record<string, unknown>) => JSON.stringify({ ok: true, fence: true, pushed: 'attach', ...o });

    it('taken without asking when it names the pid runc wrote', async () => {
      answer = offered;
      pushAfterPrepare = { line: pushed({ pid: 31337 }), ms: 0 };
      const r = await run(goRuncCreate(), { FAKE_RUNC_PID: '31337' });
      expect(r.stderr).toBe('fake runc stderr\n');
      expect(r.code).toBe(0);
      expect(requests.map((q) => q.op)).toEqual(['prepare']);
      expect(runcCalls()).toHaveLength(1);
    });

    it('in the same read as the reply to prepare', async () => {
      answer = (req) => (req.op === 'prepare' ? `{"ok":true,"push":true}\n${pushed({ pid: 4242 })}` : '{"ok":true}');
      const r = await run(goRuncCreate());
      expect(r.code).toBe(0);
      expect(requests.map((q) => q.op)).toEqual(['prepare']);
    });

    it('a pushed refusal: the container is deleted, exit 1, the reason reported', async () => {
      answer = offered;
      pushAfterPrepare = { line: JSON.stringify({ ok: false, error: 'no cgroup for pid 4242', pushed: 'attach' }), ms: 0 };
      const args = goRuncCreate();
      const r = await run(args);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe('fake runc stderr\ncgfence: no cgroup for pid 4242\n');
      expect(runcCalls()).toEqual([args, [...args.slice(0, args.indexOf('create')), 'delete', '--force', 'c1']]);
      expect(requests.map((q) => q.op)).toEqual(['prepare']);
    });

    it('an outcome for another pid than the pid file names: the launcher asks with its own, and the answer decides', async () => {
      answer = (req) =>
        req.op === 'prepare' ? '{"ok":true,"push":true}' : JSON.stringify({ ok: false, error: `pid ${String(req.pid)} is not 999` });
      pushAfterPrepare = { line: pushed({ pid: 999 }), ms: 0 };
      const r = await run(goRuncCreate());
      expect(r.code).toBe(1);
      expect(requests.map((q) => [q.op, q.pid])).toEqual([
        ['prepare', undefined],
        ['attach', 4242],
      ]);
      expect(r.stderr).toContain('cgfence: pid 4242 is not 999');
      expect(runcCalls()).toHaveLength(2); // create, delete
    });

    it('no outcome within 2 s: asks for the attach; an outcome that comes after the request is taken too', async () => {
      answer = (req) => (req.op === 'prepare' ? '{"ok":true,"push":true}' : '{"ok":true,"answered":true}');
      const t0 = Date.now();
      let r = await run(goRuncCreate());
      expect(r.code).toBe(0);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1900);
      expect(requests.map((q) => [q.op, q.pid])).toEqual([
        ['prepare', undefined],
        ['attach', 4242],
      ]);

      requests = [];
      // The attach request is never answered; the outcome pushed after it decides.
      pushAfterPrepare = { line: pushed({ pid: 4242 }), ms: 2500 };
      answer = (req) => (req.op === 'prepare' ? '{"ok":true,"push":true}' : undefined);
      r = await run(goRuncCreate());
      expect(r.code, r.stderr).toBe(0);
      expect(requests.map((q) => q.op)).toEqual(['prepare', 'attach']);
    });

    it('a line that is neither the outcome nor a reply to anything: deleted, exit 1', async () => {
      answer = offered;
      pushAfterPrepare = { line: '{"ok":true,"fence":true}', ms: 0 };
      const r = await run(goRuncCreate());
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('a reply to no request came instead of the attach');
      expect(runcCalls()).toHaveLength(2);
    });

    it('a daemon that went away before pushing: the attach goes to a new connection', async () => {
      answer = offered;
      hangUpAfterReply = true;
      const r = await run(goRuncCreate());
      expect(r.code, r.stderr).toBe(0);
      expect(requests.map((q) => q.op)).toEqual(['prepare', 'attach']);
      expect(connections).toBe(2);
    });
  });

  it('a daemon that closes the connection after prepare (restarted, or one request per connection) gets the attach on a new one', async () => {
    hangUpAfterReply = true;
    const args = goRuncCreate();
    const r = await run(args, { FAKE_RUNC_PID: '31337' });
    expect(r.stderr).toBe('fake runc stderr\n');
    expect(r.code).toBe(0);
    expect(runcCalls()).toEqual([args]);
    expect(requests.map((q) => [q.op, q.pid])).toEqual([
      ['prepare', undefined],
      ['attach', 31337],
    ]);
    expect(connections).toBe(2);
  });

  it('prepare answering "fence":false: runc create, no attach (the daemon kept nothing to attach)', async () => {
    answer = () => '{"ok":true,"fence":false}';
    const args = goRuncCreate();
    const r = await run(args);
    expect(r.code).toBe(0);
    expect(runcCalls()).toEqual([args]);
    expect(requests.map((q) => q.op)).toEqual(['prepare']);
  });

  it('a create that needs no attach becomes runc (no fork, no wait); one that is fenced runs runc as its child', async () => {
    const pids = path.join(tmp, 'runc-pids');
    const runcProcess = async (env: Record<string, string>) => {
      fs.rmSync(pids, { force: true });
      const r = await run(goRuncCreate(), { FAKE_RUNC_PIDS: pids, ...env });
      expect(r.code, r.stderr).toBe(0);
      const [self, parent] = fs.readFileSync(pids, 'utf8').trim().split(' ').map(Number);
      return self === r.pid ? 'the launcher itself' : parent === r.pid ? 'a child' : `pid ${self}, parent ${parent}`;
    };
    answer = () => '{"ok":true,"fence":false}';
    expect(await runcProcess({})).toBe('the launcher itself');
    answer = () => '{"ok":true}';
    expect(await runcProcess({})).toBe('a child');
    expect(requests.map((q) => q.op)).toEqual(['prepare', 'prepare', 'attach']);
    await stopDaemon();
    expect(await runcProcess({ CGFENCE_FAIL_MODE: 'open' })).toBe('the launcher itself');
    // runc not found: the exec fails, and says so as a failed runc_run would.
    fs.rmSync(pids, { force: true });
    const missing = await run(goRuncCreate(), { CGFENCE_FAIL_MODE: 'open', CGFENCE_REAL_RUNC: path.join(tmp, 'no-such-runc') });
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain('no-such-runc');
  });

  it('anything but an explicit "fence":false keeps the attach', async () => {
    for (const reply of [
      '{"ok":true}',
      '{"ok":true,"fence":true}',
      '{"ok":true,"fence":"false"}',
      '{"ok":true,"fence":0}',
      '{"ok":true,"fence":null}',
    ]) {
      requests = [];
      fs.rmSync(record, { force: true });
      answer = () => reply;
      const r = await run(goRuncCreate());
      expect(r.code, reply).toBe(0);
      expect(
        requests.map((q) => q.op),
        reply,
      ).toEqual(['prepare', 'attach']);
    }
  });

  it('makes a relative bundle absolute, defaults it to the cwd, and sends an empty root when none', async () => {
    const b = path.join(tmp, 'bundle');
    let r = await run(['create', '--bundle', 'bundle', '--pid-file', 'bundle/init.pid', 'c2']);
    expect(r.code).toBe(0);
    expect(requests[0]).toEqual({ op: 'prepare', id: 'c2', bundle: b, runcRoot: '', push: true });

    requests = [];
    r = await run(['create', '--pid-file=init.pid', 'c3'], {}, b);
    expect(r.code).toBe(0);
    expect(requests.map((q) => [q.op, q.bundle, q.pid])).toEqual([
      ['prepare', b, undefined],
      ['attach', b, 4242],
    ]);
  });

  it('accepts flags after the id and -b=, as runc does', async () => {
    const b = path.join(tmp, 'bundle');
    const args = ['create', 'c4', `-b=${b}`, '--pid-file', path.join(b, 'init.pid')];
    const r = await run(args);
    expect(r.code).toBe(0);
    expect(requests.map((q) => q.id)).toEqual(['c4', 'c4']);
    expect(runcCalls()).toEqual([args]);
  });

  it('prepare refused: runc never runs, the reason is on stderr and the last error of the json log', async () => {
    answer = () => JSON.stringify({ ok: false, error: 'annotation cgfence.io/exec-allow: "bin/sh" is not an absolute path' });
    const log = path.join(tmp, 'log.json');
    fs.writeFileSync(log, '{"level":"info","msg":"earlier","time":"2026-01-01T00:00:00Z"}\n');
    const r = await run(goRuncCreate());
    const want = 'cgfence: annotation cgfence.io/exec-allow: "bin/sh" is not an absolute path';
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(want + '\n');
    expect(runcCalls()).toEqual([]);
    expect(requests.map((q) => q.op)).toEqual(['prepare']);
    const lines = logLines(log);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ level: 'error', msg: want });
    expect(Object.keys(lines[1])).toEqual(['level', 'msg', 'time']);
    // The shim decodes time into a Go time.Time: it must be RFC 3339.
    expect(lines[1].time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
    expect(Math.abs(Date.parse(lines[1].time as string) - Date.now())).toBeLessThan(60000);
  });

  it('prepare refused with --log-format text: a logrus text line', async () => {
    answer = () => JSON.stringify({ ok: false, error: 'bad "value"' });
    const log = path.join(tmp, 'log.txt');
    const r = await run(goRuncCreate({ log, format: 'text' }));
    expect(r.code).toBe(1);
    expect(fs.readFileSync(log, 'utf8')).toMatch(/^time="\d{4}-\d\d-\d\dT[\d:.]+Z" level=error msg="cgfence: bad \\"value\\""\n$/);
  });

  it('decodes the JSON escapes of the daemon error (\\" \\\\ \\n \\t \\uXXXX, surrogate pairs)', async () => {
    answer = () => String.raw`{"ok":false,"error":"q\"b\\n\nt\tu\u00e9\u2603\ud83d\ude00 lone\ud800 end"}`;
    const r = await run(goRuncCreate());
    const want = 'cgfence: q"b\\n\nt\tué☃😀 lone\ufffd end';
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(want + '\n');
    expect(logLines(path.join(tmp, 'log.json'))[0].msg).toBe(want);
  });

  it('escapes an id and a bundle with quotes, backslashes and control characters', async () => {
    const id = 'we"ird\\id\x01';
    const bundle = path.join(tmp, 'bun"dle\\ é');
    fs.mkdirSync(bundle, { recursive: true });
    const r = await run(goRuncCreate({ id, bundle }));
    expect(r.code).toBe(0);
    expect(requests.map((q) => [q.op, q.id, q.bundle])).toEqual([
      ['prepare', id, bundle],
      ['attach', id, bundle],
    ]);
  });

  it('attach refused: the container is deleted with the same global flags, exit 1', async () => {
    answer = (req) =>
      req.op === 'attach' ? JSON.stringify({ ok: false, error: 'cannot attach exec fence: no cgroup' }) : '{"ok":true,"policy":{}}';
    const args = goRuncCreate();
    const r = await run(args);
    expect(r.code).toBe(1);
    expect(runcCalls()).toEqual([args, [...args.slice(0, args.indexOf('create')), 'delete', '--force', 'c1']]);
    expect(requests.map((q) => q.op)).toEqual(['prepare', 'attach']);
    // runc create's own output passes through; runc delete's goes to /dev/null.
    expect(r.stdout).toBe('fake runc stdout\n');
    expect(r.stderr).toBe('fake runc stderr\ncgfence: cannot attach exec fence: no cgroup\n');
    const last = logLines(path.join(tmp, 'log.json')).at(-1);
    expect(last).toMatchObject({ level: 'error', msg: 'cgfence: cannot attach exec fence: no cgroup' });
  });

  it('daemon gone between prepare and attach: deleted, fail-closed even in fail-open mode', async () => {
    answer = (req) => {
      // Closed before the reply goes out, so the attach cannot reach a listener that is
      // still draining its backlog (that would be a hang-up, not an unreachable daemon).
      if (req.op === 'prepare') {
        server?.close();
        hangUpAfterReply = true;
      }
      return '{"ok":true}';
    };
    const args = goRuncCreate();
    const r = await run(args, { CGFENCE_FAIL_MODE: 'open' });
    expect(r.code).toBe(1);
    expect(runcCalls()).toEqual([args, [...args.slice(0, args.indexOf('create')), 'delete', '--force', 'c1']]);
    expect(r.stderr).toContain(`cgfence: daemon unreachable at ${sock} (`);
    expect(r.stderr).toContain('after runc create; removed container c1');
    expect(fs.existsSync(path.join(tmp, 'spool'))).toBe(false);
  });

  it('runc create fails: its exit status comes back, nothing attached', async () => {
    const r = await run(goRuncCreate(), { FAKE_RUNC_EXIT: '5' });
    expect(r.code).toBe(5);
    expect(requests.map((q) => q.op)).toEqual(['prepare']);
    expect(runcCalls()).toHaveLength(1);
  });

  it('a runc that the kernel will not execute: the exec error is the reason, nothing attached', async () => {
    // Executable by its mode bits (runc_resolve accepts it) but neither ELF nor a script: the
    // exec in the launcher's child fails with ENOEXEC, which only that child can see.
    const notRunc = path.join(tmp, 'not-an-executable');
    fs.writeFileSync(notRunc, 'plain text\n', { mode: 0o755 });
    const r = await run(goRuncCreate(), { CGFENCE_REAL_RUNC: notRunc });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`cgfence: cannot run the real runc ${notRunc} (Exec format error)\n`);
    expect(requests.map((q) => q.op)).toEqual(['prepare']);
  });

  it('runc goes with the launcher: killed while runc creates, runc is killed too (parent-death signal)', async () => {
    const pidFile = path.join(tmp, 'slow-runc.pid');
    const slowRunc = path.join(tmp, 'slow-runc');
    // exec: the shell becomes sleep, so the pid written is the process the signal must reach.
    fs.writeFileSync(slowRunc, `#!/bin/sh\necho $$ > ${pidFile}.tmp && mv ${pidFile}.tmp ${pidFile}\nexec sleep 60\n`, { mode: 0o755 });
    fs.rmSync(pidFile, { force: true });
    const child = spawn(launcher, goRuncCreate({ id: 'orphan' }), {
      cwd: tmp,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        CGFENCE_SOCKET: sock,
        CGFENCE_REAL_RUNC: slowRunc,
        CGFENCE_RUNC_CONFIG: path.join(tmp, 'none'),
      },
      stdio: 'ignore',
    });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    let runcPid = 0;
    try {
      for (let i = 0; i < 200 && !runcPid; i++) {
        await new Promise((r) => setTimeout(r, 25));
        if (fs.existsSync(pidFile)) runcPid = Number(fs.readFileSync(pidFile, 'utf8'));
      }
      expect(runcPid).toBeGreaterThan(0);
      expect(fs.readFileSync(`/proc/${runcPid}/stat`, 'utf8').split(' ')[3]).toBe(String(child.pid));
      child.kill('SIGKILL');
      await exited;
      let alive = true;
      for (let i = 0; i < 200 && alive; i++) {
        await new Promise((r) => setTimeout(r, 25));
        alive = fs.existsSync(`/proc/${runcPid}`) && !/^\S+ \(\S+\) Z/.test(fs.readFileSync(`/proc/${runcPid}/stat`, 'utf8'));
      }
      expect(alive).toBe(false);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      if (runcPid) {
        try {
          process.kill(runcPid, 'SIGKILL');
        } catch {
          /* gone, as it should be */
        }
      }
    }
  });

  it('a daemon that hangs up without a reply is a failure, whatever the fail mode', async () => {
    answer = () => null;
    const r = await run(goRuncCreate(), { CGFENCE_FAIL_MODE: 'open' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^cgfence: daemon at .* gave no usable answer to prepare \(the daemon closed the connection without replying\); refusing to create c1\n$/,
    );
    expect(runcCalls()).toEqual([]);
  });

  it('refuses a create option it cannot read, rather than guess the container id', async () => {
    const r = await run(['--root', 'r', 'create', '--frobnicate', 'x', 'c1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cgfence: runc create would not accept this command line \(flag provided but not defined: -frobnicate\)/);
    expect(runcCalls()).toEqual([]);
    expect(connections).toBe(0);
  });

  it('refuses a create without --pid-file before anything is made', async () => {
    const r = await run(['create', '--bundle', path.join(tmp, 'bundle'), 'c1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/without --pid-file/);
    expect(connections).toBe(0);
    expect(runcCalls()).toEqual([]);
  });
});

describe('daemon unreachable', () => {
  beforeEach(async () => {
    await stopDaemon();
  });

  it('fail-closed (default): refused, runc never runs, the reason is in the log', async () => {
    const r = await run(goRuncCreate());
    const want = new RegExp(
      `^cgfence: daemon unreachable at ${sock.replace(/[.]/g, '\\.')} \\(No such file or directory\\); refusing to create c1 \\(fail-closed\\)$`,
    );
    expect(r.code).toBe(1);
    expect(r.stderr.trimEnd()).toMatch(want);
    expect(runcCalls()).toEqual([]);
    expect(logLines(path.join(tmp, 'log.json'))[0]).toMatchObject({ level: 'error' });
    expect(logLines(path.join(tmp, 'log.json'))[0].msg).toMatch(want);
  });

  it('fail-closed on ECONNREFUSED (a stale socket file)', async () => {
    const stale = path.join(tmp, 'stale.sock');
    fs.rmSync(stale, { force: true });
    // Bound but not listening, the socket file a crashed daemon leaves behind.
    execFileSync('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(stale)})`]);
    const r = await run(goRuncCreate(), { CGFENCE_SOCKET: stale });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('(Connection refused); refusing to create c1 (fail-closed)');
  });

  it('fail-open: a spool record, a warning in the log, then runc create as asked', async () => {
    const args = goRuncCreate();
    const r = await run(args, { CGFENCE_FAIL_MODE: 'open', CGFENCE_SPOOL_DIR: path.join(tmp, 'spool', 'deep') });
    expect(r.code).toBe(0);
    expect(runcCalls()).toEqual([args]);
    const spool = logLines(path.join(tmp, 'spool', 'deep', 'fail-open.jsonl'));
    expect(spool).toHaveLength(1);
    expect(spool[0]).toEqual({
      ts: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/),
      type: 'agent',
      action: 'fail-open',
      container_id: 'c1',
      bundle: path.join(tmp, 'bundle'),
      reason: `daemon unreachable at ${sock} (No such file or directory)`,
    });
    const log = logLines(path.join(tmp, 'log.json'));
    expect(log).toHaveLength(1);
    expect(log[0]).toMatchObject({ level: 'warning', msg: expect.stringContaining('creating c1 unfenced (fail-open)') });
    expect(r.stderr).toContain('creating c1 unfenced (fail-open)');
  });

  it('fail-open that cannot write its record refuses instead', async () => {
    const file = path.join(tmp, 'not-a-dir');
    fs.writeFileSync(file, '');
    const r = await run(goRuncCreate(), { CGFENCE_FAIL_MODE: 'open', CGFENCE_SPOOL_DIR: path.join(file, 'spool') });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/the fail-open record could not be written/);
    expect(runcCalls()).toEqual([]);
  });
});

describe('settings file', () => {
  it('reads socket, runc, fail_mode and spool_dir from $CGFENCE_RUNC_CONFIG; the environment wins', async () => {
    await stopDaemon();
    const conf = path.join(tmp, 'runc.conf');
    fs.writeFileSync(
      conf,
      [
        '# cgfence-runc settings',
        `socket = ${path.join(tmp, 'nowhere.sock')}`,
        `runc="${fakeRunc}"`,
        'fail_mode=open',
        `spool_dir=${path.join(tmp, 'spool')}`,
        'future_key=ignored',
        '',
      ].join('\n'),
    );
    const env = { CGFENCE_RUNC_CONFIG: conf, CGFENCE_SOCKET: '', CGFENCE_REAL_RUNC: '', CGFENCE_SPOOL_DIR: '' };
    let r = await run(goRuncCreate(), env);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`daemon unreachable at ${path.join(tmp, 'nowhere.sock')}`);
    expect(fs.existsSync(path.join(tmp, 'spool', 'fail-open.jsonl'))).toBe(true);
    expect(runcCalls()).toHaveLength(1);

    r = await run(goRuncCreate(), { ...env, CGFENCE_FAIL_MODE: 'closed' });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('(fail-closed)');

    r = await run(goRuncCreate(), { ...env, CGFENCE_FAIL_MODE: 'opne' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^cgfence: fail_mode is "opne", expected "closed" or "open"/);
  });
});

describe('command lines runc reads as a create (issue 18)', () => {
  const pidFile = () => path.join(tmp, 'bundle', 'init.pid');
  it('help and version flags given a value are read as runc reads them: a create, fenced', async () => {
    for (const flag of ['-h=0', '--help=false', '-v=f', '--version=0']) {
      fs.rmSync(record, { force: true });
      requests = [];
      const args = [flag, 'create', '--pid-file', pidFile(), 'c1'];
      const r = await run(args, {}, path.join(tmp, 'bundle'));
      expect(r.code, r.stderr).toBe(0);
      expect(requests.map((q) => [q.op, q.id, q.bundle])).toEqual([
        ['prepare', 'c1', path.join(tmp, 'bundle')],
        ['attach', 'c1', path.join(tmp, 'bundle')],
      ]);
      expect(runcCalls()).toEqual([args]);
    }
  });

  it('a value flag last takes the first positional, as urfave/cli reorders it', async () => {
    const other = path.join(tmp, 'other-bundle');
    fs.mkdirSync(other, { recursive: true });
    const r = await run(['create', '--pid-file', pidFile(), other, 'c1', '--bundle']);
    expect(r.code, r.stderr).toBe(0);
    expect(requests[0]).toMatchObject({ op: 'prepare', id: 'c1', bundle: other });
  });

  it('unknown flags and -v before "--" become the container id, as in runc', async () => {
    for (const flag of ['-v', '--version', '-pidfd-socket']) {
      requests = [];
      const r = await run(['create', '--pid-file', pidFile(), flag, '--'], {}, path.join(tmp, 'bundle'));
      expect(r.code, r.stderr).toBe(0);
      expect(requests[0]).toMatchObject({ op: 'prepare', id: flag });
    }
  });

  it('refuses, never passes through: restore, an unknown command, a create runc would reject, a usage error naming create', async () => {
    const log = path.join(tmp, 'log.json');
    const cases: Array<[string[], RegExp]> = [
      [['restore', '--image-path', 'i', 'c1'], /runc restore is not supported/],
      [['crate', 'c1'], /unknown runc command "crate"/],
      [['create', '--pid-file', pidFile(), 'c1', 'c2'], /takes exactly one container id, this line has 2/],
      [['create', '--pid-file', pidFile(), '-b', 'x', '--bundle', 'y', 'c1'], /Cannot use two forms of the same flag/],
      [['create', '--pid-file', pidFile(), '--preserve-fds=0x1', 'c1'], /not a plain decimal count/],
      [['create', '--pid-file', pidFile(), '---bundle', 'x', 'c1'], /bad flag syntax: ---bundle/],
      [
        ['--frobnicate', 'create', 'c1'],
        /would not accept this command line \(flag provided but not defined: -frobnicate\), and it names create/,
      ],
      [['create', '--pid-file', pidFile(), '--help=maybe', 'c1'], /invalid boolean value "maybe" for -help/],
    ];
    for (const [args, want] of cases) {
      fs.rmSync(log, { force: true });
      const r = await run(['--log', log, '--log-format', 'json', ...args]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(want);
      expect(logLines(log).at(-1)).toMatchObject({ level: 'error', msg: expect.stringMatching(want) });
    }
    expect(runcCalls()).toEqual([]);
    expect(connections).toBe(0);
  });

  it('passes through runc help for a command, and other commands with flags it does not know', async () => {
    for (const args of [
      ['run', '-h'],
      ['create', '--help=true'],
      ['help', 'create'],
      ['exec', '--frobnicate', 'c1'],
      ['-v=1', 'create', 'c1'],
    ]) {
      fs.rmSync(record, { force: true });
      const r = await run(args);
      expect(r.code, args.join(' ')).toBe(0);
      expect(runcCalls()).toEqual([args]);
    }
    expect(connections).toBe(0);
  });
});

describe('strict daemon replies', () => {
  it('a reply that only starts like a yes is no answer: refused, runc never runs', async () => {
    for (const reply of ['{"ok":true,garbage', '{"ok":true} {"ok":false}', "{'ok':true}", '{"ok":1}']) {
      answer = () => reply;
      const r = await run(goRuncCreate());
      expect(r.code, reply).toBe(1);
      expect(r.stderr).toMatch(/gave no usable answer to prepare \(unexpected reply/);
    }
    expect(runcCalls()).toEqual([]);
  });

  it('takes a refusal whatever the key order', async () => {
    answer = () => '{"error":"no \\"way\\"","ok":false}';
    const r = await run(goRuncCreate());
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('cgfence: no "way"\n');
  });
});

describe('settings file errors', () => {
  it('are reported with the file and line, never cut or skipped: creates and pass-throughs are refused', async () => {
    const conf = path.join(tmp, 'bad-runc.conf');
    const cases: Array<[string, RegExp]> = [
      [`socket=/ru${'x'.repeat(70_000)}\nfail_mode=open\n`, /bad-runc.conf is larger than 65536 bytes/],
      ['socket="/run/x\nfail_mode=open\n', /bad-runc.conf line 1: socket has an unterminated quote/],
      ['# ok\nthis is not a setting\n', /bad-runc.conf line 2: expected KEY=VALUE/],
      ['fail_mode=open\nfail_mode=closed\n', /bad-runc.conf line 2: fail_mode is set twice/],
      ['socket=/run/a\0b\n', /a NUL byte is not text/],
    ];
    for (const [text, want] of cases) {
      fs.writeFileSync(conf, text);
      let r = await run(goRuncCreate(), { CGFENCE_RUNC_CONFIG: conf, CGFENCE_SOCKET: '', CGFENCE_FAIL_MODE: '' });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(want);
      r = await run(['state', 'c1'], { CGFENCE_RUNC_CONFIG: conf, CGFENCE_REAL_RUNC: '' });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(want);
    }
    expect(runcCalls()).toEqual([]);
    expect(connections).toBe(0);
  });
});

describe('containers that ask for nothing (issue 14, deliverable 6)', () => {
  const plain = () => path.join(tmp, 'plain-bundle');
  const hint = () => path.join(tmp, 'launcher-node.conf');
  const create = () => ['create', '--bundle', plain(), '--pid-file', path.join(plain(), 'init.pid'), 'c1'];
  beforeEach(() => {
    fs.mkdirSync(plain(), { recursive: true });
    fs.writeFileSync(
      path.join(plain(), 'config.json'),
      JSON.stringify({ ociVersion: '1.0.2', process: { args: ['sh'] }, annotations: { 'io.example/x': 'y' } }),
    );
    fs.writeFileSync(hint(), '# written by the cgfence daemon\ndefault_profile=\n');
  });

  it('go straight to runc when the daemon says the node has no defaultProfile', async () => {
    const r = await run(create(), { CGFENCE_NODE_HINT: hint() });
    expect(r.code, r.stderr).toBe(0);
    expect(runcCalls()).toEqual([create()]);
    expect(connections).toBe(0);
  });

  it('ask the daemon when the node has a defaultProfile, the note is missing or unreadable, or the bundle is annotated', async () => {
    const variants: Array<() => Record<string, string>> = [
      () => {
        fs.writeFileSync(hint(), 'default_profile=baseline\n');
        return { CGFENCE_NODE_HINT: hint() };
      },
      () => ({ CGFENCE_NODE_HINT: path.join(tmp, 'no-such-hint.conf') }),
      () => {
        fs.writeFileSync(hint(), 'default_profile=\ndefault_profile=\n');
        return { CGFENCE_NODE_HINT: hint() };
      },
      () => {
        fs.writeFileSync(
          path.join(plain(), 'config.json'),
          JSON.stringify({ ociVersion: '1.0.2', Annotations: { 'cgfence.io/mode': 'learn' } }),
        );
        return { CGFENCE_NODE_HINT: hint() };
      },
      () => {
        fs.writeFileSync(path.join(plain(), 'config.json'), '{"annotations":{}');
        return { CGFENCE_NODE_HINT: hint() };
      },
      // The bytes "cgfence.io/" anywhere send the create to the daemon unparsed (the daemon reads it)...
      () => {
        fs.writeFileSync(
          path.join(plain(), 'config.json'),
          JSON.stringify({ ociVersion: '1.0.2', process: { args: ['sh'], env: ['X=cgfence.io/x'] }, annotations: {} }),
        );
        fs.writeFileSync(hint(), 'default_profile=\n');
        return { CGFENCE_NODE_HINT: hint() };
      },
      // ...and a key without those bytes is still found by the parse: "\u002e" is the dot.
      () => {
        fs.writeFileSync(path.join(plain(), 'config.json'), '{"ociVersion":"1.0.2","annotations":{"cgfence\\u002eio/mode":"learn"}}');
        fs.writeFileSync(hint(), 'default_profile=\n');
        return { CGFENCE_NODE_HINT: hint() };
      },
    ];
    for (const v of variants) {
      requests = [];
      const r = await run(create(), v());
      expect(r.code, r.stderr).toBe(0);
      expect(requests.map((q) => q.op)).toEqual(['prepare', 'attach']);
    }
  });
});
