// A container's key, `namespace/id`: a leaf so that containerd/, audit/ and fence/ (and all
// above them) spell it the same way without reaching up the layering.

/** The one spelling of a container's key, `namespace/id`, used wherever containers are keyed. */
export function containerKey(namespace: string, id: string): string {
  return `${namespace}/${id}`;
}
