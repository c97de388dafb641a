// A CRI client as kubelet talks to containerd: RuntimeService and ImageService over gRPC, with
// the messages of test/fixtures/cri-runtime-v1.proto (no crictl on the machines).
import * as grpc from '@grpc/grpc-js';
import path from 'node:path';
import * as protobuf from 'protobufjs';

// CRI messages (and the Kubernetes manifests of test/oci-config.test.ts) are walked field by field.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Obj = Record<string, any>;

export interface CriClient {
  /** `Method` of RuntimeService, or `Service.Method` (e.g. ImageService.ImageStatus). */
  call<T = Obj>(method: string, req: Obj, timeoutMs?: number): Promise<T>;
  close(): void;
}

export function criClient(socket: string): CriClient {
  const root = protobuf.loadSync(path.join(__dirname, '..', 'fixtures', 'cri-runtime-v1.proto'));
  const client = new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure());
  return {
    call<T>(method: string, req: Obj, timeoutMs = 60_000): Promise<T> {
      const [svc, name] = method.includes('.') ? method.split('.') : ['RuntimeService', method];
      const reqT = root.lookupType(`runtime.v1.${name}Request`);
      const resT = root.lookupType(`runtime.v1.${name}Response`);
      return new Promise((resolve, reject) => {
        client.makeUnaryRequest(
          `/runtime.v1.${svc}/${name}`,
          (m: Obj) => Buffer.from(reqT.encode(reqT.fromObject(m)).finish()),
          (b: Buffer) => resT.toObject(resT.decode(b), { longs: Number, enums: String, defaults: true }),
          req,
          new grpc.Metadata(),
          { deadline: Date.now() + timeoutMs },
          (err, res) => (err ? reject(new Error(`CRI ${name}: ${err.details || err.message}`)) : resolve(res as T)),
        );
      });
    },
    close: () => client.close(),
  };
}
