/**
 * Re-exports the NetHSM's own `GET /metrics` (a flat JSON object whose values are strings, e.g.
 * `{"uptime":"123","http response 200":"17"}`) as Prometheus gauges named `nethsm_<sanitized key>`.
 *
 * The device is read on scrape: {@link NetHsmExporter.metrics} fetches (bounded by a timeout), updates the gauges on the
 * injected registry, then renders the whole registry. Give the exporter, not the bare registry, to the health server's
 * `/metrics`. Bad input (not a flat object, non-numeric values, unusable names) is counted and logged, never thrown
 * into the scrape; when the fetch fails, `nethsm_replicator_nethsm_metrics_up` is 0 and the `nethsm_*` gauges vanish
 * (no stale values).
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { silentLogger, type Logger } from '../log.js';
import { METRIC_PREFIX } from './metrics.js';
import { withDeadline } from '../util/deadline.js';

export const NETHSM_METRIC_PREFIX = 'nethsm_';

/** Why a fetch of the device's metrics failed: a closed set (label `reason`). */
export const NETHSM_FETCH_FAILURE_REASONS = ['timeout', 'error', 'invalid'] as const;
export type NetHsmFetchFailureReason = (typeof NETHSM_FETCH_FAILURE_REASONS)[number];

/** What the health server's `/metrics` needs: a prom-client Registry satisfies it, and so does the exporter. */
export interface ScrapeSource {
  readonly contentType: string;
  metrics(): Promise<string>;
}

export interface NetHsmExporterOptions {
  /** The registry the replicator's metrics live on (created with createReplicatorMetrics). */
  registry: Registry;
  /**
   * Reads the device's metrics, e.g. `(signal) => client.metrics()` with a Metrics-role account.
   * The signal aborts when the timeout passes; a fetcher that ignores it is still cut off.
   */
  fetch: (signal: AbortSignal) => Promise<unknown>;
  /** Default 5000 ms; keep it under Prometheus's scrape_timeout. */
  timeoutMs?: number;
  /** Most device metrics exported; the rest are counted as skipped. Default 1000 (bounds cardinality). */
  maxMetrics?: number;
  logger?: Logger;
}

export interface NetHsmExporter extends ScrapeSource {
  /** Fetches once and updates the gauges. Never throws; concurrent calls share one fetch. */
  refresh(): Promise<void>;
  /** refresh(), then the registry's Prometheus text. Rejects only if the registry itself fails. */
  metrics(): Promise<string>;
  /** Removes every metric this exporter registered. Idempotent; refresh() does nothing afterwards. */
  close(): void;
}

const MAX_KEY_LENGTH = 200;
/** The exporter's own metrics (after the `nethsm_replicator_` prefix). */
const OWN_METRICS = [
  'nethsm_metrics_up',
  'nethsm_metrics_skipped',
  'nethsm_metrics_fetch_duration_seconds',
  'nethsm_metrics_fetch_failures_total',
] as const;
const NUMBER_PATTERN = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/**
 * `http response 200` → `nethsm_http_response_200`; `http response total` → `nethsm_http_response` (a gauge may not end
 * in `_total`). Returns undefined for a key that yields no usable name
 * (empty, too long, or one that would land in the replicator's own `nethsm_replicator_` namespace).
 */
export function sanitizeNetHsmMetricName(key: string): string | undefined {
  if (key.length === 0 || key.length > MAX_KEY_LENGTH) return undefined;
  const body = key
    .toLowerCase()
    .replace(/[^a-z0-9_]+/g, '_')
    .replace(/_+/g, '_')
    .replace(/^_|_$/g, '');
  if (body.length === 0) return undefined;
  // Device values are exported as gauges; a gauge may not end in a counter's `_total` (promtool check metrics).
  const name = `${NETHSM_METRIC_PREFIX}${body.replace(/_total$/, '') || body}`;
  return name.startsWith(METRIC_PREFIX) ? undefined : name;
}

/** A finite number from a number or a numeric string (the firmware sends strings); undefined otherwise. */
export function parseNetHsmMetricValue(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  if (typeof value !== 'string') return undefined;
  const trimmed = value.trim();
  if (!NUMBER_PATTERN.test(trimmed)) return undefined;
  const n = Number(trimmed);
  return Number.isFinite(n) ? n : undefined;
}

