/**
 * A wait a caller may give up: `promise`'s outcome, or a rejection with `signal.reason` as soon as `signal` aborts
 * first (at once when it already has). Only the wait ends: whatever `promise` stands for goes on, so a caller that
 * leaves a queue this way must still hand its place on (the lock it would have taken, a turn behind it). The abort
 * listener is removed however the wait ends, so a long-lived signal (the daemon's stop, passed to every wait) gathers
 * none. Without a signal: `promise` itself.
 */
export function unlessAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    const done = (): void => signal.removeEventListener('abort', onAbort);
    promise.then(
      (value) => {
        done();
        resolve(value);
      },
      (err: unknown) => {
        done();
        reject(err as Error);
      },
    );
  });
}
