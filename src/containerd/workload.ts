// A container's Kubernetes identity: its pod, the pod's namespace and its container name.
// containerd's CRI plugin puts them on the container as labels (what `crictl` and the
// Containers service show) and in the OCI spec as annotations; plain `ctr` containers have
// neither, and are named by containerd namespace and id alone.
import type { Workload } from '../audit/audit-record';

export type { Workload } from '../audit/audit-record';

export const WORKLOAD_LABELS = {
  pod: 'io.kubernetes.pod.name',
  podNamespace: 'io.kubernetes.pod.namespace',
  containerName: 'io.kubernetes.container.name',
} as const;

/** The same facts as the CRI plugin writes them into config.json's annotations. */
export const WORKLOAD_ANNOTATIONS = {
  pod: 'io.kubernetes.cri.sandbox-name',
  podNamespace: 'io.kubernetes.cri.sandbox-namespace',
  containerName: 'io.kubernetes.cri.container-name',
} as const;

function pick(m: Record<string, string> | undefined, keys: Record<keyof Workload, string>): Workload | null {
  if (!m) return null;
  const w: Workload = { pod: m[keys.pod] ?? '', podNamespace: m[keys.podNamespace] ?? '', containerName: m[keys.containerName] ?? '' };
  return w.pod || w.podNamespace || w.containerName ? w : null;
}

/** From containerd's container labels (the Containers service); null when it has none. */
export function workloadFromLabels(labels: Record<string, string> | undefined): Workload | null {
  return pick(labels, WORKLOAD_LABELS);
}

/** From the OCI spec's annotations (a CRI container's bundle); null when it has none. */
export function workloadFromAnnotations(annotations: Record<string, string> | undefined): Workload | null {
  return pick(annotations, WORKLOAD_ANNOTATIONS);
}

/** `pod-namespace/pod/container`, for people. */
export function workloadName(w: Workload | null | undefined): string {
  return w ? `${w.podNamespace}/${w.pod}/${w.containerName}` : '';
}
