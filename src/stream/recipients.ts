/**
 * The replica sites' transport keys, as the primary seals imports to them: fetched from each peer's API
 * (`GET /peer/v1/transport-key`, validated), kept in SQLite so imports can be sealed while a peer is down, and
 * refreshed on a timer and whenever a peer has none on record. Public keys only.
 */
import type { Logger } from '../log.js';
import type { PeerClient } from '../peer/client.js';
import type { StateStore } from '../state/store.js';
import type { PeerTransportKey } from '../state/transport-keys-repo.js';

export interface RecipientsOptions {
  store: StateStore;
  peers: ReadonlyMap<string, PeerClient>;
  log: Logger;
  /** After a failed fetch, wait this long before asking that peer again at seal time (default 2 s). */
  retryAfterMs?: number;
}

export class Recipients {
  readonly #o: RecipientsOptions;
  readonly #lastFailure = new Map<string, number>();

  constructor(o: RecipientsOptions) {
    this.#o = o;
  }

  /** The sites an import is sealed for: every peer. */
  sites(): string[] {
    return [...this.#o.peers.keys()];
  }

  /**
   * The site's transport key: the one on record, else fetched now (unless a fetch failed within `retryAfterMs`).
   * Undefined when there is none; never throws.
   */
  async get(site: string): Promise<PeerTransportKey | undefined> {
    const known = this.#o.store.transportKeys.get(site);
    if (known) return known;
    const failed = this.#lastFailure.get(site);
    if (failed !== undefined && Date.now() - failed < (this.#o.retryAfterMs ?? 2_000)) return undefined;
    return this.refresh(site);
  }

  /** Fetches the site's key from its peer API and records it (a changed key replaces the old one). Never throws. */
  async refresh(site: string): Promise<PeerTransportKey | undefined> {
    const peer = this.#o.peers.get(site);
    if (!peer) return undefined;
    try {
      const info = await peer.transportKey(5_000);
      const before = this.#o.store.transportKeys.get(site);
      const saved = this.#o.store.transportKeys.save({ site, keyId: info.keyId, publicKeyPem: info.publicKeyPem, fingerprint: info.fingerprint });
      if (before && before.fingerprint !== info.fingerprint) this.#o.log.warn({ peer: site, keyId: info.keyId }, "a peer's transport key changed");
      this.#lastFailure.delete(site);
      return saved;
    } catch (err) {
      this.#lastFailure.set(site, Date.now());
      this.#o.log.warn({ peer: site, err }, "cannot fetch the peer's transport key; imports are streamed to it as catch-ups until it is known");
      return this.#o.store.transportKeys.get(site);
    }
  }

  async refreshAll(): Promise<void> {
    await Promise.all(this.sites().map((s) => this.refresh(s)));
  }
}
