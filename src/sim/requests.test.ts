import { describe, expect, it } from 'vitest';
import { SimHttpError } from './http-error.js';
import { decodeBody } from './json-decode.js';
import { logReq, networkFromBody, passphraseChangeReq, provisionReq, randomReq, restoreReq, unattendedReq, userReq } from './requests.js';

/** The 400 message a body gets from `decode`, or 'ok'. */
function answer(run: () => unknown): string {
  try {
    run();
    return 'ok';
  } catch (e) {
    if (e instanceof SimHttpError && e.status === 400) return e.body?.message ?? '';
    throw e;
  }
}
const body = (s: string): Buffer => Buffer.from(s, 'utf8');

describe('request decoding with the firmware ppx rules and texts', () => {
  it('accepts unquoted keys, comments and duplicate keys (the last wins)', () => {
    expect(decodeBody(body('{realName : "x", role: "Operator", passphrase: "p" /* c */}'), userReq)).toEqual({ realName: 'x', role: 'Operator', passphrase: 'p' });
    expect(decodeBody(body('{"passphrase":"a","newPassphrase":"b"}'.replace('passphrase', 'currentPassphrase')), passphraseChangeReq)).toEqual({ currentPassphrase: 'a', newPassphrase: 'b' });
    expect(decodeBody(body('{"length":1,"length":5}'), randomReq)).toEqual({ length: 5 });
  });

  it('names the type for a non-object and for the first unknown key', () => {
    expect(answer(() => decodeBody(body('[]'), provisionReq))).toBe('Invalid data for JSON schema: Json.provision_req.');
    expect(answer(() => decodeBody(body('{"x":1,"unlockPassphrase":5}'), provisionReq))).toBe('Invalid data for JSON schema: Json.provision_req.');
    expect(answer(() => decodeBody(body('{"unlockPassphrase":5,"x":1}'), provisionReq))).toBe('Invalid data for JSON schema: Json.provision_req.');
  });

  it('names the last declared bad or missing field when several are wrong', () => {
    expect(answer(() => decodeBody(body('{}'), provisionReq))).toBe('Invalid data for JSON schema: Json.provision_req.systemTime.');
    expect(answer(() => decodeBody(body('{"systemTime":"t"}'), provisionReq))).toBe('Invalid data for JSON schema: Json.provision_req.adminPassphrase.');
    expect(answer(() => decodeBody(body('{"unlockPassphrase":1,"adminPassphrase":null,"systemTime":"t"}'), provisionReq))).toBe(
      'Invalid data for JSON schema: Json.provision_req.adminPassphrase.',
    );
  });

  it('refuses wrong JSON types: null for a string, 2048.0 or "5" for an int, huge integers', () => {
    expect(answer(() => decodeBody(body('{"length":2048.0}'), randomReq))).toBe('Invalid data for JSON schema: Json.random_req.length.');
    expect(answer(() => decodeBody(body('{"length":"5"}'), randomReq))).toBe('Invalid data for JSON schema: Json.random_req.length.');
    expect(answer(() => decodeBody(body('{"length":99999999999999999999}'), randomReq))).toBe('Invalid data for JSON schema: Json.random_req.length.');
    expect(answer(() => decodeBody(body('{"length":NaN}'), randomReq))).toBe('Invalid data for JSON schema: Json.random_req.length.');
    expect(answer(() => decodeBody(body('{"length":0}'), randomReq))).toBe('Invalid data for JSON schema: length must be between 1 and 1024.');
  });

  it('answers the custom decoders in their own words (role, unattended boot)', () => {
    expect(answer(() => decodeBody(body('{"realName":"x","role":"Root","passphrase":"p"}'), userReq))).toBe('Invalid data for JSON schema: Json.role.');
    expect(answer(() => decodeBody(body('{"realName":"x","role":1,"passphrase":"p"}'), userReq))).toBe('Invalid data for JSON schema: expected string as role.');
    expect(answer(() => decodeBody(body('{"status":"maybe"}'), unattendedReq))).toBe("Invalid data for JSON schema: Invalid status data, expected 'on' or 'off'..");
    expect(answer(() => decodeBody(body('{"status":"on","status":"on"}'), unattendedReq))).toBe(
      "Invalid data for JSON schema: Invalid status data, expected a dictionary with one entry 'status'..",
    );
    expect(decodeBody(body('{status: "off"}'), unattendedReq)).toBe(false);
  });

  it('maps malformed JSON to "Invalid JSON: <yojson>."', () => {
    expect(answer(() => decodeBody(body(''), provisionReq))).toBe('Invalid JSON: Blank input data.');
    expect(answer(() => decodeBody(body("{'a':1}"), provisionReq))).toBe("Invalid JSON: Line 1, bytes 1-7:\nExpected string or identifier but found ''a':1}'.");
  });

  it('restore arguments: both optional, null allowed', () => {
    expect(decodeBody(body('{}'), restoreReq)).toEqual({ backupPassphrase: undefined, systemTime: undefined });
    expect(decodeBody(body('{"backupPassphrase":null,"systemTime":"x"}'), restoreReq)).toEqual({ backupPassphrase: undefined, systemTime: 'x' });
  });
});

