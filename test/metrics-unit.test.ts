// The Metrics class's bookkeeping with hand-made sources: workload labels, retirement of
// exited containers into the node total, seccomp counted from records with their `count`,
// the per-workload series cap, and counters that never go back. (What the kernel counts is
// proven end to end in metrics-health.test.ts.)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { FencedContainer } from '../src/fence/backend';
import { Decisions, Metrics, workloadOf } from '../src/daemon/metrics';

function fenced(namespace: string, id: string, extra: Record<string, unknown> = {}): FencedContainer {
  return {
    namespace,
    id,
    bundle: '',
    pid: 1,
    cgroupPath: null,
    cgroupId: null,
    eventKeys: [],
    annotations: {},
    mode: 'enforce',
    policyHash: 'sha256:x',
    controls: { exec: 'enforced', network: 'none', seccomp: 'none' },
    backends: {},
    attachedAt: new Date().toISOString(),
    how: 'create',
    ...extra,
  } as FencedContainer;
}

function value(text: string, name: string, labels: Record<string, string>): number | null {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (want.every((w) => line.includes(w))) return Number(line.split(' ').pop());
  }
  return null;
}

function setup(maxSeries = 200) {
  const live: FencedContainer[] = [];
  const kernel = new Map<string, Decisions>();
  const m = new Metrics(
    {
      fenced: () => live,
      kernelDecisions: (f) => kernel.get(f.id) ?? {},
      kernelDrops: () => 0,
      audit: () => ({ written: 0, writeErrors: 0, dropped: 0, pending: 0 }),
      containerdConnected: () => true,
      health: () => ({ live: true, ready: true, checks: [] }),
      tables: () => ({ exec_allow: { used: 3, capacity: 65536 } }),
      build: { version: '0.0.0', node: process.version, libbpf: 'v1', kernel: 'k' },
    },
    maxSeries,
  );
  return { m, live, kernel, text: () => m.registry.metrics() };
}

describe('workload labels', () => {
  it('pod, namespace and container from the fenced-container record when it has them, else namespace and id', () => {
    expect(workloadOf(fenced('k8s.io', 'a'.repeat(64), { workload: { pod: 'web-1', podNamespace: 'shop', container: 'nginx' } }))).toEqual({
      namespace: 'shop',
      pod: 'web-1',
      container: 'nginx',
    });
    expect(workloadOf(fenced('k8s.io', 'b', { workload: { podName: 'web-2', namespace: 'shop', containerName: 'side' } }))).toEqual({
      namespace: 'shop',
      pod: 'web-2',
      container: 'side',
    });
    expect(workloadOf(fenced('default', 'try1'))).toEqual({ namespace: 'default', pod: 'try1', container: '' });
  });
});

describe('Metrics', () => {
  it('node totals keep what exited containers counted; their workload series go', async () => {
    const { m, live, kernel, text } = setup();
    const a = fenced('default', 'a');
    live.push(a);
    kernel.set('a', { exec: { deny: 2, allow: 5 }, network: { deny: 60 } });
    let t = await text();
    expect(value(t, 'cgfence_decisions_total', { control: 'network', action: 'deny' })).toBe(60);
    expect(value(t, 'cgfence_workload_decisions_total', { pod: 'a', control: 'exec', action: 'deny' })).toBe(2);
    m.retire(a);
    live.pop();
    kernel.delete('a');
    t = await text();
    expect(value(t, 'cgfence_decisions_total', { control: 'network', action: 'deny' })).toBe(60);
    expect(value(t, 'cgfence_decisions_total', { control: 'exec', action: 'allow' })).toBe(5);
    expect(value(t, 'cgfence_workload_decisions_total', { pod: 'a' })).toBeNull();
  });

  it('seccomp decisions come from records, a rate-limited record counting as its count', async () => {
    const { m, live, text } = setup();
    live.push(fenced('default', 's'));
    m.observeRecords([
      { type: 'seccomp', action: 'deny', namespace: 'default', container_id: 's', count: 7 },
      { type: 'seccomp', action: 'deny', namespace: 'default', container_id: 's' },
      { type: 'seccomp', action: 'audit', namespace: 'default', container_id: 's', count: 3 },
      { type: 'exec', action: 'deny', namespace: 'default', container_id: 's' }, // counted by the kernel, not here
      { type: 'lifecycle', action: 'attach', namespace: 'default', container_id: 's' },
    ]);
    const t = await text();
    expect(value(t, 'cgfence_decisions_total', { control: 'seccomp', action: 'deny' })).toBe(8);
    expect(value(t, 'cgfence_decisions_total', { control: 'seccomp', action: 'audit' })).toBe(3);
    expect(value(t, 'cgfence_decisions_total', { control: 'exec', action: 'deny' })).toBeNull();
    expect(value(t, 'cgfence_workload_decisions_total', { pod: 's', control: 'seccomp', action: 'deny' })).toBe(8);
  });

  it('per-workload series stop at the cap and say how many were left out', async () => {
    const { live, kernel, text } = setup(2);
    for (const id of ['a', 'b', 'c']) {
      live.push(fenced('default', id));
      kernel.set(id, { exec: { deny: 1 } });
    }
    const t = await text();
    expect(t.split('\n').filter((l) => l.startsWith('cgfence_workload_decisions_total{'))).toHaveLength(2);
    expect(t).toMatch(/^cgfence_workload_series_dropped 1$/m);
    expect(value(t, 'cgfence_decisions_total', { control: 'exec', action: 'deny' })).toBe(3);
  });

  it('a node counter never goes back when a live kernel counter restarts, and counts on from there', async () => {
    const { live, kernel, text } = setup();
    live.push(fenced('default', 'x'));
    kernel.set('x', { exec: { deny: 4 } });
    expect(value(await text(), 'cgfence_decisions_total', { control: 'exec', action: 'deny' })).toBe(4);
    kernel.set('x', { exec: { deny: 1 } });
    expect(value(await text(), 'cgfence_decisions_total', { control: 'exec', action: 'deny' })).toBe(4);
    // What the restarted counter counts next is counted on top.
    kernel.set('x', { exec: { deny: 3 } });
    expect(value(await text(), 'cgfence_decisions_total', { control: 'exec', action: 'deny' })).toBe(6);
  });

  it('refusals are counted per stage', async () => {
    const { m, text } = setup();
    m.refusal('prepare');
    m.refusal('prepare');
    m.refusal('policy-set');
    const t = await text();
    expect(value(t, 'cgfence_refusals_total', { stage: 'prepare' })).toBe(2);
    expect(value(t, 'cgfence_refusals_total', { stage: 'policy-set' })).toBe(1);
  });
});

describe("prom-client's process metrics", () => {
  it('are collected only once the metrics are served (their event-loop timer costs CPU at idle)', async () => {
    const { m, text } = setup();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgfence-metrics-unit-'));
    try {
      expect(await text()).not.toMatch(/^cgfence_process_cpu_seconds_total/m);
      expect(await text()).not.toMatch(/^cgfence_nodejs_eventloop_lag/m);
      await m.listen(path.join(dir, 'metrics.sock'));
      expect(await text()).toMatch(/^cgfence_process_cpu_seconds_total/m);
      expect(await text()).toMatch(/^cgfence_nodejs_eventloop_lag/m);
    } finally {
      await m.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
