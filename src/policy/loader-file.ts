// The file the kernel actually maps when a program's ELF loader (PT_INTERP) lives on
// overlayfs: the layer's file below the overlay (ovl_mmap puts it in the mapping), so that is
// the identity the exec fence sees for a loader (bpf/exec-fence.bpf.c, loader_inode) and
// the one a loader is allowed under. Elsewhere the file is itself.
//
// Layers come from the super options of the mount in /proc/<pid>/mountinfo (upperdir first,
// then each lowerdir in order; the first layer holding the path is the one the overlay
// shows). Limit: a lowerdir that containerd shortened to a relative path (very many layers)
// cannot be located and is reported as an error rather than guessed.
import fs from 'node:fs';
import path from 'node:path';
import { ResolveError } from './identity-error';

interface Mount {
  mountPoint: string;
  fsType: string;
  superOptions: string;
}

/** Octal escapes (\040 for a space, \134 for a backslash) as mountinfo writes them. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

function mounts(mountinfo: string): Mount[] {
  const out: Mount[] = [];
  for (const line of mountinfo.split('\n')) {
    if (!line) continue;
    const [pre, post] = line.split(' - ');
    const f = pre.split(' ');
    const g = (post ?? '').split(' ');
    out.push({ mountPoint: unescape(f[4]), fsType: g[0], superOptions: g[2] ?? '' });
  }
  return out;
}

/** upperdir then lowerdirs, top first. Options are split on unescaped commas, lowerdir on unescaped colons. */
export function overlayLayers(superOptions: string): string[] {
  const opts = superOptions.split(/(?<!\\),/);
  const upper: string[] = [];
  const lower: string[] = [];
  for (const o of opts) {
    const i = o.indexOf('=');
    const k = i < 0 ? o : o.slice(0, i);
    const v = i < 0 ? '' : o.slice(i + 1);
    if (k === 'upperdir') upper.push(unescape(v.replace(/\\,/g, ',')));
    else if (k === 'lowerdir') lower.push(...v.split(/(?<!\\):/).map((d) => unescape(d.replace(/\\([,:])/g, '$1'))));
    else if (k === 'lowerdir+') lower.push(unescape(v.replace(/\\,/g, ',')));
  }
  return [...upper, ...lower.filter(Boolean)];
}

/**
 * The host path of the file the kernel maps for `inRoot` (a symlink-free path inside the root)
 * of a process (`pid`: its /proc/<pid>/mountinfo, paths as it sees them) or of a root
 * directory seen from here (`dir`).
 */
export function mappedFile(root: { pid: number } | { dir: string }, inRoot: string): string {
  const info = fs.readFileSync('pid' in root ? `/proc/${root.pid}/mountinfo` : '/proc/self/mountinfo', 'utf8');
  const full = 'pid' in root ? inRoot : path.join(root.dir, inRoot);
  const hostPath = 'pid' in root ? path.join(`/proc/${root.pid}/root`, inRoot) : full;
  // The mount holding the path: the longest mount point above it, the last one mounted there.
  let best: Mount | undefined;
  for (const m of mounts(info)) {
    const under = m.mountPoint === '/' || full === m.mountPoint || full.startsWith(m.mountPoint + '/');
    if (under && (!best || m.mountPoint.length >= best.mountPoint.length)) best = m;
  }
  if (!best || best.fsType !== 'overlay') return hostPath;
  const rel = path.relative(best.mountPoint, full);
  const layers = overlayLayers(best.superOptions);
  for (const layer of layers) {
    if (!path.isAbsolute(layer)) {
      throw new ResolveError(inRoot, `its overlay layer ${layer} is a relative path, which cannot be located from here`);
    }
    try {
      if (fs.lstatSync(path.join(layer, rel)).isFile()) return path.join(layer, rel);
    } catch {
      // not in this layer
    }
  }
  // The layers are not visible from here (an overlay assembled before a switch_root, as in
  // the VM harness): the overlay's own file is the best identity there is. Fail-closed on the
  // tracepoint backend (the kernel maps the lower file, whose identity then differs, and the
  // program is refused with reason loader-not-allowed), never wider.
  return hostPath;
}
