import { describe, expect, it } from 'vitest';
import type { MutationStart } from '../gateway/observer.js';
import { planChange } from './capture.js';
import { KeyLocks } from './key-locks.js';

const m = (operation: string, over: Partial<MutationStart> = {}): MutationStart => {
  const [method, template] = operation.split(' ');
  return { namespace: 'ns', method: method!, path: template!.replace('{id}', 'k1').replace('{tag}', 't1'), operation, keyId: 'k1', user: 'ns~admin', ...over };
};
const json = (v: unknown) => ({ contentType: 'application/json', bytes: Buffer.from(JSON.stringify(v)), json: v });

describe('planChange', () => {
  it('maps each key mutation to its change', () => {
    const body = json({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], private: { data: 'AA==' } });
    expect(planChange(m('PUT /keys/{id}', { body }))).toMatchObject({ kind: 'key-imported', keyId: 'k1', sealBody: body.bytes });
    expect(planChange(m('POST /keys', { keyId: undefined, body }))).toMatchObject({ kind: 'key-imported', detail: {} });
    expect(planChange(m('DELETE /keys/{id}'))).toEqual({ kind: 'key-deleted', keyId: 'k1', detail: {} });
    expect(planChange(m('POST /keys/{id}/move', { body: json({ newId: 'k2' }) }))).toEqual({ kind: 'key-moved', keyId: 'k1', detail: { newId: 'k2' }, alsoLocks: ['k2'] });
    expect(planChange(m('PUT /keys/{id}/cert', { body: { contentType: 'application/octet-stream', bytes: Buffer.from('abc') } }))).toEqual({
      kind: 'cert-set',
      keyId: 'k1',
      detail: { contentType: 'application/octet-stream', data: 'YWJj' },
    });
    expect(planChange(m('DELETE /keys/{id}/cert'))).toMatchObject({ kind: 'cert-removed' });
    expect(planChange(m('PUT /keys/{id}/restrictions/tags/{tag}'))).toMatchObject({ kind: 'tag-added', detail: { tag: 't1' } });
    expect(planChange(m('DELETE /keys/{id}/restrictions/tags/{tag}'))).toMatchObject({ kind: 'tag-removed', detail: { tag: 't1' } });
    expect(planChange(m('PUT /keys/{id}/label', { body: json({ label: 'x' }) }))).toMatchObject({ kind: 'label-set', detail: { label: 'x' } });
    expect(planChange(m('DELETE /keys/{id}/label'))).toMatchObject({ kind: 'label-removed' });
  });

  it('turns what the API cannot carry into a catch-up', () => {
    expect(planChange(m('POST /keys/generate', { keyId: undefined }))).toMatchObject({ kind: 'catchup', detail: { reason: /generated inside/ } });
    expect(planChange(m('PUT /keys/{id}', { body: { contentType: 'multipart/form-data; boundary=x', bytes: Buffer.from('--x') } }))).toMatchObject({ kind: 'catchup' });
    expect(planChange(m('POST /users', { keyId: undefined, path: '/users' }))).toMatchObject({ kind: 'catchup', detail: { reason: /user change/ } });
    expect(planChange(m('POST /keys/{id}/move', { body: json({ newId: '../x' }) }))).toMatchObject({ kind: 'catchup' });
    expect(planChange(m('PUT /keys/{id}/label', { body: undefined }))).toMatchObject({ kind: 'catchup' });
    expect(planChange(m('PATCH /keys/{id}/frobnicate'))).toMatchObject({ kind: 'catchup', detail: { reason: /does not carry/ } });
  });
});

describe('KeyLocks', () => {
  it('serialises holders of one key and lets other keys through', async () => {
    const locks = new KeyLocks();
    const order: string[] = [];
    const r1 = await locks.acquire(['ns/a']);
    const waiting = locks.acquire(['ns/a', 'ns/b']).then((r) => (order.push('second'), r));
    const other = await locks.acquire(['ns/c']);
    order.push('other');
    r1();
    r1();
    (await waiting)();
    other();
    expect(order).toEqual(['other', 'second']);
    expect(locks.size).toBe(0);
  });
});
