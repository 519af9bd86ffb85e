/**
 * A promise bounded in time: `promise`'s outcome, or `late()`'s error once `timeoutMs` passed first. The work itself
 * is not cancelled (callers whose work can be, pass it a signal too); its later outcome is swallowed, so it never
 * rejects unheard. The timer does not keep the process alive and is cleared as soon as the race is decided.
 */
export async function withDeadline<T>(promise: Promise<T>, timeoutMs: number, late: () => Error): Promise<T> {
  promise.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(late()), timeoutMs);
    timer.unref();
  });
  try {
    return await Promise.race([promise, bound]);
  } finally {
    clearTimeout(timer);
  }
}
