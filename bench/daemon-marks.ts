// Loaded into the sandbox daemon by `npm run bench start-timeline` (NODE_OPTIONS=--require):
// writes a line into the bench's ftrace instance (CGFENCE_BENCH_MARKER, its trace_marker) at
// the daemon's steps of a fenced start, beside the kernel's exec and exit stamps: each reply
// on the launcher's socket (the first of a start is prepare's), the seccomp listener's
// hand-off, the attach begun there, and its outcome pushed to the launcher. A profile, not a
// feature: it wraps the daemon's methods by name, so a daemon that lost one of those names
// fails to start here, saying which, rather than giving a timeline without them.
import fs from 'node:fs';
import { FenceManager } from '../src/daemon/fence-manager';
import { SocketServer } from '../src/daemon/socket-server';

type Method = (this: unknown, ...args: unknown[]) => unknown;

const file = process.env.CGFENCE_BENCH_MARKER;
let fd: number | null = null;

function mark(what: string): void {
  if (!file) return;
  try {
    // The instance is made after the bench's warm-up: until then there is nowhere to write.
    fd ??= fs.openSync(file, 'w');
    fs.writeSync(fd, `cgfence ${what}`);
  } catch {
    fd = null;
  }
}

function wrap(proto: object, name: string, around: (call: () => unknown, args: unknown[]) => unknown): void {
  const methods = proto as Record<string, Method>;
  const original = methods[name];
  if (typeof original !== 'function') throw new Error(`bench/daemon-marks: the daemon has no method ${name} any more; update this profile`);
  methods[name] = function (this: unknown, ...args: unknown[]) {
    return around(() => original.apply(this, args), args);
  };
}

wrap(SocketServer.prototype, 'reply', (call, [, reply]) => {
  const out = call();
  mark((reply as { pushed?: unknown } | undefined)?.pushed ? 'pushed' : 'reply');
  return out;
});
wrap(FenceManager.prototype, 'attachOnHandOff', (call) => {
  mark('hand-off');
  return call();
});
wrap(FenceManager.prototype, 'attachPrepared', (call) => {
  mark('attach-begin');
  try {
    return call();
  } finally {
    mark('attach-end');
  }
});
