// What profile selectors look at, from containerd alone: the container's labels and, for a
// CRI container, its pod sandbox's labels (where CRI keeps the pod's own labels), and the
// pod's Kubernetes namespace.
import { ContainerInfo } from '../containerd/client';
import { PodContext } from './profile-selectors';

/** Set by containerd's CRI in every container's OCI annotations. */
export const CRI_SANDBOX_ID = 'io.kubernetes.cri.sandbox-id';
export const CRI_SANDBOX_NAMESPACE = 'io.kubernetes.cri.sandbox-namespace';
/** Set by the kubelet on every CRI container and sandbox. */
export const POD_NAMESPACE_LABEL = 'io.kubernetes.pod.namespace';

export type GetContainer = (namespace: string, id: string) => Promise<ContainerInfo | undefined>;

/**
 * `needLabels` false (every selector is by namespace alone): a CRI container's namespace is in
 * its annotations, and containerd is not asked.
 */
export async function podContext(
  get: GetContainer,
  namespace: string,
  id: string,
  annotations: Record<string, string>,
  needLabels = true,
): Promise<PodContext> {
  if (!needLabels && annotations[CRI_SANDBOX_NAMESPACE]) return { namespace: annotations[CRI_SANDBOX_NAMESPACE], labels: {} };
  const own = await get(namespace, id);
  const sandboxId = annotations[CRI_SANDBOX_ID];
  const sandbox = sandboxId && sandboxId !== id ? await get(namespace, sandboxId) : undefined;
  const labels = { ...(own?.labels ?? {}), ...(sandbox?.labels ?? {}) };
  return { namespace: labels[POD_NAMESPACE_LABEL] ?? annotations[CRI_SANDBOX_NAMESPACE] ?? null, labels };
}
