export { ROLES, type Role, type RoleState } from './role.js';
export { INITIAL_EPOCH, compareEpochs, isEpoch, nextEpoch } from './epoch.js';
export {
  assertPrimary,
  completeResync,
  demote,
  initialRole,
  observeEpoch,
  promote,
  resumeLeadership,
  stepDown,
  type EpochClaim,
  type Observation,
  type PromoteInput,
  type RoleAction,
  type RoleChange,
} from './role-machine.js';
export { applyRoleChange, decidePromote, ensureNamespace, type PromoteRequest } from './apply.js';
