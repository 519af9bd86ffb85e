/**
 * A retry loop's wait that something else may cut short (a device recovered, a role changed, shutdown): the one shape
 * the daemon's retry loops (race-replayer.ts, admin-restorer.ts) share.
 */

/**
 * Resolves after `ms`, or at once when the function handed to `setWake` is called (then the timer is cleared). The
 * wake function is handed over before the wait starts, and is a no-op once the wait is over.
 */
export function sleepUnlessWoken(ms: number, setWake: (wake: () => void) => void): Promise<void> {
  return new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    setWake(() => {
      clearTimeout(t);
      resolve();
    });
  });
}
