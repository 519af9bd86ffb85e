/**
 * The daemon's admin API server: HTTP on a unix socket, created with mode 0600 in the state directory.
 * Long-lived part with idempotent start()/close().
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { chmod, lstat, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import type { z } from 'zod';
import { InputInvalidError, NhrError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import {
  ADMIN_API_PREFIX,
  demoteRequestSchema,
  namespaceParam,
  promoteRequestSchema,
  quarantineAckRequestSchema,
  restoreAdminsRequestSchema,
  simpleRequestSchema,
  syncRequestSchema,
  type AdminErrorBody,
  type DemoteRequest,
  type PromoteRequest,
  type QuarantineAckRequest,
  type RestoreAdminsRequest,
  type SimpleRequest,
  type SyncRequest,
} from './protocol.js';

/** What the daemon does for each admin request. Each may throw an NhrError, which is sent back as is. */
export interface AdminHandlers {
  status(): Promise<unknown>;
  sync(namespace: string, req: SyncRequest): Promise<unknown>;
  promote(namespace: string, req: PromoteRequest): Promise<unknown>;
  demote(namespace: string, req: DemoteRequest): Promise<unknown>;
  pause(namespace: string, req: SimpleRequest): Promise<unknown>;
  resume(namespace: string, req: SimpleRequest): Promise<unknown>;
  /** Retries now the administrator restore the namespace is owed (AdminRestorer.retryNow), or forgets it (`forget`). */
  restoreAdmins(namespace: string, req: RestoreAdminsRequest): Promise<unknown>;
  /** The quarantine files and what each holds. */
  quarantineList(): Promise<unknown>;
  /** Records that the operator looked at one quarantine file. */
  quarantineAck(req: QuarantineAckRequest): Promise<unknown>;
}

export interface AdminServerOptions {
  socketPath: string;
  handlers: AdminHandlers;
  logger?: Logger;
}

const MAX_BODY = 16 * 1024;

export class AdminServer {
  readonly socketPath: string;
  private readonly handlers: AdminHandlers;
  private readonly log: Logger;
  private server: Server | undefined;

  constructor(options: AdminServerOptions) {
    this.socketPath = options.socketPath;
    this.handlers = options.handlers;
    this.log = options.logger ?? silentLogger;
  }

  /** Listens on the socket (removing a stale one left by a crash). Idempotent. Throws when another daemon owns it. */
  async start(): Promise<void> {
    if (this.server) return;
    await removeStaleSocket(this.socketPath);
    const server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    // The state directory is 0700 (systemd StateDirectoryMode); the socket is 0600 on top of that.
    await chmod(this.socketPath, 0o600);
    this.server = server;
    this.log.info({ socket: this.socketPath }, 'admin API listening');
  }

  /** Stops listening and removes the socket. Idempotent. */
  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await unlink(this.socketPath).catch(() => undefined);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const result = await this.route(req);
      send(res, 200, result ?? { ok: true });
    } catch (err) {
      const { status, body } = errorResponse(err);
      if (status >= 500) this.log.error({ err }, 'admin request failed');
      send(res, status, body);
    }
  }

  private async route(req: IncomingMessage): Promise<unknown> {
    const url = new URL(req.url ?? '/', 'http://admin');
    const path = url.pathname;
    if (path === `${ADMIN_API_PREFIX}/status`) {
      requireMethod(req, 'GET');
      return this.handlers.status();
    }
    if (path === `${ADMIN_API_PREFIX}/quarantine`) {
      requireMethod(req, 'GET');
      return this.handlers.quarantineList();
    }
    if (path === `${ADMIN_API_PREFIX}/quarantine/ack`) {
      requireMethod(req, 'POST');
      return this.handlers.quarantineAck(parse(quarantineAckRequestSchema, await readJson(req), 'body'));
    }
    const m = /^\/v1\/namespaces\/([^/]+)\/(sync|promote|demote|pause|resume|restore-admins)$/.exec(path);
    if (!m) throw new RouteError(404, `no such admin endpoint: ${path}`);
    requireMethod(req, 'POST');
    const ns = parse(namespaceParam, decodeURIComponent(m[1]!), 'namespace');
    const body = await readJson(req);
    switch (m[2]) {
      case 'promote':
        return this.handlers.promote(ns, parse(promoteRequestSchema, body, 'body'));
      case 'demote':
        return this.handlers.demote(ns, parse(demoteRequestSchema, body, 'body'));
      case 'sync':
        return this.handlers.sync(ns, parse(syncRequestSchema, body, 'body'));
      case 'pause':
        return this.handlers.pause(ns, parse(simpleRequestSchema, body, 'body'));
      case 'restore-admins':
        return this.handlers.restoreAdmins(ns, parse(restoreAdminsRequestSchema, body, 'body'));
      default:
        return this.handlers.resume(ns, parse(simpleRequestSchema, body, 'body'));
    }
  }
}

class RouteError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function requireMethod(req: IncomingMessage, method: string): void {
  if (req.method !== method) throw new RouteError(405, `use ${method} for ${req.url}`);
}

function parse<T extends z.ZodType>(schema: T, value: unknown, what: string): z.infer<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = issue && issue.path.length > 0 ? `${what}.${issue.path.join('.')}` : what;
  throw new InputInvalidError(`${where} ${issue?.message ?? 'is invalid'}`);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new RouteError(413, `request body over ${MAX_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return {};
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new InputInvalidError('request body is not valid JSON');
  }
}

function errorResponse(err: unknown): { status: number; body: AdminErrorBody } {
  if (err instanceof RouteError) {
    return { status: err.status, body: { error: { code: 'NHR_ERR_INPUT_INVALID', message: err.message } } };
  }
  if (err instanceof NhrError) {
    const status = err instanceof InputInvalidError ? 400 : err.retryable ? 503 : 409;
    const e: AdminErrorBody['error'] = { code: err.code, message: err.message, hint: err.hint };
    if (err.namespace !== undefined) e.namespace = err.namespace;
    if (err.site !== undefined) e.site = err.site;
    if (err.epoch !== undefined) e.epoch = err.epoch;
    return { status, body: { error: e } };
  }
  return { status: 500, body: { error: { code: 'NHR_ERR_INTERNAL', message: 'internal error; see the daemon log' } } };
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Removes a socket file no process listens on; refuses (throws) when a live daemon owns it. */
async function removeStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket()) throw new InputInvalidError(`${path} exists and is not a socket; refusing to replace it`);
  const alive = await new Promise<boolean>((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (alive) throw new InputInvalidError(`another daemon is listening on ${path}`, { hint: 'Stop the other daemon first.' });
  await unlink(path);
}
