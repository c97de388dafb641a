import { EventEmitter } from 'node:events';
import { containerKey } from '../policy/container-key';
import type { ContainerdClient, Envelope, Subscription } from './client';
import { ContainerdEvent, decodeEnvelope, eventContainerId } from './events';

export type EventHandler = (ev: ContainerdEvent) => Promise<void> | void;

export interface EventMonitorOptions {
  client: ContainerdClient;
  handler: EventHandler;
  /**
   * Called after every (re)subscription, once the stream is known to be live and
   * before any event received on it is handed to `handler`. It brings cgfence's
   * state in line with containerd's (list containers and tasks); events that
   * arrive meanwhile are held and dispatched afterwards, so nothing falls in the
   * gap between the listing and the subscription.
   */
  reconcile: () => Promise<void>;
  /** containerd event filters, OR-ed; empty means every event of every namespace. */
  filters?: string[];
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Attempts per event before the handler's failure is given up on (>= 1). */
  handlerMaxAttempts?: number;
  onHandlerGiveUp?: (ev: ContainerdEvent, err: unknown) => void;
  /**
   * containerd sends no response headers on Subscribe until the first event, so
   * the client cannot tell when the server has registered it. The monitor
   * publishes a probe event (an Empty payload on `probeTopic` in `probeNamespace`)
   * until it comes back on its own stream. `false` skips this and reconciles right
   * after issuing Subscribe, which can miss events published in between.
   */
  syncProbe?: boolean;
  probeNamespace?: string;
  probeTopic?: string;
  /** Give up on a subscription that never proves live, and reconnect. */
  syncTimeoutMs?: number;
  log?: (msg: string) => void;
}

export type MonitorState = 'stopped' | 'connecting' | 'syncing' | 'reconciling' | 'connected' | 'disconnected';

export interface EventMonitorStatus {
  state: MonitorState;
  connected: boolean;
  /** Successful (re)connections, each followed by a reconcile. */
  connects: number;
  connectedAt?: Date;
  lastError?: string;
  lastErrorAt?: Date;
  eventsReceived: number;
  handlerFailures: number;
  handlerGiveUps: number;
  lastHandlerError?: string;
  /** Events queued or being retried, over all containers. */
  pending: number;
}

interface QueueItem {
  ev: ContainerdEvent;
  attempts: number;
}

interface Queue {
  items: QueueItem[];
  running: boolean;
}

class Stopped extends Error {}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export class EventMonitor extends EventEmitter {
  private readonly opts: Required<Omit<EventMonitorOptions, 'onHandlerGiveUp' | 'log'>> &
    Pick<EventMonitorOptions, 'onHandlerGiveUp' | 'log'>;
  private st: EventMonitorStatus = {
    state: 'stopped',
    connected: false,
    connects: 0,
    eventsReceived: 0,
    handlerFailures: 0,
    handlerGiveUps: 0,
    pending: 0,
  };
  private stopped = true;
  private loop?: Promise<void>;
  private sub?: Subscription;
  private readonly queues = new Map<string, Queue>();
  // Dispatch is held while a reconcile runs so that handlers see the post-listing world.
  private paused = true;
  private readonly sleepers = new Set<() => void>();
  private probeSeen?: () => void;
  private streamDead = false;
  private abortStream?: (e: Error) => void;
  private idleWaiters: Array<() => void> = [];

  constructor(opts: EventMonitorOptions) {
    super();
    this.opts = {
      filters: [],
      minBackoffMs: 100,
      maxBackoffMs: 5000,
      handlerMaxAttempts: 10,
      syncProbe: true,
      probeNamespace: 'cgfence',
      probeTopic: '/cgfence/monitor-sync',
      syncTimeoutMs: 10_000,
      ...opts,
    };
  }

  status(): EventMonitorStatus {
    return { ...this.st, pending: this.pendingCount() };
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop = this.run();
  }

