import { describe, expect, it } from 'vitest';
import { isValidId, isValidUserId, namespaceOfUser, splitUserId } from './ids.js';

describe('NetHSM id rules', () => {
  it('accepts ids of letters, digits and _.- not starting with punctuation', () => {
    for (const ok of ['a', 'myKey1', 'A-b_c.d', '0', 'x'.repeat(128)]) expect(isValidId(ok)).toBe(true);
    for (const bad of ['', '.version', '-a', '_a', 'a b', 'ä', 'a/b', 'a~b', 'x'.repeat(129)]) expect(isValidId(bad)).toBe(false);
  });

  it('splits user ids at the first tilde and validates each part', () => {
    expect(splitUserId('admin')).toEqual({ namespace: undefined, id: 'admin' });
    expect(splitUserId('ns1~op')).toEqual({ namespace: 'ns1', id: 'op' });
    expect(splitUserId(`${'n'.repeat(128)}~${'u'.repeat(128)}`)).toBeDefined();
    for (const bad of ['~user', 'user~', 'a~b~c', '', 'ns~.x']) expect(isValidUserId(bad)).toBe(false);
    expect(namespaceOfUser('alpha~operator')).toBe('alpha');
    expect(namespaceOfUser('admin')).toBeUndefined();
  });
});
