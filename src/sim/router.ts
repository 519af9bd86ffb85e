/**
 * Routing and the firmware's decision order (FACTS §1.6): state (412) → unknown method (501) → URI length (414) →
 * method (405) → auth (429/401) → role/namespace (403) → Content-Type (415) → body size (413) → Accept (406) →
 * existence (404) → latency → handler. Error bodies per §10.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { SimHttpError } from './http-error.js';
import { acceptable, mediaType, readBody, DEFAULT_BODY_LIMIT, type Reply, type RequestContext } from './http.js';
import { authenticate } from './auth.js';
import type { SimCore } from './context.js';
import type { SimState } from './device.js';
import type { Role } from './users.js';

export type Method = 'GET' | 'PUT' | 'POST' | 'DELETE';

/** Who may call: nobody needs to log in, or a role set (root-only when `root`). */
export type Access = 'public' | { roles: Role[]; root?: boolean };

export interface Route {
  method: Method;
  /** `/keys/:id/sign`; a `:name*` segment matches a segment ending in `*` (prefix listing). */
  path: string;
  states: SimState[];
  /** Access rule; a function when it depends on the state (restore, diagnose). */
  access: Access | ((state: SimState) => Access);
  /** An extra 403 gate after the role check (target-namespace rules). Returns true to refuse (empty 403). */
  forbidden?: (ctx: RequestContext, sim: SimCore) => boolean;
  /** Accepted request media types; checked (415) when set. */
  accepts?: string[];
  /** Body limit in bytes (413); `stream` leaves the body unread for the handler. */
  body?: number | 'stream';
  /** Media type of a successful body, for Accept negotiation (406). */
  produces?: string;
  /** Existence check for the 404 step (empty 404 when false). */
  exists?: (ctx: RequestContext, sim: SimCore) => boolean;
  /** Latency operation name. */
  op?: string;
  /**
   * Entity tag of a GET (FACTS-system §6.8): `body-md5` = MD5 hex of the exact JSON body (`/system/info`), or a function
   * (the stored entry's digest for config GETs; undefined = no tag). A matching `If-None-Match` answers an empty 304.
   */
  etag?: 'body-md5' | ((ctx: RequestContext, sim: SimCore) => string | undefined);
  /** Returns the reply, or undefined when it wrote the response itself (streaming). */
  handler: (ctx: RequestContext, sim: SimCore) => Promise<Reply | undefined> | Reply | undefined;
}

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'TRACE', 'CONNECT', 'PATCH']);
export const API_PREFIX = '/api/v1';
const MAX_URI = 2000;

interface Resource {
  segments: string[];
  routes: Map<string, Route>;
}

export class Router {
  private readonly resources: Resource[] = [];

  constructor(private readonly sim: SimCore) {}

  /** Registers routes; static segments should come before parameters at the same depth (first match wins). */
  add(...routes: Route[]): void {
    for (const r of routes) {
      const key = r.path;
      let res = this.resources.find((x) => x.segments.join('/') === key.split('/').filter(Boolean).join('/'));
      if (res === undefined) {
        res = { segments: key.split('/').filter(Boolean), routes: new Map() };
        this.resources.push(res);
      }
      res.routes.set(r.method, r);
    }
  }

  private match(pathname: string): { res: Resource; params: Record<string, string> } | undefined {
    const segs = pathname.split('/').filter((s) => s !== '');
    let raw: string[];
    try {
      raw = segs.map((s) => decodeURIComponent(s));
    } catch {
      return undefined;
    }
    outer: for (const res of this.resources) {
      if (res.segments.length !== raw.length) continue;
      const params: Record<string, string> = {};
      for (let i = 0; i < raw.length; i++) {
        const pat = res.segments[i]!;
        const seg = raw[i]!;
        if (pat.startsWith(':') && pat.endsWith('*')) {
          if (!seg.endsWith('*')) continue outer;
          params[pat.slice(1, -1)] = seg.slice(0, -1);
        } else if (pat.startsWith(':')) {
          if (seg.endsWith('*') && res.segments.length === 2) continue outer;
          params[pat.slice(1)] = seg;
        } else if (pat !== seg) continue outer;
      }
      return { res, params };
    }
    return undefined;
  }

