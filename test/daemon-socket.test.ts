// The daemon's socket against bad clients: root-only, and every malformed, oversized or
// never-finished request is refused or dropped while fenced containers keep starting and
// their exec fences keep deciding.
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_REQUEST_BYTES } from '../src/daemon/protocol';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { alive, daemonPid as daemonPidOf } from './helpers/daemon-restart';
import { cid, cli, runFenced, sandboxDir, waitFor } from './helpers/sandbox';

const dir = sandboxDir('sock');
let p: SandboxPaths;
const ALLOW_SH = { 'cgfence.io/exec-allow': '/bin/sh' };

beforeAll(async () => {
  p = await sandboxUp(dir);
});

afterAll(async () => {
  await sandboxDown(dir).catch((e) => console.error(e));
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Exchange {
  replies: Array<{ ok: boolean; error?: string; [k: string]: unknown }>;
  closedByServer: boolean;
}

/**
 * Sends raw bytes and collects reply lines until the daemon closes the connection or
 * `expect` replies have come (then we close).
 */
function exchange(payload: string | Buffer, expectReplies = Infinity): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const c = net.connect(p.socket);
    const replies: Exchange['replies'] = [];
    let buf = '';
    let weClosed = false;
    // Generous: only a daemon that hangs on a bad client gets here.
    const guard = setTimeout(() => {
      c.destroy();
      reject(new Error(`no answer to ${String(payload).slice(0, 80)}`));
    }, 60_000);
    c.on('connect', () => c.write(payload));
    c.on('data', (d) => {
      buf += d.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        replies.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
      }
      if (replies.length >= expectReplies) {
        weClosed = true;
        c.end();
      }
    });
    c.on('error', () => {
      /* EPIPE when the daemon drops us mid-write: the close tells */
    });
    c.on('close', () => {
      clearTimeout(guard);
      resolve({ replies, closedByServer: !weClosed });
    });
  });
}

async function refusedAndDropped(payload: string | Buffer, error: RegExp): Promise<void> {
  const r = await exchange(payload);
  expect(r.closedByServer).toBe(true);
  expect(r.replies).toHaveLength(1);
  expect(r.replies[0].ok).toBe(false);
  expect(r.replies[0].error).toMatch(error);
}

const daemonPid = () => daemonPidOf(p);
const daemonAlive = () => alive(daemonPid());

/** A fenced container starts, an allowed program runs and a forbidden one is killed. */
function fencesStillWork(tag: string): void {
  const ok = runFenced(p, cid(`${tag}-ok`), ALLOW_SH, ['/bin/sh', '-c', 'echo ALLOWED-RAN']);
  expect(ok.status, ok.stderr).toBe(0);
  expect(ok.stdout).toContain('ALLOWED-RAN');
  const denied = runFenced(p, cid(`${tag}-deny`), ALLOW_SH, ['/bin/sh', '-c', '/usr/local/bin/tool-a echo FORBIDDEN-RAN; echo "rc=$?"']);
  expect(denied.status, denied.stderr).toBe(0);
  expect(denied.stdout).not.toContain('FORBIDDEN-RAN');
  // EACCES from execve (the seccomp-notify path) or SIGKILL before it runs (the BPF path).
  expect(denied.stdout).toMatch(/rc=(126|137)/);
}

describe('the daemon socket is root-only', () => {
  it('is a socket, mode 0600, owned by root', () => {
    const st = fs.statSync(p.socket);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.uid).toBe(0);
    expect(st.gid).toBe(0);
  });

  it('refuses a connection from an unprivileged user', () => {
    // Open the directory to everyone for a moment, so that only the socket's own mode stands in the way.
    const dirMode = fs.statSync(p.dir).mode & 0o777;
    fs.chmodSync(p.dir, 0o711);
    try {
      const script = `require('node:net').connect(${JSON.stringify(p.socket)}).on('connect', () => { console.log('CONNECTED'); process.exit(0); }).on('error', (e) => { console.log(e.code); process.exit(0); });`;
      const r = spawnSync(process.execPath, ['-e', script], { uid: 65534, gid: 65534, encoding: 'utf8', timeout: 30_000 });
      expect(r.stdout.trim(), r.stderr).toBe('EACCES');
    } finally {
      fs.chmodSync(p.dir, dirMode);
    }
  });
});

