/**
 * Helpers for the streaming integration tests: wait for a replica to catch up, and compare a namespace key by key
 * between two sites (ids, public data, mechanisms, tags, label, certificate).
 */
import { generateForImport } from '../../src/keygen/index.js';
import { Lab, type LabSite } from '../../src/lab/lab.js';
import type { NetHsmClient, PrivateKey } from '../../src/nethsm/client.js';

/** Polls `check` until it returns true (or throws the last failure after `timeoutMs`). Not a timed assertion: a bound. */
export async function eventually(check: () => Promise<boolean> | boolean, timeoutMs = 30_000, what = 'condition'): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Waits until every site's transport key is ready and every site holds its peers' keys, so imports travel in envelopes
 * (a site that cannot seal for a peer streams the import to it as a catch-up instead, which also converges).
 */
export async function streamReady(sites: LabSite[]): Promise<void> {
  for (const s of sites) await s.daemon!.stream.publicTransportKey();
  for (const s of sites) {
    for (const peer of sites.filter((p) => p !== s)) {
      await eventually(async () => (await s.daemon!.stream.recipients.refresh(peer.name)) !== undefined, 30_000, `${s.name} to know ${peer.name}'s transport key`);
    }
  }
}

/** Waits until `replica`'s stream position equals `primary`'s change-log head for the namespace. */
export async function caughtUp(primary: LabSite, replica: LabSite, ns: string, timeoutMs = 30_000): Promise<void> {
  await eventually(
    () => {
      const p = primary.daemon!.ctx.store;
      const row = p.roles.require(ns);
      const head = p.changelog.head(ns, row.epoch);
      const pos = replica.daemon?.ctx.store.positions.get(ns, primary.name);
      return pos?.epoch === head.epoch && pos.seq === head.seq && !replica.daemon!.syncer.isBusy(ns);
    },
    timeoutMs,
    `${replica.name} to catch up with ${primary.name} on ${ns}`,
  );
}

export interface KeyView {
  id: string;
  type: string;
  mechanisms: string[];
  tags: string[];
  label: string | null;
  publicPem: string | null;
  cert: string | null;
}

/** Every key of the namespace as `client` (a namespace Administrator) sees it, sorted by id. */
export async function inventory(client: NetHsmClient): Promise<KeyView[]> {
  const out: KeyView[] = [];
  for (const id of (await client.listKeys()).sort()) {
    const k = await client.getKey(id);
    const cert = await client.getCert(id);
    out.push({
      id,
      type: k.type,
      mechanisms: [...k.mechanisms],
      tags: [...(k.restrictions?.tags ?? [])].sort(),
      label: k.label ?? null,
      publicPem: k.type === 'Generic' ? null : await client.publicKeyPem(id),
      cert: cert ? cert.data.toString('base64') : null,
    });
  }
  return out;
}

/** Ids missing at the replica, extra there, and ids whose views differ. */
export function diffInventories(primary: KeyView[], replica: KeyView[]): { missing: string[]; extra: string[]; differ: string[] } {
  const p = new Map(primary.map((k) => [k.id, k]));
  const r = new Map(replica.map((k) => [k.id, k]));
  return {
    missing: [...p.keys()].filter((id) => !r.has(id)),
    extra: [...r.keys()].filter((id) => !p.has(id)),
    differ: [...p.keys()].filter((id) => r.has(id) && JSON.stringify(p.get(id)) !== JSON.stringify(r.get(id))),
  };
}

/** A fresh private key as a NetHSM JSON import body (parsed), made the way replicated generation makes it. */
export function importBody(type: 'EC_P256' | 'RSA' | 'Curve25519', mechanisms: string[], extra: Record<string, unknown> = {}): PrivateKey {
  const made = generateForImport({ type, mechanisms, ...(type === 'RSA' ? { length: 2048 } : {}), ...extra });
  const body = JSON.parse(made.importBody.toString('utf8')) as PrivateKey;
  made.importBody.fill(0);
  return body;
}

/**
 * Two lab sites streaming namespace `ns` (primary at a, `generate: replicated`, a's gateway): daemons started, b's first
 * snapshot sync done and both transport keys known, so the next write through a's gateway is streamed to b.
 */
export async function streamingPair(ns: string): Promise<{ lab: Lab; a: LabSite; b: LabSite }> {
  const lab = await Lab.create({ namespaces: [{ name: ns, primary: 'a', generate: 'replicated' }], gateway: true });
  try {
    await lab.startDaemons();
    const a = lab.site('a');
    const b = lab.site('b');
    await b.daemon!.syncer.sync(ns, { actor: 'test' });
    await streamReady([a, b]);
    return { lab, a, b };
  } catch (err) {
    await lab.close();
    throw err;
  }
}