  /** Handles one request; never throws (errors become responses). */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let status = 500;
    const started = process.hrtime.bigint();
    try {
      status = await this.dispatch(req, res);
    } catch (err) {
      status = this.sendError(res, err);
    } finally {
      this.sim.metrics.response(status, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<number> {
    const url = new URL(req.url ?? '/', 'https://sim');
    const method = (req.method ?? 'GET').toUpperCase();
    if (!url.pathname.startsWith(API_PREFIX + '/')) return this.notFound(req, res);
    const m = this.match(url.pathname.slice(API_PREFIX.length));
    if (m === undefined) return this.notFound(req, res);
    const state = this.sim.device.state;
    const route = m.res.routes.get(method);
    const states = route?.states ?? [...new Set([...m.res.routes.values()].flatMap((r) => r.states))];
    if (!states.includes(state)) throw new SimHttpError(412, 'Service not available');
    if (!KNOWN_METHODS.has(method)) throw new SimHttpError(501);
    if ((req.url ?? '').length > MAX_URI) throw new SimHttpError(414);
    if (route === undefined) throw new SimHttpError(405, undefined, { Allow: [...m.res.routes.keys()].join(', ') });

    const ctx: RequestContext = {
      req,
      res,
      method,
      params: m.params,
      query: url.searchParams,
      ip: req.socket.remoteAddress ?? '',
      caller: undefined,
      body: Buffer.alloc(0),
    };
    const access = typeof route.access === 'function' ? route.access(state) : route.access;
    if (access !== 'public') {
      ctx.caller = authenticate(req, ctx.ip, this.sim);
      const c = ctx.caller;
      const nsOk = c.namespace === undefined || this.sim.namespaces.exists(c.namespace);
      if (!access.roles.includes(c.user.role) || !nsOk || (access.root === true && c.namespace !== undefined)) throw new SimHttpError(403);
    }
    if (route.forbidden?.(ctx, this.sim) === true) throw new SimHttpError(403);
    if (route.accepts !== undefined && !route.accepts.includes(mediaType(req.headers['content-type']))) throw new SimHttpError(415);
    if (route.body !== 'stream') {
      const limit = route.body ?? DEFAULT_BODY_LIMIT;
      const declared = Number(req.headers['content-length'] ?? '0');
      if (Number.isFinite(declared) && declared > limit) throw new SimHttpError(413);
      ctx.body = await readBody(req, limit);
    }
    if (route.produces !== undefined && !acceptable(req.headers.accept, route.produces)) throw new SimHttpError(406);
    if (route.exists !== undefined && !route.exists(ctx, this.sim)) throw new SimHttpError(404);
    const tag = typeof route.etag === 'function' ? route.etag(ctx, this.sim) : undefined;
    if (tag !== undefined && etagMatches(req.headers['if-none-match'], tag)) return this.send(res, { status: 304, headers: { ETag: `"${tag}"` } }, false, '');
    if (route.op !== undefined) await this.sim.delay(route.op);
    const reply = await route.handler(ctx, this.sim);
    if (reply === undefined) return res.statusCode;
    if (route.etag === 'body-md5' && reply.status === 200 && reply.json !== undefined) {
      const md5 = createHash('md5').update(JSON.stringify(reply.json)).digest('hex');
      if (etagMatches(req.headers['if-none-match'], md5)) return this.send(res, { status: 304, headers: { ETag: `"${md5}"` } }, false, '');
      reply.headers = { ...reply.headers, ETag: `"${md5}"` };
    } else if (tag !== undefined && reply.status === 200) reply.headers = { ...reply.headers, ETag: `"${tag}"` };
    return this.send(res, reply, method === 'POST' || method === 'PUT', route.produces ?? 'application/json');
  }

  private notFound(req: IncomingMessage, res: ServerResponse): number {
    req.resume();
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('Not found');
    return 404;
  }

  /**
   * `postOrPut`: webmachine sets the negotiated `Content-Type` before a POST/PUT handler runs, so even their bodiless
   * 204s carry it (FACTS-system §6.9), and they answer `Cache-control: no-cache`.
   */
  private send(res: ServerResponse, reply: Reply, postOrPut: boolean, provided: string): number {
    const headers: Record<string, string | number> = { ...reply.headers };
    if (postOrPut) headers['Cache-control'] = 'no-cache';
    if (postOrPut && reply.status === 204) headers['Content-Type'] = provided;
    let body: Buffer | undefined;
    if (reply.json !== undefined) {
      body = Buffer.from(JSON.stringify(reply.json), 'utf8');
      headers['Content-Type'] = reply.contentType ?? 'application/json';
    } else if (reply.text !== undefined) {
      body = Buffer.from(reply.text, 'utf8');
      headers['Content-Type'] = reply.contentType ?? 'text/plain';
    } else if (reply.bytes !== undefined) {
      body = reply.bytes;
      headers['Content-Type'] = reply.contentType ?? 'application/octet-stream';
    }
    if (body !== undefined) headers['Content-Length'] = body.length;
    res.writeHead(reply.status, headers);
    res.end(body);
    return reply.status;
  }

  private sendError(res: ServerResponse, err: unknown): number {
    if (!(err instanceof SimHttpError)) return this.sendException(res, err);
    const e = err;
    if (res.headersSent) {
      res.destroy();
      return e.status;
    }
    const headers: Record<string, string> = { ...e.headers };
    if (e.status === 401) headers['WWW-Authenticate'] = 'Basic realm="NetHSM"';
    const body = e.body === undefined ? undefined : Buffer.from(JSON.stringify(e.body), 'utf8');
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    res.writeHead(e.status, { ...headers, 'Content-Length': String(body?.length ?? 0) });
    res.end(body);
    // Drain an unread request body so the connection stays usable.
    if (!res.req.complete) res.req.resume();
    return e.status;
  }

  /** An unexpected exception in a handler: the firmware's dispatcher answers 503 with the exception text as plain text. */
  private sendException(res: ServerResponse, err: unknown): number {
    this.sim.logger.error({ err }, 'simulator handler failed');
    this.sim.metrics.logged('error');
    if (res.headersSent) {
      res.destroy();
      return 503;
    }
    const body = Buffer.from(err instanceof Error ? `${err.name}: ${err.message}` : String(err), 'utf8');
    res.writeHead(503, { 'Content-Type': 'text/plain', 'Content-Length': String(body.length) });
    res.end(body);
    if (!res.req.complete) res.req.resume();
    return 503;
  }
}

/** Whether an `If-None-Match` header names `tag` (quoted or not, weak or strong) or is `*`. */
function etagMatches(header: string | undefined, tag: string): boolean {
  if (header === undefined) return false;
  return header.split(',').some((t) => {
    const v = t.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
    return v === '*' || v === tag;
  });
}
