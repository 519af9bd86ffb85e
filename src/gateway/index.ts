/** The gateway's public surface for the daemon (see docs/gateway.md). */
export { GatewayServer, type GatewayOptions, type GatewayRequestEvent } from './server.js';
export type { NamespaceRoles, NamespaceRole, GatewayOutcome } from './policy.js';
export type { MutationObserver, MutationStart, MutationOutcome, MutationBody } from './observer.js';
export { classify, type Classification, type RequestKind } from './classify.js';
