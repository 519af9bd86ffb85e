/**
 * The health endpoints as functions from a request line to an answer, so the HTTP server stays about sockets.
 *
 * - `/health/live`: 200 while the process can answer at all.
 * - `/health/ready`: 200 only when the daemon's readiness checks all pass; 503 with the failing checks otherwise.
 *   Either way `warnings` lists what needs an eye without making the site unready (a sync's cost near its bounds).
 * - `/primary/<ns>`: 200 only where the namespace is primary here; 503 otherwise.
 * - `/replica/<ns>?max_lag=<duration>`: 200 only for a replica whose lag is within max_lag (default: the namespace's
 *   lag limit, or any synced replica when none is known) and that can serve reads now (not while this site's NetHSM
 *   is down and its gateway does not serve from a peer); 503 otherwise.
 * - `/metrics`: Prometheus text.
 * Unknown namespace: 404. Invalid namespace id, invalid or repeated `max_lag`, unknown query parameter on the role
 * checks: 400. Unknown path: 404. Methods other than GET and HEAD: 405.
 */
import { withDeadline } from '../util/deadline.js';
import { tryParseDuration } from '../config/duration.js';
import { isValidId } from '../nethsm/ids.js';
import type { ScrapeSource } from '../metrics/nethsm-exporter.js';
import type { Logger } from '../log.js';
import type { HealthSource, Readiness } from './source.js';

export interface HealthAnswer {
  status: number;
  contentType: string;
  body: string;
  headers?: Record<string, string>;
}

export interface RouteDeps {
  source: HealthSource;
  metrics: ScrapeSource;
  readyTimeoutMs: number;
  logger: Logger;
}

const JSON_TYPE = 'application/json; charset=utf-8';

function json(status: number, body: unknown, headers?: Record<string, string>): HealthAnswer {
  return { status, contentType: JSON_TYPE, body: `${JSON.stringify(body)}\n`, ...(headers ? { headers } : {}) };
}

/** Answers one request. Never throws: a failing dependency becomes a 5xx answer. */
export async function route(method: string, rawUrl: string, deps: RouteDeps): Promise<HealthAnswer> {
  let url: URL;
  try {
    url = new URL(rawUrl, 'http://health.invalid');
  } catch {
    return json(400, { error: 'malformed request target' });
  }
  const path = url.pathname;
  const known = path === '/health/live' || path === '/health/ready' || path === '/metrics' ||
    path.startsWith('/primary/') || path.startsWith('/replica/');
  if (!known) return json(404, { error: `no such endpoint: ${truncate(path)}` });
  if (method !== 'GET' && method !== 'HEAD') {
    return json(405, { error: `method ${truncate(method)} not allowed` }, { Allow: 'GET, HEAD' });
  }
  if (path === '/health/live') return json(200, { live: true });
  if (path === '/health/ready') return readiness(deps);
  if (path === '/metrics') return metrics(deps);
  const role = path.startsWith('/primary/') ? 'primary' : 'replica';
  return roleCheck(role, path.slice(role.length + 2), url.searchParams, deps.source);
}

async function readiness(deps: RouteDeps): Promise<HealthAnswer> {
  let result: Readiness;
  try {
    result = await withDeadline(deps.source.ready(), deps.readyTimeoutMs, () => new Error(`readiness checks did not answer within ${deps.readyTimeoutMs} ms`));
  } catch (err) {
    deps.logger.warn({ err }, 'readiness checks failed to answer');
    // NhrError messages carry no secrets (errors.ts contract); anything else is named by its class only.
    const detail = err instanceof Error && (typeof (err as { code?: unknown }).code === 'string' || err.message.startsWith('readiness'))
      ? err.message
      : 'readiness check failed';
    return json(503, { ready: false, failing: ['readiness'], checks: { readiness: { ok: false, detail } } });
  }
  const checks = isRecord(result?.checks) ? result.checks : {};
  const failing = Object.entries(checks).filter(([, c]) => !isRecord(c) || c.ok !== true).map(([name]) => name);
  const ready = result?.ready === true && failing.length === 0;
  if (result?.ready !== true && failing.length === 0) failing.push('ready');
  const warnings = Array.isArray(result?.warnings) ? result.warnings.filter((w): w is string => typeof w === 'string') : [];
  const extra = warnings.length > 0 ? { warnings } : {};
  return json(ready ? 200 : 503, ready ? { ready, checks, ...extra } : { ready, failing, checks, ...extra });
}

async function metrics(deps: RouteDeps): Promise<HealthAnswer> {
  try {
    return { status: 200, contentType: deps.metrics.contentType, body: await deps.metrics.metrics() };
  } catch (err) {
    deps.logger.error({ err }, 'collecting metrics failed');
    return { status: 500, contentType: 'text/plain; charset=utf-8', body: 'collecting metrics failed\n' };
  }
}

function roleCheck(
  want: 'primary' | 'replica',
  rawNamespace: string,
  params: URLSearchParams,
  source: HealthSource,
): HealthAnswer {
  if (rawNamespace.includes('/')) return json(404, { error: 'no such endpoint' });
  let namespace: string;
  try {
    namespace = decodeURIComponent(rawNamespace);
  } catch {
    return json(400, { error: 'namespace is not valid percent-encoding' });
  }
  if (!isValidId(namespace)) {
    return json(400, { error: `"${truncate(namespace)}" is not a namespace id (1..128 of a-z A-Z 0-9 _ . -, starting alphanumeric)` });
  }
  const allowed = want === 'replica' ? ['max_lag'] : [];
  const unknown = [...new Set(params.keys())].filter((k) => !allowed.includes(k));
  if (unknown.length > 0) return json(400, { error: `unknown query parameter ${truncate(unknown.join(', '))}` });
  let maxLagSeconds: number | undefined;
  if (want === 'replica' && params.has('max_lag')) {
    const values = params.getAll('max_lag');
    const ms = values.length === 1 ? tryParseDuration(values[0] ?? '') : undefined;
    if (ms === undefined) {
      return json(400, { error: `max_lag must be one duration such as 30s, 5m, 1h or 1h30m (got ${truncate(values.join(', '))})` });
    }
    maxLagSeconds = ms / 1000;
  }
  const state = source.namespaceRole(namespace);
  if (!state) return json(404, { namespace, error: 'this site does not replicate the namespace' });
  const base = { namespace, role: state.role, ...(state.epoch !== undefined ? { epoch: state.epoch } : {}) };
  if (want === 'primary') return json(state.role === 'primary' ? 200 : 503, base);
  const limit = maxLagSeconds ?? state.lagLimitSeconds;
  const body = { ...base, lagSeconds: state.lagSeconds, ...(limit !== undefined ? { maxLagSeconds: limit } : {}) };
  if (state.role !== 'replica') return json(503, body);
  if (state.lagSeconds === null) return json(503, { ...body, reason: 'never synced' });
  if (limit !== undefined && !(state.lagSeconds <= limit)) return json(503, { ...body, reason: 'lag over max_lag' });
  // A load balancer sends reads and signing here on a 200: not while the gateway could only pass on the NetHSM's 412.
  if (state.unavailable) return json(503, { ...body, reason: state.unavailable });
  return json(200, body);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Bounds what a client's input can make us echo back. */
function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 80)}…` : s;
}
