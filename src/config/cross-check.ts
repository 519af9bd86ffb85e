/**
 * Rules across settings: unique peer and namespace names, peers distinct from this site, every namespace's primary
 * a known site, replication users inside their namespace, no two listeners on one address, socket path length, the
 * gateway's write body timeout within its request timeout.
 * They read the raw (expanded) document defensively, so they report alongside schema problems rather than after.
 */
import { tryParseDuration } from './duration.js';
import { formatListenAddress, listenersConflict, parseListenAddress, type ListenAddress } from './listen.js';
import { namespaceOfUser } from '../nethsm/ids.js';
import { DEFAULT_ETCD, DEFAULT_GATEWAY_LIMITS, DEFAULT_HEALTH_LISTEN, DEFAULT_STATE_DIR, UNIX_SOCKET_PATH_MAX } from './schema.js';

type Raw = Record<string, unknown>;

const obj = (v: unknown): Raw | undefined => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Raw) : undefined);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/** Problems found; empty when the cross-field rules hold. Pure. */
export function crossCheck(raw: Raw): string[] {
  return [...checkSites(raw), ...checkNamespaces(raw), ...checkListeners(raw), ...checkSocket(raw), ...checkGateway(raw), ...checkStream(raw), ...checkEtcd(raw)];
}

function checkSites(raw: Raw): string[] {
  const problems: string[] = [];
  const site = str(raw.site);
  const seen = new Map<string, number>();
  list(raw.peers).forEach((p, i) => {
    const name = str(obj(p)?.name);
    if (name === undefined) return;
    if (name === site) problems.push(`peers[${i}].name "${name}" is this site's own name (site)`);
    // Member health and metrics call this site's own NetHSM "nethsm".
    if (name === 'nethsm') problems.push(`peers[${i}].name "nethsm" is reserved for this site's NetHSM; name the peer after its site`);
    const first = seen.get(name);
    if (first !== undefined) problems.push(`peers[${i}].name "${name}" is already used by peers[${first}]`);
    else seen.set(name, i);
  });
  return problems;
}

function checkNamespaces(raw: Raw): string[] {
  const problems: string[] = [];
  const site = str(raw.site);
  const sites = new Set(list(raw.peers).map((p) => str(obj(p)?.name)));
  if (site !== undefined) sites.add(site);
  const seen = new Map<string, number>();
  list(raw.namespaces).forEach((n, i) => {
    const ns = obj(n);
    const name = str(ns?.name);
    if (name !== undefined) {
      const first = seen.get(name);
      if (first !== undefined) problems.push(`namespaces[${i}].name "${name}" is already used by namespaces[${first}]`);
      else seen.set(name, i);
    }
    const primary = str(ns?.primary);
    if (primary !== undefined && !sites.has(primary)) {
      problems.push(`namespaces[${i}].primary "${primary}" is neither this site${site ? ` ("${site}")` : ''} nor one of the peers`);
    }
    const user = str(obj(ns?.replicationUser)?.user);
    const userNs = user === undefined ? undefined : namespaceOfUser(user);
    if (name !== undefined && userNs !== undefined && userNs !== name) {
      problems.push(`namespaces[${i}].replicationUser.user "${user}" belongs to namespace "${userNs}", not "${name}"`);
    }
  });
  return problems;
}

function checkListeners(raw: Raw): string[] {
  const listeners: { path: string; addr: ListenAddress }[] = [];
  const add = (path: string, text: string | undefined) => {
    const addr = text === undefined ? undefined : parseListenAddress(text);
    if (addr) listeners.push({ path, addr });
  };
  add('peerApi.listen', str(obj(raw.peerApi)?.listen));
  const health = obj(raw.health);
  add('health.listen', health && 'listen' in health ? str(health.listen) : DEFAULT_HEALTH_LISTEN);
  add('gateway.listen', str(obj(raw.gateway)?.listen));
  const problems: string[] = [];
  for (let i = 0; i < listeners.length; i++) {
    for (let j = 0; j < i; j++) {
      const a = listeners[i]!;
      const b = listeners[j]!;
      if (listenersConflict(a.addr, b.addr)) {
        problems.push(`${a.path} ${formatListenAddress(a.addr)} conflicts with ${b.path} ${formatListenAddress(b.addr)}`);
      }
    }
  }
  return problems;
}

function checkSocket(raw: Raw): string[] {
  const explicit = str(obj(raw.admin)?.socket);
  const socket = explicit ?? `${str(raw.stateDir) ?? DEFAULT_STATE_DIR}/admin.sock`;
  if (Buffer.byteLength(socket) <= UNIX_SOCKET_PATH_MAX) return [];
  return [
    explicit !== undefined
      ? `admin.socket is ${Buffer.byteLength(socket)} bytes long; unix socket paths hold at most ${UNIX_SOCKET_PATH_MAX}`
      : `stateDir is too long for the admin socket inside it (${Buffer.byteLength(socket)} bytes; at most ${UNIX_SOCKET_PATH_MAX}); set admin.socket`,
  ];
}

