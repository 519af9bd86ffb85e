/**
 * Counters behind `GET /metrics`: a flat JSON object whose values are all strings (FACTS §10).
 */
export class SimMetrics {
  private readonly started = Date.now();
  private readonly counters = new Map<string, number>();

  inc(name: string, by = 1): void {
    this.counters.set(name, (this.counters.get(name) ?? 0) + by);
  }

  response(status: number): void {
    this.inc(`http response ${status}`);
    this.inc('http response total');
  }

  /** Snapshot in the firmware's shape; `extra` adds gauges computed by the caller (e.g. `kv write`). */
  toJSON(extra: Record<string, number> = {}): Record<string, string> {
    const out: Record<string, string> = { uptime: String(Math.floor((Date.now() - this.started) / 1000)) };
    for (const op of ['generate', 'sign', 'decrypt', 'encrypt']) out[op] = String(this.counters.get(op) ?? 0);
    for (const [k, v] of [...this.counters].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) out[k] = String(v);
    for (const [k, v] of Object.entries(extra)) out[k] = String(v);
    return out;
  }
}
