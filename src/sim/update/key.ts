/**
 * The RSA public key update images are verified against (FACTS-system §1.4 "Update key").
 *
 * Default: the key the firmware's testing image (`nitrokey/nethsm:testing`) trusts, so the simulator accepts the same
 * images as that container, e.g. the firmware test suite's `update.bin`. Origin: Nitrokey/nethsm
 * `src/keyfender/test/public.pem` at commit 4e192fb (EUPL-1.2), via `../shared/nethsm/fixtures/update/test-update-key.pem`.
 * Its private key is public too, so this key proves nothing about an image's origin: it is for tests only. A real
 * appliance trusts Nitrokey's release key instead; give the simulator another key with `updateKeyPem` / `--update-key`.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';

export const TEST_UPDATE_KEY_PEM = `-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAx7ghfro+VEepYmy2V7HP
n5PSRdmGzxewcpmzxTtrZ10BygbEqhPsAr4fWI9pG7iRXzeza7DMjrQptzKsfSy6
dBFmSEZer+hJxuOdhBG/FX6pjwRrZpbOQxyr+aTlE3jm2XP12Cqx0wsYGIoJlWHb
Gb90IAx9zpdYQgHoJZ4x5ims5vo7h3puPEyVycJH5fMBB9h+2Bxc4BxaPKMm15JR
1B7ToB3g16SJY2B1t/aqNmqSBZC4HP1fCuSbBm83OgqRhdk1P6r/vqOVKrxVupDq
Kkdcf/dRBiQalJ9tQbVbs9OOYfQ6n25GvJTvGtqOEuggit32tV16JXCZjnYePAvt
NwIDAQAB
-----END PUBLIC KEY-----
`;

/**
 * Parses an update key. Like the firmware's boot (`s_keyfender` refuses anything else), it must be an RSA public key
 * in PEM (SubjectPublicKeyInfo). Throws Error naming the problem.
 */
export function parseUpdateKey(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch (err) {
    throw new Error(`update key is not a PEM public key: ${(err as Error).message}`, { cause: err });
  }
  if (key.asymmetricKeyType !== 'rsa') throw new Error(`update key must be an RSA public key, got ${String(key.asymmetricKeyType)}`);
  return key;
}
