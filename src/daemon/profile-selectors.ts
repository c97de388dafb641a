// Node-config selectors: which profile a container gets from its Kubernetes namespace and
// its pod's labels, without an API server (both come from containerd: the CRI labels of
// the container and of its pod sandbox). The most specific matching selector wins: the one
// with the most conditions (the namespace counts as one, each label as one); between equally
// specific ones, the first in the file. A container's own cgfence.io/profile annotation
// beats every selector, and a selector beats defaultProfile.

export interface ProfileSelector {
  /** The pod's Kubernetes namespace. */
  namespace?: string;
  /** Labels the pod must carry, each with exactly this value. */
  podLabels?: Record<string, string>;
  profile: string;
}

/** What a selector can look at. */
export interface PodContext {
  /** Kubernetes namespace, null for a container that is no pod's. */
  namespace: string | null;
  labels: Record<string, string>;
}

export interface Selection {
  profile: string;
  index: number;
  selector: ProfileSelector;
}

export function specificity(s: ProfileSelector): number {
  return (s.namespace !== undefined ? 1 : 0) + Object.keys(s.podLabels ?? {}).length;
}

export function describeSelector(s: ProfileSelector): string {
  const parts = [
    ...(s.namespace !== undefined ? [`namespace=${s.namespace}`] : []),
    ...Object.entries(s.podLabels ?? {}).map(([k, v]) => `${k}=${v}`),
  ];
  return parts.join(',');
}

export function selectProfile(selectors: readonly ProfileSelector[], pod: PodContext): Selection | null {
  let best: Selection | null = null;
  selectors.forEach((s, index) => {
    if (s.namespace !== undefined && s.namespace !== pod.namespace) return;
    if (!Object.entries(s.podLabels ?? {}).every(([k, v]) => pod.labels[k] === v)) return;
    if (!best || specificity(s) > specificity(best.selector)) best = { profile: s.profile, index, selector: s };
  });
  return best;
}

/**
 * Checks the `selectors` setting of a config file; returns the selectors or throws an Error
 * naming the bad entry. `profiles` are the file's profiles (a selector must name one).
 */
export function parseSelectors(raw: unknown, profiles: Record<string, unknown>): ProfileSelector[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw new Error('selectors must be a list of {namespace, podLabels, profile}');
  const seen = new Map<string, number>();
  return raw.map((item, i) => {
    const where = `selectors[${i}]`;
    if (typeof item !== 'object' || item === null || Array.isArray(item))
      throw new Error(`${where} must be a mapping with profile and namespace and/or podLabels`);
    const o = item as Record<string, unknown>;
    for (const k of Object.keys(o))
      if (!['namespace', 'podLabels', 'profile'].includes(k))
        throw new Error(`${where}: unknown key "${k}" (known: namespace, podLabels, profile)`);
    if (typeof o.profile !== 'string' || !o.profile) throw new Error(`${where}: profile must name a profile`);
    if (!Object.prototype.hasOwnProperty.call(profiles, o.profile))
      throw new Error(`${where}: no profile "${o.profile}" (known: ${Object.keys(profiles).join(', ') || 'none'})`);
    if (o.namespace !== undefined && (typeof o.namespace !== 'string' || !o.namespace))
      throw new Error(`${where}: namespace must be a non-empty string`);
    if (
      o.podLabels !== undefined &&
      (typeof o.podLabels !== 'object' ||
        o.podLabels === null ||
        Array.isArray(o.podLabels) ||
        Object.values(o.podLabels).some((v) => typeof v !== 'string'))
    )
      throw new Error(`${where}: podLabels must map label names to string values`);
    const s: ProfileSelector = {
      profile: o.profile,
      ...(o.namespace !== undefined ? { namespace: o.namespace as string } : {}),
      ...(o.podLabels !== undefined ? { podLabels: o.podLabels as Record<string, string> } : {}),
    };
    if (specificity(s) === 0) throw new Error(`${where}: needs a namespace or podLabels (for every container, use defaultProfile)`);
    const key = JSON.stringify([s.namespace ?? null, Object.entries(s.podLabels ?? {}).sort()]);
    if (seen.has(key))
      throw new Error(`${where}: the same conditions as selectors[${seen.get(key)}] (${describeSelector(s)}); only one can win`);
    seen.set(key, i);
    return s;
  });
}
