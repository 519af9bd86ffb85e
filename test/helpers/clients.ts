import type { NetHsmClient } from '../../src/nethsm/client.js';

/** Runs `fn` with the client, then closes it, however `fn` ends. For tests only. */
export async function use<T>(c: NetHsmClient, fn: (c: NetHsmClient) => Promise<T>): Promise<T> {
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}
