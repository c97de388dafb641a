// Node config for a fleet without an API server: selectors (Kubernetes namespace and pod
// labels → profile, most specific wins), live reload on SIGHUP and on file change (a
// ConfigMap mounted without subPath: a symlink swap of its directory), every reload audited
// with the config hash; and warning records for misspelt cgfence-like annotation keys.
// Unit checks, then the real thing through a sandbox (containerd labels as CRI sets them).
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readRecords } from '../src/audit/audit-read';
import { AuditRecord } from '../src/audit/audit-record';
import { misspeltKeys } from '../src/daemon/annotation-typos';
import { ConfigError, loadConfigFile } from '../src/daemon/config';
import { ConfigWatcher } from '../src/daemon/config-watcher';
import { parseSelectors, selectProfile } from '../src/daemon/profile-selectors';
import { podContext } from '../src/daemon/pod-context';
import { SandboxPaths, sandboxDown, sandboxUp } from '../src/sandbox/sandbox';
import { IMAGE, cid, cli, ctr, removeContainer, sandboxDir, startFenced, waitFor } from './helpers/sandbox';

const PROFILES = {
  web: { 'cgfence.io/exec-allow': '/bin/sh' },
  strict: { 'cgfence.io/exec-allow': '/bin/sh' },
  team: { 'cgfence.io/mode': 'audit', 'cgfence.io/exec-allow': '/bin/sh' },
};

