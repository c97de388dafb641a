// The registry reads back fences.json as daemons have written it (the fixture holds every
// backend state shape: cgroup v2 with exec notify, seccomp and network; pid namespace with
// the connect audit and an allow entry without stamps; learn), and checks what it reads:
// an entry with a wrong field is left out with a message naming the field, not cast.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FenceRegistry, readFencedContainer } from '../src/daemon/fence-registry';

const FIXTURE = path.join(__dirname, 'fixtures', 'fences-0.1.0.json');

/** The fixture's first entry, loosely: the tests spoil its fields. */
interface Spoilable {
  pid: unknown;
  how: unknown;
  eventKeys: unknown;
  controls: Record<string, unknown>;
  backends: {
    exec: { backend: unknown; allow: Array<Record<string, unknown>> };
    network: { defaultDeny: Record<string, unknown> };
    seccomp: { deny: unknown; fenceId?: unknown };
    learn?: unknown;
    future?: unknown;
  };
}
const dirs: string[] = [];

function stateDir(contents?: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'cgfence-registry-'));
  dirs.push(d);
  if (contents !== undefined) fs.writeFileSync(path.join(d, 'fences.json'), contents);
  return d;
}

function fixture(): Array<Record<string, unknown>> {
  return JSON.parse(fs.readFileSync(FIXTURE, 'utf8')) as Array<Record<string, unknown>>;
}

afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe('fence registry state file', () => {
  it('reads back every entry of a 0.1.0 state file unchanged, and writes it back the same', () => {
    const logs: string[] = [];
    const dir = stateDir(fs.readFileSync(FIXTURE, 'utf8'));
    const r = new FenceRegistry(dir, (m) => logs.push(m));
    expect(logs).toEqual([]);
    expect(r.all()).toEqual(fixture());
    expect(r.byEvent(8812n)?.id).toBe('web');
    expect(r.get('default', 'web')?.backends.exec?.allow?.[1].loader_of).toBe('/bin/sh');
    // A save writes what was read: an upgrade keeps the file's format.
    r.put(r.get('default', 'web')!);
    r.flush();
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'fences.json'), 'utf8'))).toEqual(fixture());
    expect(fs.readdirSync(dir).filter((n) => n.includes('corrupt'))).toEqual([]);
  });

  it('leaves out an entry with a wrong field, names the field, keeps the others and the file as read', () => {
    const list = fixture();
    const web = list[0] as { backends: { exec: { allow: Array<Record<string, unknown>> } } };
    web.backends.exec.allow[0].ino = 'x1311';
    const logs: string[] = [];
    const dir = stateDir(JSON.stringify(list));
    const r = new FenceRegistry(dir, (m) => logs.push(m));
    expect(r.all().map((f) => f.id)).toEqual(['0123456789abcdef', 'learner']);
    expect(logs).toHaveLength(1);
    expect(logs[0]).toContain('fences.json[0] (default/web).backends.exec.allow[0].ino: a decimal integer string expected, found "x1311"');
    const kept = fs.readdirSync(dir).filter((n) => n.startsWith('fences.json.corrupt-'));
    expect(kept).toHaveLength(1);
    expect(JSON.parse(fs.readFileSync(path.join(dir, kept[0]), 'utf8'))).toEqual(list);
  });

  it('refuses wrong values of each kind: a control state, a backend name of the exec fence, a mode of creation, a list', () => {
    const bad: Array<[string, (e: Spoilable) => void, string]> = [
      [
        'controls',
        (e) => {
          e.controls.network = 'enforcing';
        },
        '.controls.network: enforced, audited, learning, none or "unenforceable: ..." expected',
      ],
      [
        'exec backend',
        (e) => {
          e.backends.exec.backend = 'cgroup-v3';
        },
        '.backends.exec.backend: one of "cgroup-v2", "pidns-tracepoint", "none" expected',
      ],
      [
        'how',
        (e) => {
          e.how = 'later';
        },
        '.how: one of "create", "late-attach" expected',
      ],
      [
        'eventKeys',
        (e) => {
          e.eventKeys = '8812';
        },
        '.eventKeys: a list of strings expected',
      ],
      [
        'network defaultDeny',
        (e) => {
          e.backends.network.defaultDeny.egress = 'yes';
        },
        '.backends.network.defaultDeny.egress: true or false expected',
      ],
      [
        'seccomp deny',
        (e) => {
          e.backends.seccomp.deny = [1];
        },
        '.backends.seccomp.deny: a list of strings expected',
      ],
      [
        'seccomp record key',
        (e) => {
          e.backends.seccomp.fenceId = 'web';
        },
        '.backends.seccomp.fenceId: a decimal cgroup id or namespace/id expected',
      ],
      [
        'pid',
        (e) => {
          e.pid = -3;
        },
        '.pid: a process id expected',
      ],
      [
        'dev',
        (e) => {
          e.backends.exec.allow[0].dev = '51';
        },
        '.backends.exec.allow[0].dev: "MAJOR:MINOR" expected',
      ],
      [
        'not an object',
        (e) => {
          e.backends.learn = [];
        },
        '.backends.learn: not an object',
      ],
    ];
    for (const [what, spoil, message] of bad) {
      const e = fixture()[0] as unknown as Spoilable;
      e.backends.learn = { backend: 'learn', fenceId: '1' };
      spoil(e);
      expect(() => readFencedContainer(e, 'fences.json[0]'), what).toThrow(message);
    }
  });

  it('reads back a seccomp record key that is a container key (a container without cgroup v2)', () => {
    const e = fixture()[0] as unknown as Spoilable;
    e.backends.seccomp.fenceId = 'k8s.io/0123abcd';
    expect(readFencedContainer(e, 'fences.json[0]').backends.seccomp?.fenceId).toBe('k8s.io/0123abcd');
  });

  it('keeps an entry that holds the state of a backend this version does not have, without it', () => {
    const e = fixture()[0] as unknown as Spoilable;
    e.backends.future = { backend: 'something new' };
    const notes: string[] = [];
    const f = readFencedContainer(e, 'fences.json[0]', (m) => notes.push(m));
    expect(Object.keys(f.backends)).toEqual(['exec', 'seccomp', 'network']);
    expect(notes).toEqual(['fences.json[0] (default/web).backends.future: no such backend in this version; its state is left out']);
  });

  it('moves a file that is not JSON aside and starts empty', () => {
    const logs: string[] = [];
    const dir = stateDir('[{"namespace": "default", "id": "web"');
    const r = new FenceRegistry(dir, (m) => logs.push(m));
    expect(r.all()).toEqual([]);
    expect(fs.existsSync(path.join(dir, 'fences.json'))).toBe(false);
    expect(fs.readdirSync(dir).filter((n) => n.startsWith('fences.json.corrupt-'))).toHaveLength(1);
    expect(logs[0]).toMatch(/fences\.json is not a list of fenced containers/);
  });
});