function isFlatObjectShape(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

class FetchTimeoutError extends Error {}

/**
 * Registers the exporter's own gauges on `options.registry`.
 * Throws prom-client's Error when an exporter is already registered there (close() the old one first).
 */
export function createNetHsmExporter(options: NetHsmExporterOptions): NetHsmExporter {
  const { registry } = options;
  const timeoutMs = options.timeoutMs ?? 5000;
  const maxMetrics = options.maxMetrics ?? 1000;
  const logger = options.logger ?? silentLogger;
  const registers = [registry];

  const up = new Gauge({
    name: `${METRIC_PREFIX}nethsm_metrics_up`,
    help: '1 when the last read of the NetHSM\'s /metrics succeeded and was a flat JSON object, else 0.',
    registers,
  });
  const skipped = new Gauge({
    name: `${METRIC_PREFIX}nethsm_metrics_skipped`,
    help: 'NetHSM metrics left out of the last read: non-numeric values, unusable or duplicate names, over the cap.',
    registers,
  });
  const fetchDuration = new Gauge({
    name: `${METRIC_PREFIX}nethsm_metrics_fetch_duration_seconds`,
    help: 'Duration of the last read of the NetHSM\'s /metrics.',
    registers,
  });
  const failures = new Counter({
    name: `${METRIC_PREFIX}nethsm_metrics_fetch_failures_total`,
    help: 'Failed reads of the NetHSM\'s /metrics by reason (timeout, error, invalid).',
    labelNames: ['reason'],
    registers,
  });

  const deviceGauges = new Map<string, Gauge>();
  let inflight: Promise<void> | undefined;
  let lastOk: boolean | undefined;
  let closed = false;

  function dropDeviceGauges(keep: Set<string>): void {
    for (const name of [...deviceGauges.keys()]) {
      if (keep.has(name)) continue;
      registry.removeSingleMetric(name);
      deviceGauges.delete(name);
    }
  }

  function fail(reason: NetHsmFetchFailureReason, detail: Record<string, unknown>): void {
    up.set(0);
    failures.inc({ reason });
    dropDeviceGauges(new Set());
    // Log transitions only: a device down for an hour must not write a line per scrape.
    if (lastOk !== false) logger.warn({ reason, ...detail }, 'reading the NetHSM metrics failed');
    lastOk = false;
  }

  function apply(data: Record<string, unknown>): void {
    const seen = new Set<string>();
    let skippedCount = 0;
    for (const [key, raw] of Object.entries(data)) {
      const name = sanitizeNetHsmMetricName(key);
      const value = parseNetHsmMetricValue(raw);
      const known = name !== undefined && deviceGauges.has(name);
      const clash = name !== undefined && !known && registry.getSingleMetric(name) !== undefined;
      if (name === undefined || value === undefined || seen.has(name) || clash || seen.size >= maxMetrics) {
        skippedCount++;
        continue;
      }
      seen.add(name);
      let gauge = deviceGauges.get(name);
      if (!gauge) {
        gauge = new Gauge({ name, help: `NetHSM metric "${key}" (from the device's /metrics).`, registers });
        deviceGauges.set(name, gauge);
      }
      gauge.set(value);
    }
    dropDeviceGauges(seen);
    skipped.set(skippedCount);
    up.set(1);
    if (lastOk === false) logger.info({ metrics: seen.size, skipped: skippedCount }, 'reading the NetHSM metrics recovered');
    lastOk = true;
  }

  async function fetchOnce(): Promise<void> {
    const controller = new AbortController();
    const started = process.hrtime.bigint();
    try {
      // On the deadline the read is also cancelled, not only left unheard.
      const late = () => {
        controller.abort();
        return new FetchTimeoutError();
      };
      const data = await withDeadline(options.fetch(controller.signal), timeoutMs, late);
      if (closed) return;
      if (!isFlatObjectShape(data)) {
        fail('invalid', { got: Array.isArray(data) ? 'array' : data === null ? 'null' : typeof data });
        return;
      }
      apply(data);
    } catch (err) {
      if (closed) return;
      if (err instanceof FetchTimeoutError) fail('timeout', { timeoutMs });
      else fail('error', { err: describeError(err) });
    } finally {
      if (!closed) fetchDuration.set(Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  const exporter: NetHsmExporter = {
    get contentType() {
      return registry.contentType;
    },
    refresh() {
      if (closed) return Promise.resolve();
      inflight ??= fetchOnce().finally(() => {
        inflight = undefined;
      });
      return inflight;
    },
    async metrics() {
      await exporter.refresh();
      return registry.metrics();
    },
    close() {
      if (closed) return;
      closed = true;
      dropDeviceGauges(new Set());
      for (const suffix of OWN_METRICS) registry.removeSingleMetric(`${METRIC_PREFIX}${suffix}`);
    },
  };
  return exporter;
}

/** Code and message only: the project's errors carry no secrets (errors.ts contract); never the cause chain. */
function describeError(err: unknown): Record<string, unknown> {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return { name: err.name, ...(typeof code === 'string' ? { code } : {}), message: err.message };
  }
  return { message: String(err) };
}
