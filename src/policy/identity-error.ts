// An allow-list entry that cannot be resolved to a file, with the entry it came from.
export class ResolveError extends Error {
  /** The path inside the container at which resolution stopped (symlinks followed), when known. */
  at?: string;
  constructor(
    public readonly requested: string,
    reason: string,
    at?: string,
  ) {
    super(`${requested}: ${reason}`);
    this.at = at;
  }
}
