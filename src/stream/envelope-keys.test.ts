import { constants, generateKeyPairSync, privateDecrypt } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { openEnvelope } from './envelope.js';
import { EnvelopeSealer, UnwrappedKeyCache } from './envelope-keys.js';
import { parseTransportPublicKey } from './transport-key.js';

const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const publicKeyPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
const fingerprint = parseTransportPublicKey(publicKeyPem).fingerprint;
const recipient = { site: 'b', keyId: 'nhrtransport', publicKeyPem };
const expect_ = { site: 'b', keyId: 'nhrtransport', fingerprint };
/** Stands in for the NetHSM's decrypt (OAEP-SHA256), counting calls. */
function netHsm() {
  const calls = { n: 0 };
  const unwrap = async (w: Buffer) => {
    calls.n++;
    await new Promise((r) => setTimeout(r, 5));
    return privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, w);
  };
  return { calls, unwrap };
}

describe('envelope keys over a window', () => {
  it('seals many envelopes under one wrapped key, each with its own IV, and opens them with one unwrap', async () => {
    const sealer = new EnvelopeSealer({ maxUses: 100 });
    const envs = Array.from({ length: 20 }, (_, i) => sealer.seal(Buffer.from(`key material ${i}`), recipient, `alpha\nk${i}`));
    expect(new Set(envs.map((e) => e.wrappedKey)).size).toBe(1);
    expect(new Set(envs.map((e) => e.iv)).size).toBe(20);
    const hsm = netHsm();
    const cache = new UnwrappedKeyCache();
    // Concurrent opens share one NetHSM call.
    const plain = await Promise.all(envs.map((e, i) => openEnvelope(e, expect_, `alpha\nk${i}`, (w) => cache.unwrap(w, hsm.unwrap))));
    expect(plain.map((p) => p.toString())).toEqual(envs.map((_, i) => `key material ${i}`));
    expect(hsm.calls.n).toBe(1);
    // Bound to its own context: the shared key does not let one envelope pass for another.
    await expect(openEnvelope(envs[0]!, expect_, 'alpha\nk1', (w) => cache.unwrap(w, hsm.unwrap))).rejects.toMatchObject({ code: 'NHR_ERR_STREAM_ENVELOPE_INVALID' });
    sealer.close();
    cache.clear();
  });

  // Before: a daemon asked its own NetHSM to unwrap the window key of envelopes it had sealed to itself (log replay).
  it('tells each fresh window key to onNewKey once, and a cache that remembers it opens those envelopes with no NetHSM call', async () => {
    let now = 0;
    const told: { site: string; wrapped: string }[] = [];
    const cache = new UnwrappedKeyCache({ now: () => now });
    const sealer = new EnvelopeSealer({
      maxUses: 2,
      now: () => now,
      onNewKey: (site, wrapped, key) => {
        told.push({ site, wrapped: wrapped.toString('base64') });
        cache.remember(wrapped, key);
      },
    });
    const envs = [0, 1, 2].map((i) => sealer.seal(Buffer.from(`own ${i}`), recipient, `beta\nk${i}`));
    expect(told).toEqual([
      { site: 'b', wrapped: envs[0]!.wrappedKey },
      { site: 'b', wrapped: envs[2]!.wrappedKey },
    ]);
    // The sealer's window ends (its key zeroed) before the replay opens them: the cache kept its own copies.
    sealer.close();
    const hsm = netHsm();
    const plain = await Promise.all(envs.map((e, i) => openEnvelope(e, expect_, `beta\nk${i}`, (w) => cache.unwrap(w, hsm.unwrap))));
    expect(plain.map((p) => p.toString())).toEqual(['own 0', 'own 1', 'own 2']);
    expect(hsm.calls.n).toBe(0);
    // Same bounds as an unwrapped key: past its age the NetHSM is asked again.
    now = 120_001;
    await openEnvelope(envs[0]!, expect_, 'beta\nk0', (w) => cache.unwrap(w, hsm.unwrap));
    expect(hsm.calls.n).toBe(1);
    cache.clear();
  });

  it('starts a new key after the use limit or the age limit', () => {
    let now = 0;
    const sealer = new EnvelopeSealer({ maxUses: 3, maxAgeMs: 1000, now: () => now });
    const w = () => sealer.seal(Buffer.from('x'), recipient, 'ctx').wrappedKey;
    const first = [w(), w(), w()];
    expect(new Set(first).size).toBe(1);
    const fourth = w();
    expect(fourth).not.toBe(first[0]);
    now = 1001;
    expect(w()).not.toBe(fourth);
    sealer.close();
  });

  it('forgets keys past their age and beyond its size, and never caches a failed unwrap', async () => {
    let now = 0;
    const cache = new UnwrappedKeyCache({ maxAgeMs: 100, maxEntries: 2, now: () => now });
    const hsm = netHsm();
    const sealer = new EnvelopeSealer({ maxUses: 1 });
    const wrapped = [1, 2, 3].map(() => Buffer.from(sealer.seal(Buffer.from('x'), recipient, 'c').wrappedKey, 'base64'));
    for (const w of wrapped) await cache.unwrap(w, hsm.unwrap);
    expect(cache.size).toBe(2);
    expect(hsm.calls.n).toBe(3);
    await cache.unwrap(wrapped[2]!, hsm.unwrap);
    expect(hsm.calls.n).toBe(3);
    now = 101;
    await cache.unwrap(wrapped[2]!, hsm.unwrap);
    expect(hsm.calls.n).toBe(4);
    const failing = async () => {
      throw new Error('NetHSM down');
    };
    await expect(cache.unwrap(Buffer.from('not cached'), failing)).rejects.toThrow('NetHSM down');
    await expect(cache.unwrap(Buffer.from('not cached'), failing)).rejects.toThrow('NetHSM down');
    cache.clear();
    expect(cache.size).toBe(0);
    sealer.close();
  });

  it('zeroes a remembered own key once its age runs out, with no unwrap to notice it', () => {
    vi.useFakeTimers();
    try {
      const cache = new UnwrappedKeyCache({ maxAgeMs: 100 });
      const sealer = new EnvelopeSealer({ onNewKey: (_site, wrapped, key) => cache.remember(wrapped, key) });
      sealer.seal(Buffer.from('x'), recipient, 'c');
      expect(cache.size).toBe(1);
      vi.advanceTimersByTime(99);
      expect(cache.size).toBe(1);
      vi.advanceTimersByTime(2);
      // Before: kept (and unzeroed) until the next unwrap or 64 other keys, however long that took.
      expect(cache.size).toBe(0);
      expect(vi.getTimerCount()).toBe(0);
      sealer.close();
    } finally {
      vi.useRealTimers();
    }
  });
});