describe('PUT /config/network and /config/logging bodies', () => {
  it('parses the API form: gateway 0.0.0.0 is none, ipv6 optional', () => {
    expect(networkFromBody(body('{"ipAddress":"10.0.0.5","netmask":"255.0.0.0","gateway":"0.0.0.0"}'))).toEqual({ ipv4: { address: [10, 0, 0, 5], bits: 8, gateway: undefined } });
    expect(networkFromBody(body('{"ipAddress":"10.0.0.5","netmask":"255.0.0.0","gateway":"10.0.0.1","ipv6":{"cidr":"FC00:0:0::5/64","gateway":null}}'))).toEqual({
      ipv4: { address: [10, 0, 0, 5], bits: 8, gateway: [10, 0, 0, 1] },
      ipv6: { cidr: 'fc00::5/64', gateway: undefined },
    });
  });

  it('answers Ipaddr texts: prefixed for a bad address, raw for a non-contiguous netmask', () => {
    expect(answer(() => networkFromBody(body('{"ipAddress":"1.2.3.256","netmask":"255.0.0.0","gateway":"0.0.0.0"}')))).toBe(
      'Invalid data for JSON schema: Ipaddr: fourth octet out of bounds.',
    );
    expect(answer(() => networkFromBody(body('{"ipAddress":"1.2.3.4","netmask":"255.0.255.0","gateway":"0.0.0.0"}')))).toBe('Ipaddr: invalid netmask');
    expect(answer(() => networkFromBody(body('{"ipAddress":"1.2.3.4","netmask":"255.0.0.0"}')))).toBe('Invalid data for JSON schema: Json.network_api.gateway.');
    expect(answer(() => networkFromBody(body('{"ipAddress":5,"netmask":"255.0.0.0","gateway":"0.0.0.0"}')))).toBe('Invalid data for JSON schema: expected string for IP.');
  });

  it('logging: app level, any integer port and IPv6 accepted; quiet and unknown levels refused', () => {
    expect(decodeBody(body('{"ipAddress":"::1","port":99999,"logLevel":"app"}'), logReq)).toEqual({ ipAddress: '::1', port: 99999, logLevel: 'app' });
    expect(decodeBody(body('{"ipAddress":"0.0.0.0","port":514,"logLevel":"info"}'), logReq)).toEqual({ ipAddress: undefined, port: 514, logLevel: 'info' });
    expect(answer(() => decodeBody(body('{"ipAddress":"1.2.3.4","port":514,"logLevel":"quiet"}'), logReq))).toBe('Invalid data for JSON schema: parse error for log level.');
    expect(answer(() => decodeBody(body('{"ipAddress":"1.2.3.4","port":514,"logLevel":"loud"}'), logReq))).toBe('Invalid data for JSON schema: "loud": unknown log level.');
    expect(answer(() => decodeBody(body('{"port":514,"logLevel":"info"}'), logReq))).toBe('Invalid data for JSON schema: Json.log.ipAddress.');
    expect(answer(() => decodeBody(body('{"ipAddress":"1.2.3.4","port":5.5,"logLevel":"info"}'), logReq))).toBe('Invalid data for JSON schema: Json.log.port.');
  });
});
