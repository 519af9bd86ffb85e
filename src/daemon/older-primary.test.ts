import { describe, expect, it } from 'vitest';
import { AntiEntropyPrimaryTooOldError, PeerMessageInvalidError, PeerUnreachableError } from '../errors.js';
import { MAX_INVENTORY_KEYS } from '../namespaces/inventory.js';
import { readOneAnswerInventory, tooLargeToRead } from './older-primary.js';

/** A peer answering the one-answer inventory route with `answer` (or failing with it). */
const peerAnswering = (answer: () => Promise<unknown>) => ({ name: 'a', inventory: () => answer() });

describe('the one-answer inventory of an older primary', () => {
  it('names an answer beyond the cap AntiEntropyPrimaryTooOldError, before looking at its items', async () => {
    const peer = peerAnswering(async () => ({ namespace: 'alpha', takenAt: 1, keys: new Array<number>(MAX_INVENTORY_KEYS + 1).fill(0) }));
    const err = await readOneAnswerInventory(peer, 'alpha').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AntiEntropyPrimaryTooOldError);
    expect(err).toMatchObject({ namespace: 'alpha', site: 'a', code: 'NHR_ERR_ANTIENTROPY_PRIMARY_TOO_OLD' });
  });

  it('names an answer too large for one string so too, and passes other failures on as they are', async () => {
    const tooLong = Object.assign(new Error('Cannot create a string longer than 0x1fffffe8 characters'), { code: 'ERR_STRING_TOO_LONG' });
    const cut = new PeerMessageInvalidError('a answered GET /inventory with invalid JSON', { site: 'a', cause: tooLong });
    expect(tooLargeToRead(cut)).toBe(true);
    expect(tooLargeToRead(new PeerMessageInvalidError('invalid JSON', { site: 'a', cause: new RangeError('Invalid string length') }))).toBe(true);
    await expect(readOneAnswerInventory(peerAnswering(() => Promise.reject(cut)), 'alpha')).rejects.toBeInstanceOf(AntiEntropyPrimaryTooOldError);
    // A malformed answer or an unreachable primary may be fixed by a retry: not this error.
    const malformed = new PeerMessageInvalidError('a answered GET /inventory with invalid JSON', { site: 'a', cause: new SyntaxError('Unexpected token') });
    expect(tooLargeToRead(malformed)).toBe(false);
    await expect(readOneAnswerInventory(peerAnswering(() => Promise.reject(malformed)), 'alpha')).rejects.toBe(malformed);
    const down = new PeerUnreachableError('a did not answer', { site: 'a' });
    await expect(readOneAnswerInventory(peerAnswering(() => Promise.reject(down)), 'alpha')).rejects.toBe(down);
    await expect(readOneAnswerInventory(peerAnswering(async () => ({ namespace: 'alpha', takenAt: 1, keys: [{ id: 1 }] })), 'alpha')).rejects.toBeInstanceOf(PeerMessageInvalidError);
  });
});