describe('bad requests are refused, one by one', () => {
  it('malformed JSON', async () => {
    await refusedAndDropped('{"op": "status"\n', /^request is not valid JSON$/);
    await refusedAndDropped('\u0000\u00ff garbage\n', /^request is not valid JSON$/);
  });

  it('JSON that is not an object', async () => {
    for (const v of ['[1,2]', '42', '"status"', 'null', 'true'])
      await refusedAndDropped(`${v}\n`, /^bad request: request must be a JSON object$/);
  });

  it('an unknown op, echoed back only in part', async () => {
    await refusedAndDropped(
      '{"op":"rm -rf /"}\n',
      /^bad request: unknown op "rm -rf \/" \(known: prepare, attach, status, ps, policy-check, policy-set, learn, resolve, shutdown\)$/,
    );
    await refusedAndDropped('{}\n', /^bad request: unknown op undefined/);
    await refusedAndDropped('{"__proto__":{"op":"status"}}\n', /^bad request: unknown op undefined/);
    const r = await exchange(`{"op":"${'x'.repeat(100_000)}"}\n`);
    expect(r.replies[0].error!.length).toBeLessThan(300);
  });

  it('fields of the wrong type, optional ones included', async () => {
    const cases: Array<[object, RegExp]> = [
      [{ op: 'prepare', id: 5, bundle: '/x' }, /"id" must be a non-empty string/],
      [{ op: 'prepare', id: '', bundle: '/x' }, /"id" must be a non-empty string/],
      [{ op: 'prepare', id: 'x', bundle: ['/x'] }, /"bundle" must be a non-empty string/],
      [{ op: 'prepare', id: 'x', bundle: '/x', runcRoot: 7 }, /"runcRoot" must be a non-empty string/],
      [{ op: 'prepare', id: 'x', bundle: '/x', push: 'yes' }, /"push" must be true or false/],
      [{ op: 'attach', id: 'x', bundle: '/x', pid: -1 }, /"pid" must be a positive integer/],
      [{ op: 'attach', id: 'x', bundle: '/x', pid: '12' }, /"pid" must be a positive integer/],
      [{ op: 'attach', id: 'x', bundle: '/x', pid: 1.5 }, /"pid" must be a positive integer/],
      [{ op: 'attach', id: 'x', bundle: '/x', pid: 1e300 }, /"pid" must be a positive integer/],
      [{ op: 'attach', id: 'x', bundle: '/x', pid: 1, runcRoot: {} }, /"runcRoot" must be a non-empty string/],
      [{ op: 'policy-check', annotations: [] }, /"annotations" must be an object/],
      [{ op: 'policy-check', annotations: null }, /"annotations" must be an object/],
      [{ op: 'policy-check', annotations: { 'cgfence.io/mode': 1 } }, /annotation values must be strings/],
      [{ op: 'shutdown', detach: 'yes' }, /"detach" must be true or false/],
    ];
    for (const [req, msg] of cases) await refusedAndDropped(`${JSON.stringify(req)}\n`, msg);
    // The wrong-typed shutdown shut nothing down.
    expect(daemonAlive()).toBe(true);
    expect(cli(p, ['status']).status).toBe(0);
    expect(fs.readFileSync(p.daemonLog, 'utf8')).not.toMatch(/request \S+ failed/);
  });

  it('a request over MAX_REQUEST_BYTES, without a newline: the daemon does not wait for one', async () => {
    await refusedAndDropped(Buffer.alloc(MAX_REQUEST_BYTES + 1, 0x61), new RegExp(`^request larger than ${MAX_REQUEST_BYTES} bytes$`));
  });

  it('a complete line over MAX_REQUEST_BYTES', async () => {
    const big = `{"op":"policy-check","annotations":{"cgfence.io/exec-allow":"${'/bin/sh,'.repeat(MAX_REQUEST_BYTES / 8)}"}}\n`;
    const r = await exchange(big);
    // The daemon may close before it has read all of it: then the refusal can be lost with the connection.
    expect(r.closedByServer).toBe(true);
    for (const x of r.replies) expect(x.error).toBe(`request larger than ${MAX_REQUEST_BYTES} bytes`);
  });

  it('a policy-check just under the limit is answered (not dropped), with a bounded refusal', async () => {
    const value = 'x,'.repeat(Math.floor((MAX_REQUEST_BYTES - 300) / 4));
    const r = await exchange(
      `${JSON.stringify({ op: 'policy-check', annotations: { 'cgfence.io/exec-allow': value, 'cgfence.io/egres-deny': value } })}\n`,
      1,
    );
    expect(r.closedByServer).toBe(false);
    expect(r.replies[0].ok).toBe(false);
    expect(r.replies[0].error).toMatch(/cgfence\.io\/exec-allow is \d+ bytes long \(at most 65536\)/);
    expect(r.replies[0].error).toMatch(/unknown annotation cgfence\.io\/egres-deny=/);
    expect(r.replies[0].error!.length).toBeLessThan(4000);
  });

  it('pipelined good requests on one connection are answered in order', async () => {
    const r = await exchange(
      '{"op":"status"}\n\n{"op":"ps"}\n{"op":"policy-check","annotations":{"cgfence.io/exec-allow":"/bin/sh"}}\n',
      3,
    );
    expect(r.replies.map((x) => x.ok)).toEqual([true, true, true]);
    expect(r.replies[0]).toHaveProperty('daemon');
    expect(r.replies[1]).toHaveProperty('containers');
    expect(r.replies[2]).toMatchObject({ mode: 'enforce' });
  });

  it("one client's bad request does not touch another client's open connection", async () => {
    const good = net.connect(p.socket);
    await new Promise((r) => good.once('connect', r));
    try {
      await refusedAndDropped('{broken\n', /not valid JSON/);
      good.write('{"op":"status"}\n');
      const line = await new Promise<string>((resolve) => {
        let b = '';
        good.on('data', (d) => {
          b += d;
          if (b.includes('\n')) resolve(b.slice(0, b.indexOf('\n')));
        });
      });
      expect(JSON.parse(line).ok).toBe(true);
    } finally {
      good.destroy();
    }
  });
});

