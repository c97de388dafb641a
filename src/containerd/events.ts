import type { Envelope } from './client';
import { anyTypeName, protoType, ProtoAny, ProtoTimestamp, timestampToDate, toNumber } from './protos';

interface Base {
  namespace: string;
  topic: string;
  /** When containerd published it. */
  timestamp?: Date;
}

export interface TaskCreateEvent extends Base {
  kind: 'task-create';
  containerId: string;
  bundle: string;
  pid: number;
}
export interface TaskStartEvent extends Base {
  kind: 'task-start';
  containerId: string;
  pid: number;
}
/** How a process of a task ended: TaskExit and TaskDelete carry the same fields. */
interface ProcessEnd {
  containerId: string;
  /** Equals containerId (TaskExit) or is empty (TaskDelete) for the init process; the exec id otherwise. */
  id: string;
  pid: number;
  exitStatus: number;
  exitedAt?: Date;
  /** True when this is the container's init process (the task itself). */
  isInit: boolean;
}
export interface TaskExitEvent extends Base, ProcessEnd {
  kind: 'task-exit';
}
export interface TaskDeleteEvent extends Base, ProcessEnd {
  kind: 'task-delete';
}
export interface TaskOomEvent extends Base {
  kind: 'task-oom';
  containerId: string;
}
export interface TaskExecAddedEvent extends Base {
  kind: 'task-exec-added';
  containerId: string;
  execId: string;
}
export interface TaskExecStartedEvent extends Base {
  kind: 'task-exec-started';
  containerId: string;
  execId: string;
  pid: number;
}
export interface TaskPausedEvent extends Base {
  kind: 'task-paused';
  containerId: string;
}
export interface TaskResumedEvent extends Base {
  kind: 'task-resumed';
  containerId: string;
}
export interface ContainerCreateEvent extends Base {
  kind: 'container-create';
  containerId: string;
  image: string;
  runtimeName: string;
}
export interface ContainerUpdateEvent extends Base {
  kind: 'container-update';
  containerId: string;
  image: string;
  labels: Record<string, string>;
}
export interface ContainerDeleteEvent extends Base {
  kind: 'container-delete';
  containerId: string;
}
/** Anything else containerd publishes (images, snapshots, namespaces, third-party topics). */
export interface OtherEvent extends Base {
  kind: 'other';
  typeUrl: string;
}

export type ContainerdEvent =
  | TaskCreateEvent
  | TaskStartEvent
  | TaskExitEvent
  | TaskDeleteEvent
  | TaskOomEvent
  | TaskExecAddedEvent
  | TaskExecStartedEvent
  | TaskPausedEvent
  | TaskResumedEvent
  | ContainerCreateEvent
  | ContainerUpdateEvent
  | ContainerDeleteEvent
  | OtherEvent;

export type ContainerdEventKind = ContainerdEvent['kind'];

/** The container an event is about, if any (used to order per-container work). */
export function eventContainerId(ev: ContainerdEvent): string | undefined {
  return ev.kind === 'other' ? undefined : ev.containerId;
}

type Raw = Record<string, unknown>;

function payload(name: string, any: ProtoAny): Raw {
  const t = protoType(name);
  return t.toObject(t.decode(any.value ?? new Uint8Array()), { defaults: true, objects: true }) as Raw;
}

const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const ts = (v: unknown): Date | undefined => timestampToDate(v as ProtoTimestamp | undefined);

function processEnd(r: Raw): ProcessEnd {
  const containerId = str(r.containerId);
  const id = str(r.id);
  return {
    containerId,
    id,
    pid: toNumber(r.pid),
    exitStatus: toNumber(r.exitStatus),
    exitedAt: ts(r.exitedAt),
    isInit: id === '' || id === containerId,
  };
}

/**
 * Decode an envelope. The switch is on the Any's message type (what the payload
 * really is), not on the topic string. A payload that fails to decode throws:
 * that means our .proto files disagree with the server, which must not pass silently.
 */
export function decodeEnvelope(env: Envelope): ContainerdEvent {
  const base: Base = { namespace: env.namespace, topic: env.topic, timestamp: env.timestamp };
  if (!env.event) return { ...base, kind: 'other', typeUrl: '' };
  const any: ProtoAny = { type_url: env.event.typeUrl, value: env.event.value };
  const type = anyTypeName(any);
  switch (type) {
    case 'containerd.events.TaskCreate': {
      const r = payload(type, any);
      return { ...base, kind: 'task-create', containerId: str(r.containerId), bundle: str(r.bundle), pid: toNumber(r.pid) };
    }
    case 'containerd.events.TaskStart': {
      const r = payload(type, any);
      return { ...base, kind: 'task-start', containerId: str(r.containerId), pid: toNumber(r.pid) };
    }
    case 'containerd.events.TaskExit':
      return { ...base, kind: 'task-exit', ...processEnd(payload(type, any)) };
    case 'containerd.events.TaskDelete':
      return { ...base, kind: 'task-delete', ...processEnd(payload(type, any)) };
    case 'containerd.events.TaskOOM': {
      const r = payload(type, any);
      return { ...base, kind: 'task-oom', containerId: str(r.containerId) };
    }
    case 'containerd.events.TaskExecAdded': {
      const r = payload(type, any);
      return { ...base, kind: 'task-exec-added', containerId: str(r.containerId), execId: str(r.execId) };
    }
    case 'containerd.events.TaskExecStarted': {
      const r = payload(type, any);
      return { ...base, kind: 'task-exec-started', containerId: str(r.containerId), execId: str(r.execId), pid: toNumber(r.pid) };
    }
    case 'containerd.events.TaskPaused': {
      const r = payload(type, any);
      return { ...base, kind: 'task-paused', containerId: str(r.containerId) };
    }
    case 'containerd.events.TaskResumed': {
      const r = payload(type, any);
      return { ...base, kind: 'task-resumed', containerId: str(r.containerId) };
    }
    case 'containerd.events.ContainerCreate': {
      const r = payload(type, any);
      const runtime = (r.runtime ?? {}) as Raw;
      return { ...base, kind: 'container-create', containerId: str(r.id), image: str(r.image), runtimeName: str(runtime.name) };
    }
    case 'containerd.events.ContainerUpdate': {
      const r = payload(type, any);
      return {
        ...base,
        kind: 'container-update',
        containerId: str(r.id),
        image: str(r.image),
        labels: { ...((r.labels ?? {}) as Record<string, string>) },
      };
    }
    case 'containerd.events.ContainerDelete': {
      const r = payload(type, any);
      return { ...base, kind: 'container-delete', containerId: str(r.id) };
    }
    default:
      return { ...base, kind: 'other', typeUrl: env.event.typeUrl };
  }
}
