import * as grpc from '@grpc/grpc-js';
import type * as protobuf from 'protobufjs';
import { anyTypeName, anyUrl, protoType, ProtoAny, ProtoTimestamp, timestampToDate, toNumber } from './protos';

/** The OCI runtime spec, as containerd stores it (only the parts cgfence reads are typed). */
export interface OciSpec {
  ociVersion?: string;
  annotations?: Record<string, string>;
  process?: { args?: string[]; env?: string[]; cwd?: string; [k: string]: unknown };
  root?: { path?: string; readonly?: boolean };
  linux?: { cgroupsPath?: string; namespaces?: Array<{ type: string; path?: string }>; [k: string]: unknown };
  [k: string]: unknown;
}

/** Decoded containerd.runc.v1.Options (runc.v2 shim). */
export interface RuncOptions {
  binaryName: string;
  root: string;
  systemdCgroup: boolean;
}

export interface ContainerInfo {
  namespace: string;
  id: string;
  labels: Record<string, string>;
  image: string;
  runtimeName: string;
  /** Present when the runtime options are runc.v2 options. */
  runcOptions?: RuncOptions;
  /** Parsed OCI spec; undefined if the container has none or it is not JSON. */
  spec?: OciSpec;
  snapshotter: string;
  snapshotKey: string;
  createdAt?: Date;
  updatedAt?: Date;
}

export type TaskStatus = 'unknown' | 'created' | 'running' | 'stopped' | 'paused' | 'pausing';

export interface TaskInfo {
  namespace: string;
  /**
   * The container id. containerd 1.6 fills Process.id with the container id for
   * tasks and leaves container_id empty in List, so this is whichever is set.
   */
  containerId: string;
  /** Process id: equals containerId for the init process. */
  id: string;
  pid: number;
  status: TaskStatus;
  exitStatus: number;
  exitedAt?: Date;
}

export interface VersionInfo {
  version: string;
  revision: string;
}

/** A raw event as it comes off the stream; see events.ts for decoding. */
export interface Envelope {
  timestamp?: Date;
  namespace: string;
  topic: string;
  event?: { typeUrl: string; value: Uint8Array };
}

export interface Subscription {
  cancel(): void;
}

export interface ContainerdClientOptions {
  /** Per-call deadline for unary calls. */
  timeoutMs?: number;
}

const STATUS_NAMES: Record<number, TaskStatus> = {
  0: 'unknown',
  1: 'created',
  2: 'running',
  3: 'stopped',
  4: 'paused',
  5: 'pausing',
};

const OCI_SPEC_TYPE = 'types.containerd.io/opencontainers/runtime-spec/1/Spec';

function serializer(type: protobuf.Type) {
  return (value: object): Buffer => Buffer.from(type.encode(type.fromObject(value)).finish());
}

function deserializer(type: protobuf.Type) {
  // Plain objects (not Message instances) keep the decoded shapes simple to type.
  return (buf: Buffer): Record<string, unknown> =>
    type.toObject(type.decode(buf), { defaults: true, arrays: true, objects: true }) as Record<string, unknown>;
}

interface RawContainer {
  id: string;
  labels: Record<string, string>;
  image: string;
  runtime?: { name?: string; options?: ProtoAny };
  spec?: ProtoAny;
  snapshotter: string;
  snapshotKey: string;
  createdAt?: ProtoTimestamp;
  updatedAt?: ProtoTimestamp;
}

interface RawProcess {
  containerId: string;
  id: string;
  pid: number;
  status: number | string;
  exitStatus: number;
  exitedAt?: ProtoTimestamp;
}

export class ContainerdClient {
  readonly address: string;
  private readonly client: grpc.Client;
  private readonly timeoutMs: number;

  /** @param address `unix:///path/to/containerd.sock` (a bare absolute path is accepted too). */
  constructor(address: string, opts: ContainerdClientOptions = {}) {
    this.address = address.startsWith('/') ? `unix://${address}` : address;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.client = new grpc.Client(this.address, grpc.credentials.createInsecure(), {
      // Container lists carry full OCI specs; 4 MiB (the default) is reachable on a busy node.
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      // grpc-js backs off up to 120 s between reconnects by default; after a
      // containerd restart we want the channel usable within our own backoff.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 2000,
    });
  }