describe('while hostile clients keep at it', () => {
  let bad: ChildProcess | undefined;
  let lastStats: Record<string, unknown> = {};

  afterAll(() => {
    if (bad?.pid && bad.exitCode === null) bad.kill('SIGKILL');
  });

  it('a slow-loris partial line is dropped, and fenced containers start and behave meanwhile', async () => {
    bad = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'socket-misbehaver.cjs'), p.socket, String(MAX_REQUEST_BYTES)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    bad.stdout!.on('data', (d) => {
      out += d;
      const lines = out.trim().split('\n');
      try {
        lastStats = JSON.parse(lines[lines.length - 1]);
      } catch {
        /* a partial line */
      }
    });
    type Stats = {
      garbageRefused: number;
      floodConnections: number;
      oversizeRefused: number;
      lorisDropped: number;
      lorisRefusals: string[];
      garbageOther: string[];
      connectErrors: number;
    };
    const stats = () => lastStats as Stats;
    await waitFor(
      'the hostile client to get going',
      () => stats().garbageRefused > 20 && stats().floodConnections > 0 && stats().oversizeRefused > 0,
      60_000,
    );

    // Containers are started and fenced while slow lorises hold partial lines, a client
    // pipelines requests it never reads, and garbage and oversized requests keep coming.
    fencesStillWork('hostile1');
    expect(cli(p, ['status']).status).toBe(0);

    // The line deadline drops every slow loris; fences keep working all along.
    await waitFor('slow lorises to be dropped', () => stats().lorisDropped >= 20, 90_000);
    fencesStillWork('hostile2');
    const ps = cli(p, ['ps', '--json']);
    expect(ps.status, ps.stderr).toBe(0);

    const s = stats();
    expect(s.lorisRefusals[0]).toMatch(/^\{"ok":false,"error":"request line not completed within \d+ s"\}$/);
    expect(s.garbageOther).toEqual([]);
    expect(s.connectErrors).toBe(0);
    expect(daemonAlive()).toBe(true);
    bad.kill('SIGKILL');
  });

  it('after the hostile clients are gone the daemon is whole: no internal errors, status answers', async () => {
    expect(daemonAlive()).toBe(true);
    const st = cli(p, ['status', '--json']);
    expect(st.status, st.stderr).toBe(0);
    expect(JSON.parse(st.stdout).daemon.pid).toBe(daemonPid());
    expect(fs.readFileSync(p.daemonLog, 'utf8')).not.toMatch(
      /request \S+ failed|answering a request failed|Unhandled|MaxListenersExceeded/,
    );
  });
});
