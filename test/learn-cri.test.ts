// Learn mode for a Kubernetes pod, driven through a private containerd's CRI plugin with
// cgfence's runtime handler, as kubelet drives it: a pod annotated cgfence.io/mode=learn with
// a job container that lives a few milliseconds and an app container, `cgfence learn --pod`
// merges the two (found by the pod annotations containerd's CRI puts on each container), and
// the yaml it prints, given to a new pod, fences both with zero denials.
// (The CRI harness, test/helpers/cri-sandbox.ts, is the one test/oci-config.test.ts uses.)
import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { readRecords } from '../src/audit/audit-read';
import { SandboxPaths } from '../src/sandbox/sandbox';
import { CriPod, CriSandbox, containerOutput } from './helpers/cri-sandbox';
import { cli, sandboxDir, waitFor } from './helpers/sandbox';

const POD_NAMESPACE = 'shop';
const sb = new CriSandbox(sandboxDir('lcri'));
let p: SandboxPaths;

function runPod(name: string, annotations: Record<string, string>): Promise<CriPod> {
  return sb.runPod(name, { namespace: POD_NAMESPACE, annotations });
}

/** A container as kubelet creates it, with kubelet's labels; it runs `script` once. */
function runContainer(pod: CriPod, name: string, script: string): Promise<string> {
  return sb.runContainer(pod, name, script, {
    'io.kubernetes.pod.name': pod.config.metadata.name,
    'io.kubernetes.pod.namespace': POD_NAMESPACE,
    'io.kubernetes.container.name': name,
  });
}

/** Waits for the container to exit and the daemon to have handled it. */
async function exited(id: string): Promise<void> {
  await waitFor(`${id} to exit`, () => !cli(p, ['ps', '--json']).stdout.includes(id), 60_000);
}

beforeAll(async () => {
  await sb.up();
  p = sb.paths;
});

afterAll(() => sb.down());

describe('learn over a pod through the CRI', () => {
  it("merges the pod's containers into pod annotations that fence a new pod with zero denials", async () => {
    const name = `web-${crypto.randomBytes(3).toString('hex')}`;
    const pod = await runPod(name, { 'cgfence.io/mode': 'learn' });
    // A job of a few milliseconds (like an init container), and an app.
    const job = await runContainer(pod, 'job', '(exec -a echo /usr/local/bin/tool-a job-ran); echo job-done');
    await exited(job);
    const app = await runContainer(pod, 'app', 'ls / >/dev/null; echo app-done');
    await exited(app);
    expect(containerOutput(pod, 'job')).toBe('job-ran\njob-done');
    expect(containerOutput(pod, 'app')).toBe('app-done');

    const out = cli(p, ['learn', '--pod', `${POD_NAMESPACE}/${name}`, '--format', 'yaml']);
    expect(out.status, out.stderr).toBe(0);
    expect(out.stdout).toMatch(/^# cgfence learn: what 2 containers \(k8s\.io\/\w+, k8s\.io\/\w+\) did, as pod annotations/);
    const ann = (YAML.parse(out.stdout) as { metadata: { annotations: Record<string, string> } }).metadata.annotations;
    expect(ann['cgfence.io/exec-allow']).toBe('/bin/busybox,/usr/local/bin/tool-a');
    const json = JSON.parse(cli(p, ['learn', '--pod', `${POD_NAMESPACE}/${name}`, '--json']).stdout) as {
      sources: Array<{ id: string; pod: { namespace: string; name: string } }>;
    };
    expect(json.sources.map((s) => s.id).sort()).toEqual([app, job].sort());
    expect(json.sources.every((s) => s.pod.namespace === POD_NAMESPACE && s.pod.name === name)).toBe(true);

    const name2 = `web2-${crypto.randomBytes(3).toString('hex')}`;
    const pod2 = await runPod(name2, ann);
    const job2 = await runContainer(pod2, 'job', '(exec -a echo /usr/local/bin/tool-a job-ran); echo job-done');
    await exited(job2);
    const app2 = await runContainer(pod2, 'app', 'ls / >/dev/null; echo app-done');
    await exited(app2);
    expect(containerOutput(pod2, 'job')).toBe('job-ran\njob-done');
    expect(containerOutput(pod2, 'app')).toBe('app-done');
    for (const id of [job2, app2]) {
      // The detach record comes last, once the backends have written what they owe the
      // container (its network counts): wait for it.
      let recs = await readRecords(p.auditLog, { container: id });
      for (let i = 0; i < 150 && !recs.some((r) => r.type === 'lifecycle' && r.action === 'detach'); i++) {
        await new Promise((r) => setTimeout(r, 100));
        recs = await readRecords(p.auditLog, { container: id });
      }
      const attach = recs.find((r) => r.type === 'lifecycle' && r.action === 'attach');
      expect(attach?.controls).toEqual({ exec: 'enforced', network: 'enforced', seccomp: 'enforced' });
      const detach = recs.find((r) => r.type === 'lifecycle' && r.action === 'detach');
      expect(detach?.denied).toBe(0);
      expect(recs.filter((r) => r.action === 'deny')).toEqual([]);
    }
  });
});
