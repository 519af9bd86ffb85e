/**
 * The NetHSM's identifier rules (FACTS §3.1), shared by the client, the simulator, the codec and config validation.
 * Pure functions; none throws.
 */

/** Keys, users (each part), namespaces, tags: `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`, 1..128 characters. */
export const ID_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
export const ID_MAX_LENGTH = 128;

export function isValidId(id: string): boolean {
  return id.length >= 1 && id.length <= ID_MAX_LENGTH && ID_PATTERN.test(id);
}

export interface SplitUserId {
  /** Namespace, or undefined for a root user. */
  namespace: string | undefined;
  id: string;
}

/**
 * Splits `ns~id` at the first `~` (as the firmware does) and validates each part on its own.
 * Returns undefined when the user id is not valid (`~user`, `user~`, bad characters, a part over 128).
 */
export function splitUserId(userId: string): SplitUserId | undefined {
  const tilde = userId.indexOf('~');
  if (tilde < 0) return isValidId(userId) ? { namespace: undefined, id: userId } : undefined;
  const namespace = userId.slice(0, tilde);
  const id = userId.slice(tilde + 1);
  if (!isValidId(namespace) || !isValidId(id)) return undefined;
  return { namespace, id };
}

export function isValidUserId(userId: string): boolean {
  return splitUserId(userId) !== undefined;
}

/** The namespace a Basic-auth user name belongs to, or undefined for root users and unparsable names. */
export function namespaceOfUser(userId: string): string | undefined {
  return splitUserId(userId)?.namespace;
}
