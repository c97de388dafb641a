// What the daemon does with a bundle before the fence manager decides on it: a warning
// record for annotation keys that look like cgfence's but are not, and, for a container
// that names no profile, the profile the node's selectors give it, written into the bundle
// as cgfence.io/profile (so the decision stays with the container, through restarts).
import { AuditLog } from '../audit/audit-log';
import { OciSpec, readBundleConfig, writeBundleConfig } from '../fence/bundle-config';
import { CRI_CONTAINER_TYPE, KEYS } from '../policy/annotations';
import { misspeltKeys } from './annotation-typos';
import { DaemonConfig } from './config';
import { GetContainer, podContext } from './pod-context';
import { describeSelector, selectProfile } from './profile-selectors';

/** The create cannot go on (the caller turns it into a refusal). */
export class PreflightRefusal extends Error {}

export interface BundlePreflightOptions {
  cfg: Pick<DaemonConfig, 'selectors'>;
  audit: AuditLog;
  getContainer: GetContainer;
  /** The running config file's hash, for the record. */
  configHash: () => string | null;
}

/**
 * Returns config.json as read (with the selected profile, if one was written), for the manager
 * to go on from; null when it cannot be read (the manager refuses with its own message).
 */
export async function bundlePreflight(o: BundlePreflightOptions, namespace: string, id: string, bundle: string): Promise<OciSpec | null> {
  let spec: OciSpec;
  try {
    spec = readBundleConfig(bundle);
  } catch {
    return null;
  }
  const annotations = spec.annotations ?? {};
  // A pod's sandbox ("pause") gets the pod's annotations too, but is never fenced: its
  // containers get the warnings and the selected profile.
  if (annotations[CRI_CONTAINER_TYPE] === 'sandbox') return spec;
  const typos = misspeltKeys(annotations);
  if (typos.length) {
    o.audit.writeBatch(
      typos.map((t) => ({
        type: 'lifecycle' as const,
        action: 'annotation-warning',
        namespace,
        container_id: id,
        key: t.key,
        suggestion: t.suggestion,
        message: `annotation ${t.key} is not a cgfence annotation and is ignored; did you mean ${t.suggestion}?`,
      })),
    );
  }
  const selectors = o.cfg.selectors;
  if (selectors.length === 0 || annotations[KEYS.profile] !== undefined) return spec;
  let pod;
  try {
    const needLabels = selectors.some((x) => Object.keys(x.podLabels ?? {}).length > 0);
    pod = await podContext(o.getContainer, namespace, id, annotations, needLabels);
  } catch (e) {
    const reason = `cannot read the labels of ${namespace}/${id} from containerd for the node's profile selectors: ${(e as Error).message}`;
    o.audit.write({ type: 'lifecycle', action: 'refuse', namespace, container_id: id, reason });
    throw new PreflightRefusal(reason);
  }
  const chosen = selectProfile(selectors, pod);
  if (!chosen) return spec;
  const selected = { ...spec, annotations: { ...annotations, [KEYS.profile]: chosen.profile } };
  writeBundleConfig(bundle, selected);
  o.audit.write({
    type: 'lifecycle',
    action: 'profile-selected',
    namespace,
    container_id: id,
    profile: chosen.profile,
    selector: describeSelector(chosen.selector),
    selector_index: chosen.index,
    pod_namespace: pod.namespace,
    config_hash: o.configHash(),
  });
  return selected;
}
