/**
 * The firmware's failure rate limit (FACTS §10.1): a failure recorded for a key blocks that key for one second.
 * Keys are `ip + "\0" + username` for Basic auth and `ip + "\0_unlock"` for unlock.
 */
export const RATE_LIMIT_WINDOW_MS = 1000;

export class FailureRateLimiter {
  private readonly failures = new Map<string, number>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly windowMs = RATE_LIMIT_WINDOW_MS) {
    // The firmware purges old entries every minute; unref so it never keeps a process alive.
    this.sweeper = setInterval(() => this.purge(), 60_000);
    this.sweeper.unref();
  }

  /** True when a failure for `key` happened within the window. */
  blocked(key: string, now = Date.now()): boolean {
    const t = this.failures.get(key);
    return t !== undefined && now - t < this.windowMs;
  }

  recordFailure(key: string, now = Date.now()): void {
    this.failures.set(key, now);
  }

  purge(now = Date.now()): void {
    for (const [k, t] of this.failures) if (now - t >= this.windowMs) this.failures.delete(k);
  }

  close(): void {
    clearInterval(this.sweeper);
  }
}
