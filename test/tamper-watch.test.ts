// Tamper detection on the real kernel: bpftool (a process other than "the daemon", which is
// this test process) writes to the exec fence's pinned maps, detaches its link and removes
// pins; the watch reports each with the tool's pid and comm, and none of this process's own
// writes. "None" is proven without timing: a marker tamper that follows is reported, and the
// ring buffer delivers in order, so nothing earlier is still on its way.
import { execFileSync, spawnSync, SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../src/audit/audit-read';
import { EXEC_ALLOW_SIZE } from '../src/kernel/abi';
import { ExecFence } from '../src/kernel/exec-fence';
import { ObjKind, TamperEvent, encodeTamperKey } from '../src/kernel/tamper-abi';
import { TamperWatch } from '../src/kernel/tamper-watch';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { uniqueName } from './helpers/kernel';
import { request } from '../src/daemon/daemon-client';
import { alive, killDaemon } from './helpers/daemon-restart';
import { cli, sandboxDir, waitFor } from './helpers/sandbox';

const name = uniqueName('cgfence-test-tamper');
const pinDir = `/sys/fs/bpf/${name}`;
/** Pins this test makes outside the pin directory. */
const outside = `/sys/fs/bpf/${name}-out`;
let fence: ExecFence;
let watch: TamperWatch;
let ids: { execAllow: number; fences: number; program: number; link: number };
const events: TamperEvent[] = [];

function bpftool(args: string[], opts: { cwd?: string } = {}): SpawnSyncReturns<string> {
  const r = spawnSync('bpftool', args, { encoding: 'utf8', cwd: opts.cwd });
  expect(r.status, `bpftool ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r;
}

function run(argv: string[], opts: { cwd?: string } = {}): SpawnSyncReturns<string> {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', cwd: opts.cwd });
  expect(r.status, `${argv.join(' ')}: ${r.stderr}`).toBe(0);
  return r;
}

/** bpftool's "value hex" argument for an exec_allow value (struct cgfence_exec_allow, zeroes). */
const ALLOW_VALUE = ['hex', ...Array<string>(EXEC_ALLOW_SIZE).fill('00')];

/** bpftool's "key hex" argument for an exec_allow key (fence id, dev, ino). */
function keyHex(fenceId: bigint): string[] {
  const b = Buffer.alloc(24);
  b.writeBigUInt64LE(fenceId, 0);
  b.writeBigUInt64LE(7n, 8);
  b.writeBigUInt64LE(42n, 16);
  return ['hex', ...[...b].map((x) => x.toString(16).padStart(2, '0'))];
}

async function eventOf(what: string, pred: (e: TamperEvent) => boolean): Promise<TamperEvent> {
  return waitFor(what, () => events.find(pred), 10_000);
}

/** A tamper by bpftool that must be reported: everything before it has been delivered. */
async function marker(): Promise<void> {
  const r = bpftool(['map', 'update', 'pinned', `${pinDir}/exec_allow`, 'key', ...keyHex(0xfeedn), 'value', ...ALLOW_VALUE]);
  await eventOf('the marker', (e) => e.pid === r.pid && e.action === 'map-update');
}

beforeAll(() => {
  execFileSync('bash', [path.join(__dirname, '..', 'scripts', 'setup.sh')]);
  fs.mkdirSync(outside, { recursive: true });
  fence = ExecFence.open({ pinDir });
  watch = TamperWatch.open({ pinDir, onEvents: (batch) => events.push(...batch) });
  const o = fence.objectIds();
  const prog = o.programs['cgroup-v2'];
  ids = { execAllow: o.maps.exec_allow, fences: o.maps.fences, program: prog.program, link: prog.link };
  watch.protect({ maps: Object.values(o.maps), programs: [prog.program], links: [prog.link] });
});

afterAll(() => {
  watch?.close({ detach: true });
  fence?.close({ detach: true });
  fs.rmSync(outside, { recursive: true, force: true });
  // Whatever a failed test left pinned in the pin directory.
  fs.rmSync(pinDir, { recursive: true, force: true });
});

afterEach(() => {
  events.length = 0;
});

describe('tamper watch (kernel)', () => {
  it('protects the given ids and its own objects', () => {
    const p = watch.protectedIds();
    expect(p.maps).toEqual(expect.arrayContaining([ids.execAllow, ids.fences, ...Object.values(watch.objectIds().maps)]));
    expect(p.programs).toContain(ids.program);
    expect(p.links).toEqual(expect.arrayContaining([ids.link, ...Object.values(watch.objectIds().links)]));
  });

  it('reports a map update by another process, naming the map and the process', async () => {
    const r = bpftool(['map', 'update', 'pinned', `${pinDir}/exec_allow`, 'key', ...keyHex(0xabcn), 'value', ...ALLOW_VALUE]);
    const e = await eventOf('map-update', (x) => x.pid === r.pid);
    expect(e).toMatchObject({
      action: 'map-update',
      object: 'map',
      objectId: ids.execAllow,
      objectName: 'exec_allow',
      comm: 'bpftool',
      bpfCmd: 'BPF_MAP_UPDATE_ELEM',
      uid: 0,
    });
  });

  it('reports a map delete', async () => {
    const r = bpftool(['map', 'delete', 'pinned', `${pinDir}/exec_allow`, 'key', ...keyHex(0xabcn)]);
    const e = await eventOf('map-delete', (x) => x.pid === r.pid);
    expect(e).toMatchObject({ action: 'map-delete', objectId: ids.execAllow, objectName: 'exec_allow', bpfCmd: 'BPF_MAP_DELETE_ELEM' });
  });

  it('finds the map by id too, not only through its pin', async () => {
    const size = (JSON.parse(bpftool(['-j', 'map', 'show', 'id', String(ids.fences)]).stdout) as { bytes_value: number }).bytes_value;
    const r = bpftool([
      'map',
      'update',
      'id',
      String(ids.fences),
      'key',
      'hex',
      ...Array(8).fill('ee'),
      'value',
      'hex',
      ...Array(size).fill('00'),
    ]);
    const e = await eventOf('map-update by id', (x) => x.pid === r.pid);
    expect(e).toMatchObject({ action: 'map-update', objectId: ids.fences, objectName: 'fences' });
    bpftool(['map', 'delete', 'id', String(ids.fences), 'key', 'hex', ...Array(8).fill('ee')]);
  });

  it("does not report the daemon's own updates and deletes", async () => {
    fence.allow(0x5e1fn, [{ dev: 1n, ino: 2n, ctimeNs: 0n, interpOnly: false }]);
    fence.disallow(0x5e1fn, [{ dev: 1n, ino: 2n }]);
    fence.setFence(0x5e1fn, 1);
    fence.unfence(0x5e1fn);
    await marker();
    expect(events.filter((e) => e.pid === process.pid)).toEqual([]);
    expect(events.filter((e) => e.action === 'map-update' && e.objectName === 'fences')).toEqual([]);
  });

  it('does not report writes to maps it does not protect', async () => {
    bpftool(['map', 'create', `${outside}/other`, 'type', 'hash', 'key', '4', 'value', '4', 'entries', '4', 'name', 'other']);
    const r = bpftool([
      'map',
      'update',
      'pinned',
      `${outside}/other`,
      'key',
      'hex',
      '01',
      '00',
      '00',
      '00',
      'value',
      'hex',
      '01',
      '00',
      '00',
      '00',
    ]);
    await marker();
    expect(events.filter((e) => e.pid === r.pid)).toEqual([]);
  });

  it('reports a freeze of a protected map', async () => {
    bpftool(['map', 'create', `${outside}/frozen`, 'type', 'array', 'key', '4', 'value', '4', 'entries', '1', 'name', 'frozen']);
    const frozenId = (JSON.parse(bpftool(['-j', 'map', 'show', 'pinned', `${outside}/frozen`]).stdout) as { id: number }).id;
    const p = watch.protectedIds();
    watch.protect({ maps: [...p.maps, frozenId], programs: p.programs, links: p.links });
    try {
      const r = bpftool(['map', 'freeze', 'pinned', `${outside}/frozen`]);
      const e = await eventOf('map-freeze', (x) => x.pid === r.pid);
      expect(e).toMatchObject({ action: 'map-freeze', objectId: frozenId, objectName: 'frozen', bpfCmd: 'BPF_MAP_FREEZE' });
    } finally {
      watch.protect({ maps: p.maps, programs: p.programs, links: p.links });
    }
  });

  it('an incremental protect writes only what changed; a full one also puts back an entry someone removed', async () => {
    const p = watch.protectedIds();
    bpftool(['map', 'create', `${outside}/added`, 'type', 'array', 'key', '4', 'value', '4', 'entries', '1', 'name', 'added']);
    const addedId = (JSON.parse(bpftool(['-j', 'map', 'show', 'pinned', `${outside}/added`]).stdout) as { id: number }).id;
    try {
      watch.protect({ ...p, maps: [...p.maps, addedId] }, { incremental: true });
      expect(watch.protectedIds().maps).toContain(addedId);
      watch.protect(p, { incremental: true });
      expect(watch.protectedIds().maps).not.toContain(addedId);
      // Someone with the map removes the fences map's entry (reported, as every write is).
      const key = [...encodeTamperKey(ObjKind.Map, ids.fences)].map((b) => b.toString(16).padStart(2, '0'));
      const r = bpftool(['map', 'delete', 'id', String(watch.objectIds().maps.tamper_protect), 'key', 'hex', ...key]);
      await eventOf('the delete in tamper_protect', (e) => e.pid === r.pid);
      expect(watch.protectedIds().maps).not.toContain(ids.fences);
      watch.protect(p, { incremental: true });
      expect(watch.protectedIds().maps, 'an unchanged set writes nothing').not.toContain(ids.fences);
      watch.protect(p);
      expect(watch.protectedIds()).toEqual(p);
    } finally {
      watch.protect(p);
      fs.rmSync(`${outside}/added`, { force: true });
    }
  });

  it('reports the removal of pins: absolute, cwd-relative, parent-relative and rm -r', async () => {
    const statsId = String(watch.objectIds().maps.tamper_stats);
    for (const n of ['abs', 'rel', 'par']) bpftool(['map', 'pin', 'id', statsId, `${pinDir}/extra-${n}`]);
    fs.mkdirSync(`${pinDir}/sub`);
    bpftool(['map', 'pin', 'id', statsId, `${pinDir}/sub/deep`]);

    const abs = run(['rm', `${pinDir}/extra-abs`]);
    const rel = run(['rm', 'extra-rel'], { cwd: pinDir });
    const par = run(['rm', `${name}/extra-par`], { cwd: path.dirname(pinDir) });
    const rec = run(['rm', '-r', `${pinDir}/sub`]);
    expect((await eventOf('absolute unlink', (e) => e.pid === abs.pid)).path).toBe(`${pinDir}/extra-abs`);
    expect((await eventOf('cwd-relative unlink', (e) => e.pid === rel.pid)).path).toBe('extra-rel');
    expect((await eventOf('parent-relative unlink', (e) => e.pid === par.pid)).path).toBe(`${name}/extra-par`);
    // rm -r removes entries relative to the directory's fd: the dirfd check finds them.
    await eventOf('rm -r of a file below the pin directory', (e) => e.pid === rec.pid && e.path.endsWith('deep'));
    await eventOf('rm -r of a directory in the pin directory', (e) => e.pid === rec.pid && e.path.endsWith('sub'));
    for (const e of events) expect(e).toMatchObject({ action: 'pin-unlink', object: 'pin', comm: 'rm', bpfCmd: null });
  });

  it("reports a pin renamed out of the pin directory, and not the daemon's own unlinks", async () => {
    const statsId = String(watch.objectIds().maps.tamper_stats);
    bpftool(['map', 'pin', 'id', statsId, `${pinDir}/extra-mv`]);
    bpftool(['map', 'pin', 'id', statsId, `${pinDir}/extra-self`]);
    fs.unlinkSync(`${pinDir}/extra-self`);
    const mv = run(['mv', `${pinDir}/extra-mv`, `${outside}/moved`]);
    const e = await eventOf('rename', (x) => x.pid === mv.pid);
    expect(e).toMatchObject({ action: 'pin-rename', object: 'pin', path: `${pinDir}/extra-mv`, comm: 'mv' });
    expect(events.filter((x) => x.pid === process.pid)).toEqual([]);
    // Unlinks elsewhere on bpffs are none of ours.
    const rm = run(['rm', `${outside}/moved`]);
    await marker();
    expect(events.filter((x) => x.pid === rm.pid)).toEqual([]);
  });

  it("reports an attempt to detach the exec fence's link, with its program", async () => {
    // A tp_btf link refuses BPF_LINK_DETACH (EOPNOTSUPP); the attempt is reported all the same,
    // since the check runs at syscall entry, and so is a detach of a link that allows it.
    const r = spawnSync('bpftool', ['link', 'detach', 'pinned', `${pinDir}/exec_fence_link`], { encoding: 'utf8' });
    const e = await eventOf('link-detach', (x) => x.pid === r.pid);
    expect(e).toMatchObject({
      action: 'link-detach',
      object: 'link',
      objectId: ids.link,
      progId: ids.program,
      objectName: 'exec_fence',
      comm: 'bpftool',
      bpfCmd: 'BPF_LINK_DETACH',
    });
  });

  it('lost nothing on the way', () => {
    expect(watch.stats().lost).toBe(0n);
  });
});

describe('tamper watch (daemon, through the sandbox)', () => {
  const dir = sandboxDir('tamper');
  let p: SandboxPaths;
  let daemonPid = 0;

  async function tamperRecord(pid: number, action: string) {
    const end = Date.now() + 15_000;
    for (;;) {
      const r = (await readRecords(p.auditLog)).find((x) => x.type === 'tamper' && x.pid === pid && x.action === action);
      if (r) return r;
      if (Date.now() > end) throw new Error(`no tamper/${action} record for pid ${pid} in ${p.auditLog}`);
      await new Promise((res) => setTimeout(res, 100));
    }
  }

  beforeAll(async () => {
    p = await sandboxUp(dir);
    daemonPid = Number(fs.readFileSync(p.daemonPid, 'utf8'));
  });

  afterAll(async () => {
    await sandboxDown(dir).catch((e) => console.error(e));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes a tamper record when bpftool updates or deletes in the pinned exec_allow map', async () => {
    const status = JSON.parse(cli(p, ['status', '--json']).stdout) as {
      kernel: { backends: { exec: { objects: { maps: Record<string, number> } } } };
    };
    const mapId = status.kernel.backends.exec.objects.maps.exec_allow;
    const up = bpftool(['map', 'update', 'pinned', `${p.pinDir}/exec_allow`, 'key', ...keyHex(0xe2en), 'value', ...ALLOW_VALUE]);
    const rec = await tamperRecord(up.pid!, 'map-update');
    expect(rec).toMatchObject({
      type: 'tamper',
      action: 'map-update',
      map_id: mapId,
      map_name: 'exec_allow',
      comm: 'bpftool',
      bpf_cmd: 'BPF_MAP_UPDATE_ELEM',
      uid: 0,
    });
    expect(typeof rec.ts).toBe('string');
    const del = bpftool(['map', 'delete', 'pinned', `${p.pinDir}/exec_allow`, 'key', ...keyHex(0xe2en)]);
    expect(await tamperRecord(del.pid!, 'map-delete')).toMatchObject({ map_id: mapId, map_name: 'exec_allow' });
  });

  it('shows the watch in cgfence status', () => {
    const r = cli(p, ['status']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/tamper watch\s+\d+ syscall tracepoints, pinned; protecting \d+ maps/);
  });

  it('keeps watching while the daemon is down, and the restarted daemon reports it', async () => {
    await killDaemon(p, { pid: daemonPid });
    const up = bpftool(['map', 'update', 'pinned', `${p.pinDir}/exec_allow`, 'key', ...keyHex(0xd0dn), 'value', ...ALLOW_VALUE]);
    await sandboxUp(dir);
    const old = daemonPid;
    daemonPid = Number(fs.readFileSync(p.daemonPid, 'utf8'));
    expect(daemonPid).not.toBe(old);
    const rec = await tamperRecord(up.pid!, 'map-update');
    expect(rec).toMatchObject({ map_name: 'exec_allow', comm: 'bpftool', before_daemon_start: true });
    // The new daemon replaced pinned links and rewrote maps while its predecessor's program
    // still watched: none of that is reported as tamper.
    // The restarted daemon's orphan sweep may have taken the ownerless entry already (it is
    // one: no fence claims 0xd0d); a delete is then refused, and there is nothing to report.
    const del = spawnSync('bpftool', ['map', 'delete', 'pinned', `${p.pinDir}/exec_allow`, 'key', ...keyHex(0xd0dn)], { encoding: 'utf8' });
    if (del.status === 0) await tamperRecord(del.pid!, 'map-delete');
    else expect(del.stderr).toMatch(/No such file or directory/);
    const recs = await readRecords(p.auditLog);
    expect(recs.filter((x) => x.type === 'tamper' && (x.pid === daemonPid || x.pid === old))).toEqual([]);
    // ...though the predecessor's program did see the new daemon unpin its exec link.
    await waitFor('the handover to be seen', () => {
      const st = JSON.parse(cli(p, ['status', '--json']).stdout) as { tamper: { selfReports: number; adopted: boolean } };
      return st.tamper.adopted && st.tamper.selfReports > 0;
    });
  });

  it('leaves nothing attached or pinned after a shutdown with detach', async () => {
    const t = (JSON.parse(cli(p, ['status', '--json']).stdout) as { tamper: { objects: { programs: Record<string, number> } } }).tamper;
    const progIds = Object.values(t.objects.programs);
    expect(progIds.length).toBeGreaterThan(0);
    await request(p.socket, { op: 'shutdown', detach: true });
    await waitFor('the daemon to exit', () => !alive(daemonPid), 20_000);
    expect(fs.existsSync(p.pinDir)).toBe(false);
    // Program ids are never reused soon: a gone id means the program was unloaded.
    await waitFor('the watch programs to be unloaded', () =>
      progIds.every((id) => spawnSync('bpftool', ['prog', 'show', 'id', String(id)]).status !== 0),
    );
    const recs = await readRecords(p.auditLog);
    expect(recs.filter((x) => x.type === 'tamper' && x.pid === daemonPid)).toEqual([]);
  });
});