  close(): void {
    this.client.close();
  }

  private metadata(namespace?: string): grpc.Metadata {
    const md = new grpc.Metadata();
    if (namespace !== undefined) md.set('containerd-namespace', namespace);
    return md;
  }

  private unary<Res>(method: string, reqType: string, resType: string, req: object, namespace?: string): Promise<Res> {
    const serialize = serializer(protoType(reqType));
    const deserialize = deserializer(protoType(resType));
    return new Promise<Res>((resolve, reject) => {
      this.client.makeUnaryRequest(
        method,
        serialize,
        deserialize,
        req,
        this.metadata(namespace),
        { deadline: Date.now() + this.timeoutMs },
        (err, res) => {
          if (err) reject(err);
          else resolve(res as Res);
        },
      );
    });
  }

  async version(): Promise<VersionInfo> {
    return this.unary<VersionInfo>(
      '/containerd.services.version.v1.Version/Version',
      'google.protobuf.Empty',
      'containerd.services.version.v1.VersionResponse',
      {},
    );
  }

  async listNamespaces(): Promise<string[]> {
    const res = await this.unary<{ namespaces: Array<{ name: string }> }>(
      '/containerd.services.namespaces.v1.Namespaces/List',
      'containerd.services.namespaces.v1.ListNamespacesRequest',
      'containerd.services.namespaces.v1.ListNamespacesResponse',
      {},
    );
    return res.namespaces.map((n) => n.name);
  }

  async listContainers(namespace: string, filters: string[] = []): Promise<ContainerInfo[]> {
    const res = await this.unary<{ containers: RawContainer[] }>(
      '/containerd.services.containers.v1.Containers/List',
      'containerd.services.containers.v1.ListContainersRequest',
      'containerd.services.containers.v1.ListContainersResponse',
      { filters },
      namespace,
    );
    return res.containers.map((c) => toContainerInfo(namespace, c));
  }

  /**
   * A container's labels alone (undefined when it does not exist): the same call as
   * getContainer, without parsing the OCI spec that comes with it (~10 KB of JSON), for the
   * daemon's workload lookup at every fenced create.
   */
  async containerLabels(namespace: string, id: string): Promise<Record<string, string> | undefined> {
    const c = await this.rawContainer(namespace, id);
    return c ? { ...c.labels } : undefined;
  }

  /** Resolves to undefined when the container does not exist. */
  async getContainer(namespace: string, id: string): Promise<ContainerInfo | undefined> {
    const c = await this.rawContainer(namespace, id);
    return c ? toContainerInfo(namespace, c) : undefined;
  }

