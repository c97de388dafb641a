// The registry reads back fences.json as daemons have written it (the fixture holds every
// backend state shape: cgroup v2 with exec notify, seccomp and network; pid namespace with
// the connect audit and an allow entry without stamps; learn), and checks what it reads:
// an entry with a wrong field is left out with a message naming the field, not cast.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FenceRegistry, FencedContainer, readFencedContainer } from '../src/daemon/fence-registry';

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
    r.flush({ compact: true });
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

/** The turn in which a change is written to the journal. */
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('fence registry journal', () => {
  it('a daemon that stops without a save (a crash) is followed by one that reads every change it made', async () => {
    const dir = stateDir(fs.readFileSync(FIXTURE, 'utf8'));
    const r = new FenceRegistry(dir);
    const [, other] = fixture() as unknown as FencedContainer[];
    r.delete('default', 'web');
    r.put({ ...other, id: 'new-one', eventKeys: ['4242'] });
    await nextTurn();
    // Appended, not rewritten: the snapshot is as it was.
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'fences.json'), 'utf8'))).toEqual(fixture());
    expect(fs.readFileSync(path.join(dir, 'fences.journal'), 'utf8').trim().split('\n')).toHaveLength(2);

    const logs: string[] = [];
    const again = new FenceRegistry(dir, (m) => logs.push(m));
    expect(logs).toEqual([]);
    expect(again.get('default', 'web')).toBeUndefined();
    expect(again.byEvent(8812n)).toBeUndefined();
    expect(again.get(other.namespace, 'new-one')).toEqual({ ...other, id: 'new-one', eventKeys: ['4242'] });
    expect(again.byEvent('4242')?.id).toBe('new-one');
    expect(again.all()).toHaveLength(fixture().length);
    // Read back, folded into the snapshot at once: the journal is gone until the next change.
    expect(fs.existsSync(path.join(dir, 'fences.journal'))).toBe(false);
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'fences.json'), 'utf8'))).toEqual(again.all());
  });

  it('an entry changed twice in one turn is written as it is at the end of the turn', async () => {
    const dir = stateDir();
    const r = new FenceRegistry(dir);
    const [web] = fixture() as unknown as FencedContainer[];
    r.put({ ...web, pid: 1 });
    r.put({ ...web, pid: 2 });
    await nextTurn();
    expect(new FenceRegistry(dir).get('default', 'web')?.pid).toBe(2);
  });

  it('leaves out a line cut short or spoilt, names it, keeps the lines after it and the journal as read', async () => {
    const dir = stateDir();
    const [web, other] = fixture() as unknown as FencedContainer[];
    const spoilt = JSON.parse(JSON.stringify(other)) as Spoilable;
    spoilt.backends.exec.allow[0].ino = 'x1';
    const journal = [
      JSON.stringify({ put: web }),
      JSON.stringify({ put: spoilt }),
      '{"put":{"namespace":"def',
      JSON.stringify({ forget: { namespace: 'default', id: 'web' } }),
      JSON.stringify({ put: { ...web, id: 'after' } }),
    ].join('\n');
    fs.writeFileSync(path.join(dir, 'fences.journal'), journal);
    const logs: string[] = [];
    const r = new FenceRegistry(dir, (m) => logs.push(m));
    expect(r.all().map((f) => f.id)).toEqual(['web', 'after']);
    expect(logs).toHaveLength(3);
    expect(logs[0]).toContain(
      `fences.journal:2.put (${other.namespace}/${other.id}).backends.exec.allow[0].ino: a decimal integer string expected, found "x1": change left out`,
    );
    expect(logs[1]).toMatch(/^fences\.journal:3: not JSON .*: change left out/);
    expect(logs[2]).toContain('fences.journal:4: a "put" or a "delete" expected: change left out');
    const kept = fs.readdirSync(dir).filter((n) => n.startsWith('fences.journal.corrupt-'));
    expect(kept).toHaveLength(1);
    expect(fs.readFileSync(path.join(dir, kept[0]), 'utf8')).toBe(journal);
  });

  it('folds the journal into fences.json every 256 changes, and at a compacting flush (a stop)', async () => {
    const dir = stateDir();
    const r = new FenceRegistry(dir);
    const [web] = fixture() as unknown as FencedContainer[];
    for (let i = 0; i < 256; i++) {
      r.put({ ...web, id: `c${i}`, eventKeys: [] });
      await nextTurn();
    }
    expect(fs.existsSync(path.join(dir, 'fences.json'))).toBe(false);
    expect(fs.readFileSync(path.join(dir, 'fences.journal'), 'utf8').trim().split('\n')).toHaveLength(256);
    r.delete('default', 'c0');
    await nextTurn();
    expect(fs.readFileSync(path.join(dir, 'fences.journal'), 'utf8')).toBe('');
    expect((JSON.parse(fs.readFileSync(path.join(dir, 'fences.json'), 'utf8')) as unknown[]).length).toBe(255);
    r.delete('default', 'c1');
    r.flush();
    expect(fs.readFileSync(path.join(dir, 'fences.journal'), 'utf8')).toMatch(/^\{"delete":\{"namespace":"default","id":"c1"\}\}\n$/);
    r.delete('default', 'c2');
    r.flush({ compact: true });
    expect(fs.readFileSync(path.join(dir, 'fences.journal'), 'utf8')).toBe('');
    expect(new FenceRegistry(dir).all()).toHaveLength(253);
  });

  it("does not append through a link put in the journal's place: it says so, and the next change goes to fences.json", async () => {
    const dir = stateDir();
    const logs: string[] = [];
    const r = new FenceRegistry(dir, (m) => logs.push(m));
    const target = path.join(dir, 'elsewhere');
    fs.writeFileSync(target, 'untouched\n');
    fs.symlinkSync(target, path.join(dir, 'fences.journal'));
    const [web, other] = fixture() as unknown as FencedContainer[];
    r.put(web);
    await nextTurn();
    expect(fs.readFileSync(target, 'utf8')).toBe('untouched\n');
    expect(logs).toHaveLength(1);
    expect(logs[0]).toMatch(/^cannot append to .*fences\.journal: ELOOP.*; the whole registry goes to fences\.json at the next change$/);
    r.put(other);
    await nextTurn();
    expect(fs.readFileSync(target, 'utf8')).toBe('untouched\n');
    expect(fs.existsSync(path.join(dir, 'fences.journal'))).toBe(false);
    expect(new FenceRegistry(dir).all().map((f) => f.id)).toEqual([web.id, other.id]);
  });

  it('savedKeys names whom the snapshot and the journal name, and changes no file (an uninstall dry run)', () => {
    const dir = stateDir(fs.readFileSync(FIXTURE, 'utf8'));
    const [web, other] = fixture() as unknown as FencedContainer[];
    const journal = [
      JSON.stringify({ delete: { namespace: web.namespace, id: web.id } }),
      'not json',
      JSON.stringify({ put: { ...other, id: 'added' } }),
    ].join('\n');
    fs.writeFileSync(path.join(dir, 'fences.journal'), journal);
    const before = fs.readdirSync(dir).map((n) => [n, fs.readFileSync(path.join(dir, n), 'utf8')]);
    const keys = FenceRegistry.savedKeys(dir);
    expect(keys).not.toContain(`${web.namespace}/${web.id}`);
    expect(keys).toContain(`${other.namespace}/${other.id}`);
    expect(keys).toContain(`${other.namespace}/added`);
    expect(keys).toHaveLength(fixture().length);
    expect(fs.readdirSync(dir).map((n) => [n, fs.readFileSync(path.join(dir, n), 'utf8')])).toEqual(before);
    expect(FenceRegistry.savedKeys(path.join(dir, 'no-such-dir'))).toEqual([]);
  });
});