/** Forwarding replica writes to the primary's gateway needs every peer's gateway URL. */
function checkGateway(raw: Raw): string[] {
  const gw = obj(raw.gateway);
  const problems: string[] = [];
  // Node's request timeout would cut a slow write first, answering no 408 of the gateway's own and counting it elsewhere.
  const body = str(gw?.writeBodyTimeout);
  const request = str(gw?.requestTimeout);
  const bodyMs = body === undefined ? DEFAULT_GATEWAY_LIMITS.writeBodyTimeoutMs : tryParseDuration(body);
  const requestMs = request === undefined ? DEFAULT_GATEWAY_LIMITS.requestTimeoutMs : tryParseDuration(request);
  if (gw !== undefined && bodyMs !== undefined && requestMs !== undefined && bodyMs > requestMs) {
    problems.push(`gateway.writeBodyTimeout (${body ?? '30s'}) must not be longer than gateway.requestTimeout (${request ?? '5m'})`);
  }
  if (obj(gw?.remoteServing) !== undefined && !list(raw.peers).some((p) => str(obj(p)?.gatewayUrl) !== undefined)) {
    problems.push('gateway.remoteServing needs at least one peer with peers[].gatewayUrl (the gateways that serve while this NetHSM is down)');
  }
  if (gw?.forwardToPrimary !== true) return problems;
  return [
    ...problems,
    ...list(raw.peers).flatMap((p, i) =>
      str(obj(p)?.gatewayUrl) === undefined ? [`peers[${i}].gatewayUrl is required when gateway.forwardToPrimary is true`] : [],
    ),
  ];
}

/**
 * Streaming: replicated generation happens in the gateway, so it needs one; a heartbeat interval at least as long as
 * the retention would let every idle stream's position expire between two heartbeats.
 */
function checkStream(raw: Raw): string[] {
  const problems: string[] = [];
  if (raw.gateway === undefined) {
    list(raw.namespaces).forEach((n, i) => {
      if (obj(n)?.generate === 'replicated') problems.push(`namespaces[${i}].generate "replicated" needs a gateway (gateway.listen): keys are generated there`);
    });
  }
  const stream = obj(raw.stream);
  const hb = str(stream?.heartbeatInterval);
  const age = str(obj(stream?.retention)?.maxAge);
  const hbMs = hb === undefined ? 5_000 : tryParseDuration(hb);
  const ageMs = age === undefined ? 7 * 86_400_000 : tryParseDuration(age);
  if (hbMs !== undefined && ageMs !== undefined && hbMs >= ageMs) {
    problems.push(`stream.heartbeatInterval (${hb ?? '5s'}) must be shorter than stream.retention.maxAge (${age ?? '7d'})`);
  }
  return problems;
}

/**
 * Automatic failover needs etcd; the lease is whole seconds (etcd grants TTLs in seconds) of at least 2 s, and the
 * safety margin leaves the primary time to renew: at most half the lease. One scheme for every endpoint; client TLS
 * needs both the certificate and its key.
 */
function checkEtcd(raw: Raw): string[] {
  const problems: string[] = [];
  const etcd = obj(raw.etcd);
  if (etcd === undefined) {
    list(raw.namespaces).forEach((n, i) => {
      if (obj(n)?.failover === 'automatic') problems.push(`namespaces[${i}].failover "automatic" needs the etcd section (etcd.endpoints): the leader key lives there`);
    });
    return problems;
  }
  const ttlText = str(etcd.leaseTtl);
  const marginText = str(etcd.safetyMargin);
  const ttl = ttlText === undefined ? DEFAULT_ETCD.leaseTtlMs : tryParseDuration(ttlText);
  const margin = marginText === undefined ? DEFAULT_ETCD.safetyMarginMs : tryParseDuration(marginText);
  if (ttl !== undefined && ttl > 0 && (ttl % 1000 !== 0 || ttl < 2000)) problems.push(`etcd.leaseTtl (${ttlText}) must be a whole number of seconds, at least 2s (etcd grants leases in seconds)`);
  if (ttl !== undefined && margin !== undefined && margin > 0 && margin * 2 > ttl) {
    problems.push(`etcd.safetyMargin (${marginText ?? '3s'}) must be at most half of etcd.leaseTtl (${ttlText ?? '10s'}): the primary needs the rest to renew`);
  }
  const schemes = new Set(list(etcd.endpoints).flatMap((e) => (typeof e === 'string' && /^https?:/.test(e) ? [e.split(':')[0]] : [])));
  if (schemes.size > 1) problems.push('etcd.endpoints mix http:// and https://; use one scheme for every member');
  const tls = obj(etcd.tls);
  if (tls && (tls.certFile === undefined) !== (tls.keyFile === undefined)) problems.push('etcd.tls.certFile and etcd.tls.keyFile go together (client certificate and its key)');
  return problems;
}
