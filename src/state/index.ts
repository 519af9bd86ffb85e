export { StateStore, STATE_DB_FILE, type StateStoreOptions } from './store.js';
export { applyMigrations, loadMigrations, defaultMigrationsDir, schemaVersion, type Migration } from './migrate.js';
export { RolesRepo, type NamespaceRow } from './roles-repo.js';
export { EpochsRepo, type EpochRow } from './epochs-repo.js';
export { PositionsRepo, type ReplicaPosition, type SyncOk, type SyncFailed } from './positions-repo.js';
export { MembersRepo, type MemberHealth, type MemberStatus } from './members-repo.js';
export { AuditRepo, AUDIT_ACTIONS, type AuditAction, type AuditEntry, type AuditInput, type AuditQuery } from './audit-repo.js';
