import type { SiteContext } from '../../src/daemon/context.js';

/**
 * Takes an exclusive hold on `ctx`'s barrier until `end()`: another part's long restore, which the caller waits behind.
 * Resolves once the hold runs. The test's own hold: nothing in the daemon's close() waits for it.
 */
export async function longHold(ctx: SiteContext): Promise<{ end: () => Promise<void> }> {
  let end!: () => void;
  let running!: () => void;
  const ran = new Promise<void>((r) => (running = r));
  const held = ctx.barrier.exclusive([], async () => {
    running();
    await new Promise<void>((r) => (end = r));
  });
  await ran;
  return {
    end: async () => {
      end();
      await held;
    },
  };
}
