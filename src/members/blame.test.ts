import { describe, expect, it } from 'vitest';
import {
  FenceTokenStaleError,
  GatewayDrainTimeoutError,
  NetHsmCredentialRefusedError,
  NetHsmHttpError,
  NetHsmNotOperationalError,
  NetHsmUnreachableError,
  PeerMessageInvalidError,
  PeerRefusedError,
  PeerUnreachableError,
  StreamApplyFailedError,
  SyncRaceError,
} from '../errors.js';
import { blameOf, reportBlame } from './blame.js';

describe('blame', () => {
  it('counts only failures of the peer call against the peer', () => {
    expect(blameOf(new PeerUnreachableError('down'))).toBe('peer');
    expect(blameOf(new PeerMessageInvalidError('garbled'))).toBe('peer');
    // A refusal is an answer: the peer is reachable.
    expect(blameOf(new PeerRefusedError(503, { code: 'NHR_ERR_NETHSM_UNREACHABLE' }))).toBe('none');
  });

  it("counts this site's NetHSM failures against this site's NetHSM", () => {
    expect(blameOf(new NetHsmNotOperationalError('Locked'))).toBe('device');
    expect(blameOf(new NetHsmUnreachableError('down'))).toBe('device');
    expect(blameOf(new NetHsmHttpError(503, undefined, {}))).toBe('device');
    expect(blameOf(new NetHsmCredentialRefusedError({ setting: 'nethsm.credentials.operator', name: 'root Operator' }, {}))).toBe('device');
  });

  it('counts local conditions against nobody', () => {
    for (const err of [new SyncRaceError('race'), new GatewayDrainTimeoutError('drain'), new FenceTokenStaleError('stale'), new StreamApplyFailedError('no'), new Error('x')]) {
      expect(blameOf(err)).toBe('none');
    }
  });

  it('reports to the member blamed', () => {
    const reported: string[] = [];
    const monitor = { reportFailure: (name: string) => void reported.push(name) };
    const members = { peer: 'a', device: 'nethsm' };
    reportBlame(monitor, new SyncRaceError('race'), members);
    reportBlame(monitor, new NetHsmNotOperationalError('Locked'), members);
    reportBlame(monitor, new PeerUnreachableError('down'), members);
    expect(reported).toEqual(['nethsm', 'a']);
  });
});