  /** Stops the stream and retries; queued events are dropped. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    // A cancelled subscription reports nothing (by design), so the wait on it is ended here.
    this.abortStream?.(new Stopped('stopped'));
    this.sub?.cancel();
    for (const wake of [...this.sleepers]) wake();
    await this.loop;
    this.queues.clear();
    this.setState('stopped', false);
    this.flushIdle();
  }

  /** Resolves when the monitor is connected and reconciled (or rejects after timeoutMs). */
  waitConnected(timeoutMs = 30_000): Promise<void> {
    if (this.st.state === 'connected') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onStatus = (s: EventMonitorStatus) => {
        if (s.state === 'connected') {
          clearTimeout(timer);
          this.off('status', onStatus);
          resolve();
        }
      };
      const timer = setTimeout(() => {
        this.off('status', onStatus);
        reject(new Error(`event monitor not connected after ${timeoutMs} ms (last error: ${this.st.lastError ?? 'none'})`));
      }, timeoutMs);
      this.on('status', onStatus);
    });
  }

  /** Resolves once every queued event has been handled or given up on. */
  idle(): Promise<void> {
    if (this.pendingCount() === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private log(msg: string): void {
    this.opts.log?.(msg);
  }

  private setState(state: MonitorState, connected: boolean): void {
    this.st.state = state;
    this.st.connected = connected;
    if (state === 'connected') this.st.connectedAt = new Date();
    this.emit('status', this.status());
  }

  private recordError(e: unknown): void {
    this.st.lastError = errText(e);
    this.st.lastErrorAt = new Date();
  }

  private backoff(attempt: number): number {
    return Math.min(this.opts.maxBackoffMs, this.opts.minBackoffMs * 2 ** Math.max(0, attempt));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(t);
        this.sleepers.delete(wake);
        resolve();
      };
      const t = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.stopped) {
      try {
        await this.connectOnce(() => {
          attempt = 0;
        });
      } catch (e) {
        if (this.stopped || e instanceof Stopped) break;
        this.recordError(e);
        this.log(`containerd event stream: ${errText(e)}`);
      }
      this.paused = true;
      if (this.stopped) break;
      this.setState('disconnected', false);
      const delay = this.backoff(attempt++);
      await this.sleep(delay);
    }
  }

  /** One subscription's life: subscribe, prove live, reconcile, dispatch until the stream fails. */
  private async connectOnce(onConnected: () => void): Promise<void> {
    this.setState('connecting', false);
    let streamFailed!: (e: Error) => void;
    const streamDone = new Promise<never>((_, reject) => {
      streamFailed = (e) => {
        this.streamDead = true;
        reject(e);
      };
    });
    this.streamDead = false;
    this.abortStream = streamFailed;
    // Keeps an unobserved rejection from being reported while we are still syncing.
    streamDone.catch(() => undefined);

    const filters = this.opts.filters.length > 0 ? [...this.opts.filters, `topic=="${this.opts.probeTopic}"`] : [];
    this.sub = this.opts.client.subscribe(
      filters,
      (env) => this.onEnvelope(env),
      (err) => streamFailed(err),
    );
    try {
      if (this.opts.syncProbe) {
        this.setState('syncing', false);
        await Promise.race([this.sync(), streamDone]);
      }
      this.setState('reconciling', false);
      await this.reconcileUntilDone(streamDone);
      this.st.connects++;
      onConnected();
      this.paused = false;
      this.setState('connected', true);
      this.kickAll();
      await streamDone;
    } finally {
      this.sub.cancel();
      this.sub = undefined;
      this.probeSeen = undefined;
      this.abortStream = undefined;
    }
  }

  private async sync(): Promise<void> {
    const deadline = Date.now() + this.opts.syncTimeoutMs;
    let seen = false;
    const seenP = new Promise<void>((resolve) => {
      this.probeSeen = () => {
        seen = true;
        resolve();
      };
    });
    // Publishing more than once covers the case where the first probe went out
    // before the server had registered our Subscribe.
    // The stream dying ends this loop quietly: connectOnce already lost the race to it.
    while (!seen && !this.streamDead) {
      if (this.stopped) throw new Stopped();
      if (Date.now() > deadline) throw new Error(`event subscription did not become live within ${this.opts.syncTimeoutMs} ms`);
      await this.opts.client.publish(this.opts.probeNamespace, this.opts.probeTopic);
      await Promise.race([seenP, this.sleep(200)]);
    }
  }

  private async reconcileUntilDone(streamDone: Promise<never>): Promise<void> {
    let attempt = 0;
    for (;;) {
      if (this.stopped) throw new Stopped();
      try {
        await Promise.race([this.opts.reconcile(), streamDone]);
        return;
      } catch (e) {
        // A dead stream is for the outer loop (resubscribe, then reconcile again);
        // a failed reconcile on a live stream is retried on its own.
        if (this.streamDead) throw e;
        this.recordError(new Error(`reconcile failed: ${errText(e)}`));
        this.log(`reconcile failed: ${errText(e)}`);
        this.emit('status', this.status());
        await this.sleep(this.backoff(attempt++));
      }
    }
  }

  private onEnvelope(env: Envelope): void {
    if (env.topic === this.opts.probeTopic) {
      this.probeSeen?.();
      return;
    }
    this.st.eventsReceived++;
    let ev: ContainerdEvent;
    try {
      ev = decodeEnvelope(env);
    } catch (e) {
      this.recordError(new Error(`cannot decode ${env.topic} event: ${errText(e)}`));
      this.emit('status', this.status());
      return;
    }
    const cid = eventContainerId(ev);
    // Events of one container are handled strictly in order; events of different
    // containers (and container-less events, on their own queue) run concurrently.
    const key = cid === undefined ? '' : containerKey(ev.namespace, cid);
    let q = this.queues.get(key);
    if (!q) {
      q = { items: [], running: false };
      this.queues.set(key, q);
    }
    q.items.push({ ev, attempts: 0 });
    if (!this.paused) void this.drain(key, q);
  }

  private kickAll(): void {
    for (const [key, q] of this.queues) void this.drain(key, q);
  }

  private async drain(key: string, q: Queue): Promise<void> {
    if (q.running) return;
    q.running = true;
    try {
      while (q.items.length > 0 && !this.paused && !this.stopped) {
        const item = q.items[0];
        try {
          await this.opts.handler(item.ev);
          q.items.shift();
        } catch (e) {
          item.attempts++;
          this.st.handlerFailures++;
          this.st.lastHandlerError = `${item.ev.kind} ${key}: ${errText(e)}`;
          if (item.attempts >= this.opts.handlerMaxAttempts) {
            q.items.shift();
            this.st.handlerGiveUps++;
            this.log(`giving up on ${item.ev.kind} for ${key} after ${item.attempts} attempts: ${errText(e)}`);
            try {
              this.opts.onHandlerGiveUp?.(item.ev, e);
            } catch {
              // The give-up hook is a notification; its failure must not wedge the queue.
            }
          } else {
            this.emit('status', this.status());
            await this.sleep(this.backoff(item.attempts - 1));
          }
        }
      }
    } finally {
      q.running = false;
      if (q.items.length === 0 && this.queues.get(key) === q) this.queues.delete(key);
      if (this.pendingCount() === 0) this.flushIdle();
    }
  }

  private pendingCount(): number {
    let n = 0;
    for (const q of this.queues.values()) n += q.items.length;
    return n;
  }

  private flushIdle(): void {
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const r of w) r();
  }
}
