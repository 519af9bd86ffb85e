/**
 * The NetHSM's key mechanisms (FACTS §2.2) in the firmware's enum declaration order: the order `GET /keys/{id}` and the
 * stored key JSON list them in. Shared by the simulator and by everything that compares keys across sites.
 */

/** `KeyMechanism`, in enum declaration order: `publicKeyView` and the key JSON list mechanisms in this order. */
export const KEY_MECHANISMS = [
  'RSA_Decryption_RAW',
  'RSA_Decryption_PKCS1',
  'RSA_Decryption_OAEP_MD5',
  'RSA_Decryption_OAEP_SHA1',
  'RSA_Decryption_OAEP_SHA224',
  'RSA_Decryption_OAEP_SHA256',
  'RSA_Decryption_OAEP_SHA384',
  'RSA_Decryption_OAEP_SHA512',
  'RSA_Signature_PKCS1',
  'RSA_Signature_PSS_MD5',
  'RSA_Signature_PSS_SHA1',
  'RSA_Signature_PSS_SHA224',
  'RSA_Signature_PSS_SHA256',
  'RSA_Signature_PSS_SHA384',
  'RSA_Signature_PSS_SHA512',
  'EdDSA_Signature',
  'ECDSA_Signature',
  'BIP340_Signature',
  'AES_Encryption_CBC',
  'AES_Decryption_CBC',
] as const;
export type KeyMechanism = (typeof KEY_MECHANISMS)[number];
