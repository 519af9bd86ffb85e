/** Polls `cond` until it returns a truthy value; throws with `what` after `timeoutMs`. For tests only. */
export async function waitFor<T>(cond: () => T | Promise<T>, what: string, timeoutMs = 10_000, stepMs = 5): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
