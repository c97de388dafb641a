// Per-container quotas on the kernel tables every container shares (exec allow entries,
// network rule entries). One container must not be able to fill a shared map: the kernel
// would then refuse every other container's entries with E2BIG. So each write is admitted
// before anything is written, against the container's quota and the room left in the map,
// and refused with a message naming the container, the table and the limit.

/** Node config `limits`: the most entries one container may hold in each shared table. */
export interface Limits {
  /** exec_allow entries (file identities) per container; a `DIR/*` entry counts each file. */
  execAllowPerContainer: number;
  /** Network rule trie entries (CIDRs after merging) per container. */
  netRulesPerContainer: number;
}

export const DEFAULT_LIMITS: Limits = {
  execAllowPerContainer: 4096,
  netRulesPerContainer: 8192,
};

/**
 * Node config `tableSizes`: the capacity (max_entries) of each shared table, applied when its
 * map is created. A map pinned by an earlier daemon keeps its size until its pins are removed.
 */
export interface TableSizes {
  exec_fences: number;
  exec_allow: number;
  net_rules4: number;
  net_rules6: number;
}

/** The sizes compiled into the BPF objects. */
export const DEFAULT_TABLE_SIZES: TableSizes = { exec_fences: 4096, exec_allow: 65536, net_rules4: 262144, net_rules6: 262144 };

export function parseTableSizes(v: unknown, where: string): TableSizes {
  if (v === undefined) return { ...DEFAULT_TABLE_SIZES };
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new Error(`${where}: tableSizes must be a mapping (known: ${Object.keys(DEFAULT_TABLE_SIZES).join(', ')})`);
  const out: TableSizes = { ...DEFAULT_TABLE_SIZES };
  for (const [k, n] of Object.entries(v as Record<string, unknown>)) {
    if (!Object.hasOwn(DEFAULT_TABLE_SIZES, k))
      throw new Error(`${where}: unknown setting "tableSizes.${k}" (known: ${Object.keys(DEFAULT_TABLE_SIZES).join(', ')})`);
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 16 * 1024 * 1024)
      throw new Error(`${where}: tableSizes.${k} must be an integer from 1 to 16777216, not ${JSON.stringify(n)}`);
    out[k as keyof TableSizes] = n;
  }
  return out;
}

export class QuotaError extends Error {}

export interface Admission {
  /** "namespace/id" of the container asking. */
  container: string;
  /** The kernel table, as status names it ("exec allow", "network rules"). */
  table: string;
  /** The `limits` setting that bounds it. */
  setting: keyof Limits;
  limit: number;
  /** Entries the container's new set holds. */
  asked: number;
  /** Entries the write adds to the map at its peak (before old entries go). */
  adds: number;
  used: number;
  capacity: number;
}

/** Throws a QuotaError unless the write fits; call it before writing anything. */
export function admit(a: Admission): void {
  if (a.asked > a.limit) {
    throw new QuotaError(
      `container ${a.container} asks for ${a.asked} ${a.table} entries, more than the ${a.limit} one container may hold (node config limits.${a.setting}); nothing was written`,
    );
  }
  if (a.used + a.adds > a.capacity) {
    throw new QuotaError(
      `container ${a.container} needs ${a.adds} more ${a.table} entries, but the node's ${a.table} table holds ${a.used} of ${a.capacity}; nothing was written`,
    );
  }
}

/** Validates a `limits` mapping from the node config; names the bad setting. */
export function parseLimits(v: unknown, where: string): Limits {
  if (v === undefined) return { ...DEFAULT_LIMITS };
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new Error(`${where}: limits must be a mapping (known: ${Object.keys(DEFAULT_LIMITS).join(', ')})`);
  const out: Limits = { ...DEFAULT_LIMITS };
  for (const [k, n] of Object.entries(v as Record<string, unknown>)) {
    if (!Object.hasOwn(DEFAULT_LIMITS, k))
      throw new Error(`${where}: unknown setting "limits.${k}" (known: ${Object.keys(DEFAULT_LIMITS).join(', ')})`);
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1)
      throw new Error(`${where}: limits.${k} must be a positive integer, not ${JSON.stringify(n)}`);
    out[k as keyof Limits] = n;
  }
  return out;
}
