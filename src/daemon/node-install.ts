// What cgfence puts on a node besides the daemon's process, and how it goes away again:
// install copies cgfence-runc (and runc.conf) where containerd's runtime handler names it;
// uninstall stops the daemon with every fence detached, then removes the pins (maps,
// programs, links), the state, the spool, the socket, runc.conf and cgfence-runc. The audit
// log stays: it is evidence, and removing it is the operator's call.
import fs from 'node:fs';
import path from 'node:path';
import { DaemonClientError, request } from './daemon-client';
import { containerKey } from '../fence/backend';
import { FenceRegistry } from './fence-registry';

/** Copy next to the target, then rename: containerd never runs half a file, and a running launcher keeps its inode. */
export function installFile(from: string, to: string, mode: number): void {
  fs.mkdirSync(path.dirname(to), { recursive: true });
  const tmp = path.join(path.dirname(to), `.${path.basename(to)}.new-${process.pid}`);
  try {
    fs.copyFileSync(from, tmp);
    fs.chmodSync(tmp, mode);
    fs.renameSync(tmp, to);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** A file is a cgfence-runc if it carries the launcher's own settings' names (no other runc does). */
export function isCgfenceRunc(file: string): boolean {
  try {
    const st = fs.lstatSync(file);
    if (st.isSymbolicLink()) return isCgfenceRunc(fs.realpathSync(file));
    return st.isFile() && fs.readFileSync(file).includes('CGFENCE_SOCKET');
  } catch {
    return false;
  }
}

export interface UninstallTargets {
  socket: string;
  pinDir: string;
  stateDir: string;
  spoolDir: string;
  runcPath: string;
  runcConf: string;
  auditLog: string;
}

export interface UninstallStep {
  what: string;
  path: string;
  done: 'removed' | 'absent' | 'kept' | 'stopped' | 'would remove' | 'would stop';
  why?: string;
}

export class UninstallRefused extends Error {}

async function stillFenced(t: UninstallTargets): Promise<{ daemon: boolean; fenced: string[] }> {
  try {
    const ps = await request<{ containers: Array<{ namespace: string; id: string }> }>(t.socket, { op: 'ps' }, 5000);
    return { daemon: true, fenced: ps.containers.map((c) => containerKey(c.namespace, c.id)) };
  } catch (e) {
    if (!(e instanceof DaemonClientError) || !/cannot reach/.test(e.message)) throw e;
  }
  // No daemon: its state file says whom the pinned fences are for.
  try {
    return { daemon: false, fenced: fs.existsSync(t.pinDir) ? FenceRegistry.savedKeys(t.stateDir) : [] };
  } catch {
    return { daemon: false, fenced: [] };
  }
}

async function waitGone(socket: string, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      await request(socket, { op: 'status' }, 2000);
    } catch (e) {
      if (e instanceof DaemonClientError && /cannot reach/.test(e.message)) return true;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

/**
 * Removes cgfence from the node. Refuses while containers are fenced, unless `force`: they
 * then run on unfenced, and cgfence-runc stays, because their shims run it to stop them.
 */
export async function uninstall(t: UninstallTargets, opts: { force?: boolean; dryRun?: boolean } = {}): Promise<UninstallStep[]> {
  const steps: UninstallStep[] = [];
  const { daemon, fenced } = await stillFenced(t);
  if (fenced.length && !opts.force) {
    const shown = fenced.slice(0, 5).join(', ') + (fenced.length > 5 ? `, and ${fenced.length - 5} more` : '');
    throw new UninstallRefused(
      `${fenced.length} container(s) are still fenced (${shown}): stop them first, or pass --force (they go on unfenced)`,
    );
  }
  if (daemon) {
    if (opts.dryRun) {
      steps.push({ what: 'daemon', path: t.socket, done: 'would stop', why: 'with every fence detached' });
    } else {
      await request(t.socket, { op: 'shutdown', detach: true }, 10_000);
      if (!(await waitGone(t.socket, 30_000))) throw new Error(`the daemon at ${t.socket} did not stop within 30 s`);
      steps.push({ what: 'daemon', path: t.socket, done: 'stopped', why: 'every fence detached' });
    }
  }
  const remove = (what: string, p: string, why?: string) => {
    if (!looksOurs(what, p)) {
      steps.push({ what, path: p, done: 'kept', why: "does not look like cgfence's (a system directory, or foreign files in it)" });
      return;
    }
    if (!fs.existsSync(p) && !isSymlink(p)) {
      steps.push({ what, path: p, done: 'absent' });
      return;
    }
    if (!opts.dryRun) fs.rmSync(p, { recursive: true, force: true });
    steps.push({ what, path: p, done: opts.dryRun ? 'would remove' : 'removed', ...(why ? { why } : {}) });
  };
  remove('pins', t.pinDir, 'maps, programs and links pinned in bpffs');
  remove('state', t.stateDir);
  remove('spool', t.spoolDir);
  remove('socket', t.socket);
  remove('runc.conf', t.runcConf);
  if (fenced.length) {
    steps.push({
      what: 'cgfence-runc',
      path: t.runcPath,
      done: 'kept',
      why: 'containers created through it still run, and their shims run it to stop them; remove it when they are gone',
    });
  } else if (fs.existsSync(t.runcPath) && !isCgfenceRunc(t.runcPath)) {
    steps.push({ what: 'cgfence-runc', path: t.runcPath, done: 'kept', why: 'not a cgfence-runc' });
  } else {
    remove('cgfence-runc', t.runcPath);
  }
  steps.push({ what: 'audit log', path: t.auditLog, done: 'kept', why: 'evidence; remove it yourself when it is no longer needed' });
  return steps;
}

/**
 * A guard against a mistyped flag removing more than cgfence's own: never / or a top-level
 * directory, and a state directory only if it holds the daemon's registry (or nothing).
 */
function looksOurs(what: string, p: string): boolean {
  const abs = path.resolve(p);
  if (abs.split('/').filter(Boolean).length < 2) return false;
  if (what === 'state' && fs.existsSync(abs)) {
    try {
      const names = fs.readdirSync(abs);
      return names.length === 0 || names.includes('fences.json') || names.includes('fences.journal');
    } catch {
      return false;
    }
  }
  return true;
}

function isSymlink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}
