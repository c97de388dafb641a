// The exec rate limiter for denials made by the seccomp notify loop (exec-notify.ts), which
// never reach the kernel fence and its limiter: the same rule in user space. Per container
// and file identity at most EXEC_RATE_BURST records per window, per container at most
// EXEC_RATE_FENCE_BURST; every denial past that is counted and goes out as a count record
// (`count`, `rate_limited`) at the next sweep, so nothing is lost and one container cannot
// flush the audit log.
import { EXEC_RATE_BURST, EXEC_RATE_FENCE_BURST, EXEC_RATE_WINDOW_NS } from '../../kernel/abi';

interface Window {
  start: bigint;
  emitted: number;
}

interface Held<T> {
  sample: T;
  count: number;
}

export class NotifyRateLimiter<T> {
  private readonly windows = new Map<string, Window>();
  /** Counted denials not reported yet, by container and identity (or container only). */
  private readonly held = new Map<string, Held<T>>();

  constructor(
    private readonly burst = EXEC_RATE_BURST,
    private readonly containerBurst = EXEC_RATE_FENCE_BURST,
    private readonly windowNs = EXEC_RATE_WINDOW_NS,
  ) {}

  private take(key: string, now: bigint): number {
    let w = this.windows.get(key);
    if (!w || now - w.start >= this.windowNs) this.windows.set(key, (w = { start: now, emitted: 0 }));
    return w.emitted++;
  }

  /**
   * True when the denial gets its own record; false when it was counted (under its identity,
   * or under its container alone once the container's burst is spent).
   */
  admit(container: string, identity: string, sample: T, now: bigint): boolean {
    const held = (k: string) => {
      const h = this.held.get(k);
      if (h) h.count++;
      else this.held.set(k, { sample, count: 1 });
    };
    if (this.take(`${container}|${identity}`, now) >= this.burst) {
      held(`${container}|${identity}`);
      return false;
    }
    if (this.take(container, now) >= this.containerBurst) {
      held(container);
      return false;
    }
    return true;
  }

  /**
   * The counts held since the last drain: each with a sample denial and whether it names the
   * identity. Windows idle for two periods are forgotten.
   */
  drain(now: bigint): Array<{ sample: T; count: number; identity: boolean }> {
    const out = [...this.held].map(([k, h]) => ({ sample: h.sample, count: h.count, identity: k.includes('|') }));
    this.held.clear();
    for (const [k, w] of this.windows) if (now - w.start > 2n * this.windowNs) this.windows.delete(k);
    return out;
  }
}
