/**
 * Settling an intent whose outcome is unknown (the daemon crashed between forwarding and recording, or the NetHSM's
 * answer was lost): ask the device whether the mutation's effect is there. `commit` when it is, `drop` when it is not,
 * `catchup` when the device cannot tell (an import by `POST /keys` whose generated id was never learned), `unknown`
 * when the device cannot be asked now (retry later). Committing a change whose effect was already there before is
 * harmless: replicas apply changes idempotently.
 */
import { NetHsmHttpError } from '../errors.js';
import type { NetHsmClient } from '../nethsm/client.js';
import type { Intent } from '../state/intents-repo.js';

export type Verdict = 'commit' | 'drop' | 'catchup' | 'unknown';

export async function resolveIntent(intent: Intent, client: NetHsmClient): Promise<Verdict> {
  const d = intent.detail as Record<string, string | undefined>;
  const keyId = intent.keyId;
  if (intent.kind === 'catchup') return 'commit';
  if (keyId === undefined) return intent.kind === 'key-imported' ? 'catchup' : 'commit';
  try {
    const key = await getKey(client, keyId);
    switch (intent.kind) {
      case 'key-imported':
        return key ? 'commit' : 'drop';
      case 'key-deleted':
        return key ? 'drop' : 'commit';
      case 'key-moved': {
        const target = d.newId ? await getKey(client, d.newId) : undefined;
        return !key && target ? 'commit' : 'drop';
      }
      case 'cert-set': {
        if (!key || !d.data) return 'drop';
        const cert = await client.getCert(keyId);
        return cert && cert.data.equals(Buffer.from(d.data, 'base64')) ? 'commit' : 'drop';
      }
      case 'cert-removed':
        return key && (await client.getCert(keyId)) === null ? 'commit' : 'drop';
      case 'tag-added':
        return key && d.tag && (key.restrictions?.tags ?? []).includes(d.tag) ? 'commit' : 'drop';
      case 'tag-removed':
        return key && d.tag && !(key.restrictions?.tags ?? []).includes(d.tag) ? 'commit' : 'drop';
      case 'label-set':
        return key && key.label === d.label ? 'commit' : 'drop';
      case 'label-removed':
        return key && (key.label === undefined || key.label === '') ? 'commit' : 'drop';
    }
  } catch (err) {
    if (err instanceof NetHsmHttpError && !err.retryable) return 'catchup';
    return 'unknown';
  }
}

async function getKey(client: NetHsmClient, id: string) {
  try {
    return await client.getKey(id);
  } catch (err) {
    if (err instanceof NetHsmHttpError && err.status === 404) return undefined;
    throw err;
  }
}