  private async rawContainer(namespace: string, id: string): Promise<RawContainer | undefined> {
    try {
      const res = await this.unary<{ container?: RawContainer }>(
        '/containerd.services.containers.v1.Containers/Get',
        'containerd.services.containers.v1.GetContainerRequest',
        'containerd.services.containers.v1.GetContainerResponse',
        { id },
        namespace,
      );
      return res.container;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  async listTasks(namespace: string): Promise<TaskInfo[]> {
    const res = await this.unary<{ tasks: RawProcess[] }>(
      '/containerd.services.tasks.v1.Tasks/List',
      'containerd.services.tasks.v1.ListTasksRequest',
      'containerd.services.tasks.v1.ListTasksResponse',
      {},
      namespace,
    );
    return res.tasks.map((p) => toTaskInfo(namespace, p));
  }

  /** The container's task (init process), or undefined when it has none. */
  async getTask(namespace: string, containerId: string, execId = ''): Promise<TaskInfo | undefined> {
    try {
      const res = await this.unary<{ process?: RawProcess }>(
        '/containerd.services.tasks.v1.Tasks/Get',
        'containerd.services.tasks.v1.GetRequest',
        'containerd.services.tasks.v1.GetResponse',
        { containerId, execId },
        namespace,
      );
      return res.process ? toTaskInfo(namespace, res.process, containerId) : undefined;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /**
   * Publish an event. The payload is sent as google.protobuf.Empty so that every
   * consumer (ctr events included) can unmarshal it.
   */
  async publish(namespace: string, topic: string): Promise<void> {
    await this.unary<object>(
      '/containerd.services.events.v1.Events/Publish',
      'containerd.services.events.v1.PublishRequest',
      'google.protobuf.Empty',
      { topic, event: { type_url: 'google.protobuf.Empty', value: Buffer.alloc(0) } },
      namespace,
    );
  }

  /**
   * Stream events. No namespace metadata is sent, which makes containerd deliver
   * events of every namespace. `filters` are containerd filter expressions
   * (e.g. `topic~="/tasks/"`), OR-ed together. onError is called at most once,
   * and not after cancel().
   */
  subscribe(filters: string[], onEvent: (env: Envelope) => void, onError: (err: Error) => void): Subscription {
    const reqType = protoType('containerd.services.events.v1.SubscribeRequest');
    const envType = protoType('containerd.services.events.v1.Envelope');
    const call = this.client.makeServerStreamRequest(
      '/containerd.services.events.v1.Events/Subscribe',
      serializer(reqType),
      deserializer(envType),
      { filters },
      new grpc.Metadata(),
      {},
    );
    let done = false;
    const finish = (err: Error) => {
      if (done) return;
      done = true;
      onError(err);
    };
    call.on('data', (raw: Record<string, unknown>) => {
      if (done) return;
      const ev = raw.event as ProtoAny | undefined;
      onEvent({
        timestamp: timestampToDate(raw.timestamp as ProtoTimestamp | undefined),
        namespace: String(raw.namespace ?? ''),
        topic: String(raw.topic ?? ''),
        event: ev ? { typeUrl: anyUrl(ev), value: ev.value ?? new Uint8Array() } : undefined,
      });
    });
    call.on('error', (err: Error) => finish(err));
    // A server-streaming Subscribe never ends on its own; an orderly end still
    // means we are no longer subscribed, which the caller must learn about.
    call.on('end', () => finish(new Error('containerd event stream ended')));
    return {
      cancel() {
        done = true;
        call.cancel();
      },
    };
  }
}

function isNotFound(e: unknown): boolean {
  return typeof e === 'object' && e !== null && (e as { code?: number }).code === grpc.status.NOT_FOUND;
}

function decodeRuncOptions(any: ProtoAny | undefined): RuncOptions | undefined {
  if (!any?.value || anyTypeName(any) !== 'containerd.runc.v1.Options') return undefined;
  const t = protoType('containerd.runc.v1.Options');
  const o = t.toObject(t.decode(any.value), { defaults: true }) as { binaryName: string; root: string; systemdCgroup: boolean };
  return { binaryName: o.binaryName, root: o.root, systemdCgroup: o.systemdCgroup };
}

function decodeSpec(any: ProtoAny | undefined): OciSpec | undefined {
  if (!any?.value || any.value.length === 0) return undefined;
  // containerd only ever stores the OCI spec here, as JSON; other type URLs are
  // not something we know how to read.
  const url = anyUrl(any);
  if (url && url !== OCI_SPEC_TYPE && !url.endsWith('/Spec')) return undefined;
  try {
    return JSON.parse(Buffer.from(any.value).toString('utf8')) as OciSpec;
  } catch {
    return undefined;
  }
}

function toContainerInfo(namespace: string, c: RawContainer): ContainerInfo {
  return {
    namespace,
    id: c.id,
    labels: { ...c.labels },
    image: c.image,
    runtimeName: c.runtime?.name ?? '',
    runcOptions: decodeRuncOptions(c.runtime?.options),
    spec: decodeSpec(c.spec),
    snapshotter: c.snapshotter,
    snapshotKey: c.snapshotKey,
    createdAt: timestampToDate(c.createdAt),
    updatedAt: timestampToDate(c.updatedAt),
  };
}

function toTaskInfo(namespace: string, p: RawProcess, containerIdHint?: string): TaskInfo {
  const status = typeof p.status === 'number' ? (STATUS_NAMES[p.status] ?? 'unknown') : (String(p.status).toLowerCase() as TaskStatus);
  const containerId = p.containerId || containerIdHint || p.id;
  return {
    namespace,
    containerId,
    id: p.id || containerId,
    pid: toNumber(p.pid),
    status,
    exitStatus: toNumber(p.exitStatus),
    exitedAt: timestampToDate(p.exitedAt),
  };
}
