/**
 * Per-operation latency injection, so benchmarks against the simulator can stand in for an appliance.
 * Spec form (CLI): `sign=40ms,generate=900ms,restore-per-entry=2ms` (units ms or s; bare numbers are ms).
 */
export type LatencyTable = Partial<Record<string, number>>;

/** Operation names the simulator applies latency to. */
export const LATENCY_OPERATIONS = [
  'sign', 'decrypt', 'encrypt', 'generate', 'import', 'backup', 'restore', 'restore-per-entry',
  'unlock', 'provision', 'key-get', 'key-list', 'key-delete', 'key-update', 'user', 'namespace',
] as const;

/** Parses a latency spec; throws Error naming the bad item. */
export function parseLatencySpec(spec: string): LatencyTable {
  const out: LatencyTable = {};
  for (const raw of spec.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const m = /^([a-z][a-z0-9-]*)=(\d+(?:\.\d+)?)(ms|s)?$/.exec(item);
    if (!m) throw new Error(`latency item "${item}" is not <operation>=<number>[ms|s]`);
    const op = m[1]!;
    if (!(LATENCY_OPERATIONS as readonly string[]).includes(op)) {
      throw new Error(`latency item "${item}": unknown operation "${op}" (known: ${LATENCY_OPERATIONS.join(', ')})`);
    }
    const ms = Number(m[2]) * (m[3] === 's' ? 1000 : 1);
    if (ms > 600_000) throw new Error(`latency item "${item}": more than 10 minutes`);
    out[op] = ms;
  }
  return out;
}

/** Validates a latency table passed programmatically; throws Error on a negative or non-finite value. */
export function checkLatencyTable(table: LatencyTable): void {
  for (const [op, ms] of Object.entries(table)) {
    if (ms === undefined) continue;
    if (!Number.isFinite(ms) || ms < 0) throw new Error(`latency for ${op} must be a non-negative number of ms`);
  }
}

export function sleep(ms: number): Promise<void> {
  return ms > 0 ? new Promise((r) => setTimeout(r, ms)) : Promise.resolve();
}
