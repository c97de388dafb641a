// `npm run demo`: the main job end to end, readably: a sandbox, a fenced container with an
// allowed and a denied exec, a refused container, the audit lines, and the teardown.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import { formatRecord, readRecords } from '../../audit/audit-read';
import { TEST_IMAGE_NAME } from '../../image/oci-image';
import { SANDBOX_NAMESPACE, sandboxDown, sandboxUp } from '../../sandbox/sandbox';
import { parseArgs } from '../args';
import { request } from '../../daemon/daemon-client';
import { formatTimestamp } from '../time-format';

export const help = `usage: cgfence demo [--dir DIR] [--keep]

Brings a sandbox up in DIR (default /run/cgfence-demo), runs a fenced container that
does one allowed and one denied exec, tries a container with an invalid annotation,
prints the audit log, and tears the sandbox down (unless --keep).`;

function step(title: string): void {
  console.log(`\n\x1b[1m== ${title}\x1b[0m`);
}

export async function run(argv: string[]): Promise<number> {
  const a = parseArgs(argv, { values: ['dir'], bools: ['keep'] });
  if (a.bools.has('help')) {
    console.log(help);
    return 0;
  }
  const dir = a.flags.dir ?? '/run/cgfence-demo';
  step('1. sandbox: a private containerd and the cgfence daemon');
  const p = await sandboxUp(dir, (m) => console.log(`   ${m}`));
  const ctr = (args: string[]) =>
    spawnSync('ctr', ['-a', p.containerdSocket, '-n', SANDBOX_NAMESPACE, ...args], { encoding: 'utf8', timeout: 120_000 });
  const id = `demo-${crypto.randomBytes(3).toString('hex')}`;
  try {
    step('2. a fenced container: only /bin/sh (busybox) may run');
    const script =
      'echo "inside: hello from $(uname -s), sh and its busybox applets are allowed"; /usr/local/bin/tool-a echo "tool-a ran (it should not have)"; echo "inside: tool-a exited with status $?"';
    const cmd = [
      'run',
      '--rm',
      '--runc-binary',
      p.runc,
      '--annotation',
      'cgfence.io/exec-allow=/bin/sh',
      TEST_IMAGE_NAME,
      id,
      '/bin/sh',
      '-c',
      script,
    ];
    console.log(`   $ ctr ${cmd.map((c) => (/\s/.test(c) ? JSON.stringify(c) : c)).join(' ')}`);
    const r = ctr(cmd);
    for (const line of `${r.stdout}${r.stderr}`.trim().split('\n')) console.log(`   | ${line}`);
    console.log('   tool-a is a separate copy of busybox: another file identity, not in the allow-list,');
    console.log('   so its execve was refused (EACCES: "Permission denied", status 126); the kernel fence');
    console.log('   behind that check kills anything that slips past before its first instruction (137).');

    step('3. the network fence: 127.0.0.2 is denied, the rest of loopback is not');
    const net = ctr([
      'run',
      '--rm',
      '--runc-binary',
      p.runc,
      '--annotation',
      'cgfence.io/egress-deny=127.0.0.2/32',
      TEST_IMAGE_NAME,
      `${id}-net`,
      '/bin/sh',
      '-c',
      'nc -l -p 8080 -e echo hello-from-127.0.0.1 & sleep 0.2; echo "to 127.0.0.1: $(nc -w 2 127.0.0.1 8080 </dev/null)"; nc -w 2 127.0.0.2 8080 </dev/null; echo "to 127.0.0.2: exit status $?"',
    ]);
    for (const line of `${net.stdout}${net.stderr}`.trim().split('\n')) console.log(`   | ${line}`);
    console.log('   the connect() to a denied address fails at once with EPERM (no timeout); CGROUP_SKB');
    console.log('   programs on the container cgroup stay as the packet-level backstop.');

    step('4. a container with a bad annotation is not started');
    const bad = ctr([
      'run',
      '--rm',
      '--runc-binary',
      p.runc,
      '--annotation',
      'cgfence.io/egress-allow=10.0.0.300/8',
      TEST_IMAGE_NAME,
      `${id}-bad`,
      '/bin/true',
    ]);
    console.log(`   ctr exit status ${bad.status}:`);
    for (const line of bad.stderr.trim().split('\n')) console.log(`   | ${line}`);
    ctr(['containers', 'rm', `${id}-bad`]);

    step('5. status and the audit log');
    const st = await request<{ fences: number; kernel: { backends: Record<string, { backend: string }> } }>(p.socket, { op: 'status' });
    console.log(`   exec backend: ${st.kernel.backends.exec.backend}; fenced now: ${st.fences}`);
    const recs = await readRecords(p.auditLog, { where: (x) => typeof x.container_id === 'string' && x.container_id.startsWith(id) });
    for (const rec of recs) console.log(`   ${formatRecord(rec, { time: (ts) => formatTimestamp(ts) })}`);
    console.log(`   (raw JSON lines: ${p.auditLog})`);
  } finally {
    if (a.bools.has('keep')) {
      console.log(`\nsandbox kept: . ${p.env}; stop it with: cgfence sandbox down --dir ${dir}`);
    } else {
      step('6. teardown');
      await sandboxDown(dir, (m) => console.log(`   ${m}`));
    }
  }
  return 0;
}
