/**
 * Makes an interleaving between the daemon and its simulated NetHSM happen on purpose: the simulator reads its latency
 * table at every call, so a test slows one operation at one site at the moment it needs to, and learns from the same
 * table when that call has begun (docs/concurrency.md, "Tested by").
 *
 * A latency table per site that a test switches at run time: `slow(site, op, ms)` delays that operation, and
 * `started(site, op)` resolves when the simulator has begun one such call (it reads the table as the call starts).
 */
export class Latencies {
  readonly #tables = new Map<string, Record<string, number>>();
  readonly #slow = new Map<string, number>();
  readonly #waiters = new Map<string, (() => void)[]>();

  table = (site: string): Record<string, number> => {
    let t = this.#tables.get(site);
    if (!t) {
      t = new Proxy({} as Record<string, number>, {
        get: (_target, op) => {
          if (typeof op !== 'string') return undefined;
          const key = `${site}/${op}`;
          const ms = this.#slow.get(key);
          if (ms !== undefined) for (const w of this.#waiters.get(key)?.splice(0) ?? []) w();
          return ms;
        },
      });
      this.#tables.set(site, t);
    }
    return t;
  };

  slow(site: string, op: string, ms: number): void {
    this.#slow.set(`${site}/${op}`, ms);
  }

  fast(site: string, op: string): void {
    this.#slow.delete(`${site}/${op}`);
  }

  started(site: string, op: string): Promise<void> {
    const key = `${site}/${op}`;
    return new Promise((resolve) => {
      const list = this.#waiters.get(key) ?? [];
      list.push(resolve);
      this.#waiters.set(key, list);
    });
  }
}