describe('selectors', () => {
  const selectors = parseSelectors(
    [
      { namespace: 'prod', profile: 'team' },
      { podLabels: { app: 'web' }, profile: 'web' },
      { namespace: 'prod', podLabels: { app: 'web' }, profile: 'strict' },
      { podLabels: { tier: 'front' }, profile: 'team' },
    ],
    PROFILES,
  );

  it('the most specific match wins; equally specific ones go by file order; no match is null', () => {
    expect(selectProfile(selectors, { namespace: 'prod', labels: { app: 'web' } })?.profile).toBe('strict');
    expect(selectProfile(selectors, { namespace: 'dev', labels: { app: 'web' } })?.profile).toBe('web');
    expect(selectProfile(selectors, { namespace: 'prod', labels: {} })?.profile).toBe('team');
    // app=web and tier=front both have one condition: the first in the file.
    expect(selectProfile(selectors, { namespace: null, labels: { app: 'web', tier: 'front' } })?.index).toBe(1);
    expect(selectProfile(selectors, { namespace: null, labels: { app: 'db' } })).toBeNull();
  });

  it('bad selectors are refused with the entry named', () => {
    expect(() => parseSelectors([{ podLabels: { app: 'x' }, profile: 'nope' }], PROFILES)).toThrow(
      /selectors\[0\]: no profile "nope" \(known: web, strict, team\)/,
    );
    expect(() => parseSelectors([{ profile: 'web' }], PROFILES)).toThrow(/selectors\[0\]: needs a namespace or podLabels/);
    expect(() =>
      parseSelectors(
        [
          { namespace: 'a', profile: 'web' },
          { namespace: 'a', profile: 'team' },
        ],
        PROFILES,
      ),
    ).toThrow(/selectors\[1\]: the same conditions as selectors\[0\]/);
    expect(() => parseSelectors([{ labels: { a: 'b' }, profile: 'web' }], PROFILES)).toThrow(/unknown key "labels"/);
    expect(() => parseSelectors([{ podLabels: { a: 1 }, profile: 'web' }], PROFILES)).toThrow(
      /podLabels must map label names to string values/,
    );
  });

  it('a config file with a bad selector or default profile is a ConfigError naming the file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgf-sel-'));
    try {
      const f = path.join(dir, 'c.yaml');
      fs.writeFileSync(
        f,
        'profiles:\n  web:\n    cgfence.io/exec-allow: /bin/sh\nselectors:\n  - podLabels: {app: web}\n    profile: wbe\n',
      );
      expect(() => loadConfigFile(f)).toThrow(ConfigError);
      expect(() => loadConfigFile(f)).toThrow(/c\.yaml: selectors\[0\]: no profile "wbe"/);
      fs.writeFileSync(f, 'profiles: {}\ndefaultProfile: base\n');
      expect(() => loadConfigFile(f)).toThrow(/defaultProfile "base" is not one of its profiles/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('podContext', () => {
  const labels: Record<string, Record<string, string>> = {
    sbx: { app: 'web', 'io.kubernetes.pod.namespace': 'shop' },
    ctr: { 'io.kubernetes.container.name': 'nginx', 'io.kubernetes.pod.namespace': 'shop' },
  };
  const get = async (_ns: string, id: string) => (labels[id] ? ({ labels: labels[id] } as never) : undefined);
  const cri = { 'io.kubernetes.cri.sandbox-id': 'sbx', 'io.kubernetes.cri.sandbox-namespace': 'shop' };

  it("a CRI container: its own labels and its pod sandbox's (the pod labels), and the pod namespace", async () => {
    const c = await podContext(get, 'k8s.io', 'ctr', cri);
    expect(c.namespace).toBe('shop');
    expect(c.labels).toMatchObject({ app: 'web', 'io.kubernetes.container.name': 'nginx' });
  });

  it('namespace-only selectors: the namespace from the annotations, containerd not asked', async () => {
    const never = async () => {
      throw new Error('containerd was asked');
    };
    expect(await podContext(never, 'k8s.io', 'ctr', cri, false)).toEqual({ namespace: 'shop', labels: {} });
    await expect(podContext(never, 'default', 'plain', {}, false)).rejects.toThrow(/containerd was asked/);
  });
});

describe('misspelt annotation keys', () => {
  it('names keys that look like cgfence.io/ ones, and what was meant', () => {
    expect(misspeltKeys({ 'cgfenc.io/exec-allow': '/bin/sh' })).toEqual([
      { key: 'cgfenc.io/exec-allow', suggestion: 'cgfence.io/exec-allow' },
    ]);
    expect(
      misspeltKeys({ 'cgfence.com/mode': 'audit', 'cg-fence.io/profile': 'x', 'cgfence-io/egress-deny': '1.2.3.4/32' }).map(
        (t) => t.suggestion,
      ),
    ).toEqual(['cgfence.io/mode', 'cgfence.io/profile', 'cgfence.io/egress-deny']);
    expect(
      misspeltKeys({
        'cgfence.io/exec-allow': '/bin/sh',
        'example.com/exec-allow': 'x',
        'io.kubernetes.cri.sandbox-id': 'x',
        'app.kubernetes.io/name': 'web',
      }),
    ).toEqual([]);
  });
});

/** A ConfigMap volume as kubelet writes it: timestamped dir, ..data symlink, file symlinks. */
class ConfigMapDir {
  private n = 0;
  constructor(readonly dir: string) {}
  get file(): string {
    return path.join(this.dir, 'daemon-config.yaml');
  }
  write(content: string): void {
    const ts = path.join(this.dir, `..2026_11_30_${this.n++}`);
    fs.mkdirSync(ts);
    fs.writeFileSync(path.join(ts, 'daemon-config.yaml'), content);
    const old = fs.existsSync(path.join(this.dir, '..data')) ? fs.readlinkSync(path.join(this.dir, '..data')) : null;
    fs.symlinkSync(path.basename(ts), path.join(this.dir, '..data_tmp'));
    fs.renameSync(path.join(this.dir, '..data_tmp'), path.join(this.dir, '..data'));
    if (!fs.existsSync(this.file)) fs.symlinkSync('..data/daemon-config.yaml', this.file);
    if (old) fs.rmSync(path.join(this.dir, old), { recursive: true });
  }
}

describe('ConfigWatcher', () => {
  it('sees a ConfigMap update (a ..data symlink swap) once, and not a touch that changes nothing', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgf-cm-'));
    const cm = new ConfigMapDir(dir);
    cm.write('a: 1\n');
    let calls = 0;
    const w = new ConfigWatcher(cm.file, () => calls++, 100);
    try {
      cm.write('a: 2\n');
      await waitFor('the change', () => calls === 1, 5000);
      cm.write('a: 2\n'); // same content, new directory
      await new Promise((r) => setTimeout(r, 500));
      expect(calls).toBe(1);
    } finally {
      w.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('selectors, reload and warnings in a sandbox', () => {
  const dir = sandboxDir('ncfg');
  const cmDir = `${dir}-cm`;
  let cm: ConfigMapDir;
  let p: SandboxPaths;
  const config = (webProfile: string, extra = '') => `profiles:
  web:
    cgfence.io/exec-allow: /bin/sh
  audit-web:
    cgfence.io/mode: audit
    cgfence.io/exec-allow: /bin/sh
  strict:
    cgfence.io/exec-allow: /bin/sh
    cgfence.io/egress-deny: 127.0.0.2/32
selectors:
  - podLabels: {app: web}
    profile: ${webProfile}
  - namespace: prod
    podLabels: {app: web}
    profile: strict
${extra}`;
  const hashOf = (text: string) => `sha256:${crypto.createHash('sha256').update(text).digest('hex')}`;
  const records = (filter: (r: AuditRecord) => boolean) => readRecords(p.auditLog, { where: filter });
  async function waitRecords(what: string, filter: (r: AuditRecord) => boolean, timeoutMs: number): Promise<AuditRecord[]> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const got = await records(filter);
      if (got.length) return got;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  beforeAll(async () => {
    fs.mkdirSync(cmDir, { recursive: true });
    cm = new ConfigMapDir(cmDir);
    cm.write(config('web'));
    p = await sandboxUp(dir, () => {}, { config: cm.file });
  });

  afterAll(async () => {
    await sandboxDown(dir);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(cmDir, { recursive: true, force: true });
  });

  /** Runs tool-a (a busybox copy: 127 when it runs, as "tool-a" is no applet) in a container with these labels: "denied" (126) or "ran". */
  function tryToolA(id: string, labels: Record<string, string>, annotations: Record<string, string> = {}): string {
    const r = ctr(p, [
      'run',
      '--rm',
      '--runc-binary',
      p.runc,
      ...Object.entries(labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]),
      ...Object.entries(annotations).flatMap(([k, v]) => ['--annotation', `${k}=${v}`]),
      IMAGE,
      id,
      '/bin/sh',
      '-c',
      '/usr/local/bin/tool-a true; echo "rc=$?"',
    ]);
    expect(r.status, r.stderr).toBe(0);
    return /rc=127/.test(r.stdout) ? 'ran' : /rc=126/.test(r.stdout) ? 'denied' : r.stdout;
  }

  it('pod labels and namespace pick the profile; the most specific wins; an own profile annotation beats selectors', async () => {
    const web = cid('sel-web');
    expect(tryToolA(web, { app: 'web' })).toBe('denied');
    const prod = cid('sel-prod');
    expect(tryToolA(prod, { app: 'web', 'io.kubernetes.pod.namespace': 'prod' })).toBe('denied');
    const other = cid('sel-none');
    expect(tryToolA(other, { app: 'db' })).toBe('ran');
    const own = cid('sel-own');
    expect(tryToolA(own, { app: 'web' }, { 'cgfence.io/profile': 'audit-web' })).toBe('ran');
    const sel = await records((r) => r.action === 'profile-selected');
    const of = (id: string) => sel.find((r) => r.container_id === id);
    expect(of(web)).toMatchObject({ profile: 'web', selector: 'app=web', config_hash: hashOf(config('web')) });
    expect(of(prod)).toMatchObject({ profile: 'strict', selector: 'namespace=prod,app=web', pod_namespace: 'prod' });
    expect(of(other)).toBeUndefined();
    expect(of(own)).toBeUndefined();
    const attach = await records((r) => r.action === 'attach' && r.container_id === own);
    expect(attach[0].mode).toBe('audit');
  });

  it('a ConfigMap update reloads live, audited with the new hash; SIGHUP reloads too; a bad file changes nothing', async () => {
    const next = config('audit-web');
    cm.write(next);
    const [reload] = await waitRecords(
      'the file-change reload',
      (r) => r.action === 'config-reload' && r.config_hash === hashOf(next),
      20_000,
    );
    expect(reload).toMatchObject({ type: 'agent', trigger: 'file-change', ok: true, changed: ['selectors'], restart_needed: [] });
    expect(tryToolA(cid('sel-after'), { app: 'web' })).toBe('ran'); // audit mode now

    const daemonPid = Number(fs.readFileSync(p.daemonPid, 'utf8'));
    process.kill(daemonPid, 'SIGHUP');
    const [hup] = await waitRecords('the SIGHUP reload', (r) => r.action === 'config-reload' && r.trigger === 'sighup', 10_000);
    expect(hup).toMatchObject({ ok: true, config_hash: hashOf(next), changed: [] });

    const bad = config('audit-web', '  - podLabels: {app: x}\n    profile: missing\n');
    cm.write(bad);
    const [refused] = await waitRecords('the refused reload', (r) => r.action === 'config-reload' && r.config_hash === hashOf(bad), 20_000);
    expect(refused).toMatchObject({ ok: false });
    expect(String(refused.error)).toMatch(/selectors\[2\]: no profile "missing"/);
    expect(tryToolA(cid('sel-kept'), { app: 'web' })).toBe('ran'); // still the last good config
    // status: the running config's hash (the last good one) and the refused reload.
    const st = cli(p, ['status', '-o', 'wide']);
    const row = st.stdout.split('\n').find((l) => l.startsWith('config '));
    // The file's three profiles and the built-in hardened one.
    expect(row).toContain(`${cm.file} ${hashOf(next)}; 4 profile(s), 2 selector(s), default none; last reload`);
    expect(row).toMatch(/\(file-change\) REFUSED: .*selectors\[2\]: no profile "missing"/);
  });

  it('a container whose profile a reload removes keeps its rules, can be changed live, and is detached whole when it exits', async () => {
    const going = (base: string) => base.replace('profiles:\n', 'profiles:\n  going:\n    cgfence.io/exec-allow: /bin/sh\n');
    const withGoing = going(config('web'));
    cm.write(withGoing);
    await waitRecords(
      'the reload adding a profile',
      (r) => r.action === 'config-reload' && r.ok === true && r.config_hash === hashOf(withGoing),
      20_000,
    );
    const id = cid('gone-profile');
    try {
      const r = startFenced(p, id, { 'cgfence.io/profile': 'going' }, ['/bin/sh', '-c', 'sleep 60']);
      expect(r.status, r.stderr).toBe(0);
      await waitRecords('the attach', (x) => x.action === 'attach' && x.container_id === id, 20_000);
      const without = config('web');
      cm.write(without);
      await waitRecords(
        'the reload removing it',
        (x) => x.action === 'config-reload' && x.ok === true && x.config_hash === hashOf(without),
        20_000,
      );
      // A live change that keeps the gone name is refused, naming it; one that drops the name is taken.
      const kept = cli(p, ['policy', 'set', id, 'cgfence.io/exec-allow=/bin/sh']);
      expect(kept.status).not.toBe(0);
      expect(kept.stderr).toMatch(/cgfence\.io\/profile="going": no such profile on this node/);
      expect(kept.stderr).not.toMatch(/internal error/);
      await waitRecords(
        'the refusal record',
        (x) => x.action === 'policy-refuse' && x.container_id === id && /"going"/.test(String(x.reason)),
        10_000,
      );
      const dropped = cli(p, ['policy', 'set', id, 'cgfence.io/profile-']);
      expect(dropped.status, dropped.stderr).toBe(0);
    } finally {
      await removeContainer(p, id);
    }
    const [detach] = await waitRecords('the detach', (x) => x.action === 'detach' && x.container_id === id, 20_000);
    // The exec backend's own detach ran: it reports the fence's last counters.
    expect(detach).toMatchObject({ denied: 0, denied_by_notify: 0 });
    expect(fs.readFileSync(p.daemonLog, 'utf8')).not.toMatch(new RegExp(`detach \\w+ of [^ ]*${id}`));
  });

  it('a misspelt cgfence-like annotation key gives a warning record naming the key and the fix', async () => {
    const id = cid('typo');
    expect(tryToolA(id, {}, { 'cgfenc.io/exec-allow': '/bin/sh' })).toBe('ran');
    const w = await records((r) => r.action === 'annotation-warning' && r.container_id === id);
    expect(w).toHaveLength(1);
    expect(w[0]).toMatchObject({ type: 'lifecycle', key: 'cgfenc.io/exec-allow', suggestion: 'cgfence.io/exec-allow' });
    expect(String(w[0].message)).toMatch(/did you mean cgfence\.io\/exec-allow/);
  });
});
