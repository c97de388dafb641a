// How a container named by a person is found among those the daemon knows: by its full id or
// by any prefix of it that names one container (the 12 characters `cgfence audit` shows, say),
// in the given containerd namespace or in whichever holds it.
import { containerKey } from '../fence/backend';

export class LookupError extends Error {}

export function findContainer<T extends { namespace: string; id: string }>(
  all: T[],
  namespace: string | undefined,
  query: string,
  what = 'fenced container',
): T {
  const inNs = namespace === undefined ? all : all.filter((c) => c.namespace === namespace);
  const where = namespace === undefined ? 'in any namespace' : `in namespace ${JSON.stringify(namespace)}`;
  const exact = inNs.filter((c) => c.id === query);
  const found = exact.length ? exact : inNs.filter((c) => c.id.startsWith(query));
  if (found.length === 1) return found[0];
  if (found.length === 0) {
    throw new LookupError(
      `no ${what} ${JSON.stringify(query)} ${where} (a container started without cgfence.io/* annotations is not fenced)`,
    );
  }
  const names = found
    .slice(0, 5)
    .map((c) => containerKey(c.namespace, c.id))
    .join(', ');
  if (exact.length) throw new LookupError(`container ${JSON.stringify(query)} is fenced in several namespaces (${names}): name one`);
  throw new LookupError(
    `${JSON.stringify(query)} is the start of ${found.length} containers' ids (${names}${found.length > 5 ? ', ...' : ''}): give more of it`,
  );
}
