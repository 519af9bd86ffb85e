/**
 * Counters behind `GET /metrics`, with the firmware's key set and value forms (FACTS-system §3): a flat JSON object
 * whose values are all strings — integers as `%d`, the response time as `%g`. Keys appear lazily, as the firmware's
 * do: `http response <code>` after the first such answer, the four key-operation counters together after the first
 * key operation of any kind, `kv write` after the first store write. The current request is not yet counted.
 *
 * The `gc *` values describe this Node process (heap size, garbage collections seen by a process-wide observer), the
 * nearest thing to the firmware's OCaml GC counters; `log warnings`/`log errors` count what the simulator logged.
 */
import { PerformanceObserver, constants as perfConstants } from 'node:perf_hooks';

export const KEY_OPERATIONS = ['generate', 'sign', 'decrypt', 'encrypt'] as const;
export type KeyOperation = (typeof KEY_OPERATIONS)[number];

/** The keys every firmware answers once it has served requests (the vendor SDK checks these 13). */
export const FIRMWARE_BASE_KEYS = [
  'uptime',
  'log warnings',
  'log errors',
  'gc major bytes',
  'gc major collections',
  'gc minor collections',
  'gc compactions',
  'http response total',
  'http response time',
] as const;

/** V8 reports no compaction count of its own: `gc compactions` stays 0, as it mostly does on the firmware. */
const gc = { major: 0, minor: 0, compactions: 0 };
let gcObserver: PerformanceObserver | undefined;

/** Starts counting this process's garbage collections once (shared by every simulator in the process). */
function observeGc(): void {
  if (gcObserver !== undefined) return;
  gcObserver = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = (entry as { detail?: { kind?: number } }).detail?.kind;
      if (kind === perfConstants.NODE_PERFORMANCE_GC_MINOR) gc.minor++;
      else if (kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) gc.major++;
    }
  });
  gcObserver.observe({ entryTypes: ['gc'] });
}

/** C's `%g` (precision 6), as OCaml's `Fmt.float` prints: `0.00123`, `1.5e-07`, `123457`, `inf`, `nan`. */
export function formatG(v: number): string {
  if (Number.isNaN(v)) return v < 0 ? '-nan' : 'nan';
  if (!Number.isFinite(v)) return v < 0 ? '-inf' : 'inf';
  if (v === 0) return Object.is(v, -0) ? '-0' : '0';
  const [mantissa, expText] = v.toExponential(5).split('e') as [string, string];
  const exp = Number(expText);
  const strip = (s: string): string => (s.includes('.') ? s.replace(/0+$/, '').replace(/\.$/, '') : s);
  if (exp < -4 || exp >= 6) return `${strip(mantissa)}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  return strip(v.toFixed(5 - exp));
}

export class SimMetrics {
  private readonly started = performance.now();
  private readonly responses = new Map<number, number>();
  private total = 0;
  private responseTime = 0;
  private readonly operations = new Map<KeyOperation, number>();
  private warnings = 0;
  private errors = 0;

  constructor() {
    observeGc();
  }

  /** A successful key operation (`generate` counts before the id-exists check, as the firmware's does). */
  keyOperation(op: KeyOperation): void {
    this.operations.set(op, (this.operations.get(op) ?? 0) + 1);
  }

  /** An answered API request: status count, total, and the response-time EWMA (updated only for a time > 0). */
  response(status: number, seconds = 0): void {
    this.responses.set(status, (this.responses.get(status) ?? 0) + 1);
    this.total++;
    if (seconds > 0) this.responseTime = 0.7 * this.responseTime + 0.3 * seconds;
  }

  /** Something the simulator logged at warning or error level. */
  logged(level: 'warning' | 'error'): void {
    if (level === 'warning') this.warnings++;
    else this.errors++;
  }

  /** The `GET /metrics` body; `kvWrites` is the store's write count (`kv write`, shown once non-zero). */
  toJSON(kvWrites = 0): Record<string, string> {
    const out: Record<string, string> = {
      uptime: String(Math.floor((performance.now() - this.started) / 1000)),
      'log warnings': String(this.warnings),
      'log errors': String(this.errors),
      'gc major bytes': String(process.memoryUsage().heapTotal),
      'gc major collections': String(gc.major),
      'gc minor collections': String(gc.minor),
      'gc compactions': String(gc.compactions),
    };
    if (this.operations.size > 0) for (const op of KEY_OPERATIONS) out[op] = String(this.operations.get(op) ?? 0);
    for (const [status, n] of [...this.responses].sort(([a], [b]) => a - b)) out[`http response ${status}`] = String(n);
    if (this.total > 0) {
      out['http response total'] = String(this.total);
      out['http response time'] = formatG(this.responseTime);
    }
    if (kvWrites > 0) out['kv write'] = String(kvWrites);
    return out;
  }
}
