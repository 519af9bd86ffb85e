import { describe, expect, it } from 'vitest';
import { StreamApplyTicket } from './apply-ticket.js';

describe('a stream hold\'s write ticket', () => {
  it('is unknown until a change is recorded', () => {
    expect(new StreamApplyTicket('ns', 'a').ticket.replay).toEqual({ kind: 'unknown' });
  });

  it('says none for duplicates only, and the earliest change applied or present otherwise', () => {
    const t = new StreamApplyTicket('ns', 'a');
    t.recorded(4, 'duplicate');
    expect(t.ticket.replay).toEqual({ kind: 'none' });
    t.recorded(7, 'applied');
    expect(t.ticket.replay).toEqual({ kind: 'stream', namespace: 'ns', source: 'a', seq: 7 });
    t.recorded(8, 'present');
    t.recorded(9, 'duplicate');
    expect(t.ticket.replay).toEqual({ kind: 'stream', namespace: 'ns', source: 'a', seq: 7 });
    t.recorded(6, 'present');
    expect(t.ticket.replay).toEqual({ kind: 'stream', namespace: 'ns', source: 'a', seq: 6 });
  });

  it('stays unknown once a change under the hold failed, whatever is recorded after', () => {
    const t = new StreamApplyTicket('ns', 'a');
    t.recorded(3, 'applied');
    t.failed();
    expect(t.ticket.replay).toEqual({ kind: 'unknown' });
    t.recorded(4, 'applied');
    t.recorded(5, 'duplicate');
    expect(t.ticket.replay).toEqual({ kind: 'unknown' });
  });
});
