// An allow-list entry that cannot be resolved to a file, with the entry it came from.
export class ResolveError extends Error {
  constructor(
    public readonly requested: string,
    reason: string,
  ) {
    super(`${requested}: ${reason}`);
  }
}
