import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { quarantineFileNameProblem, quarantineNamespaceOf, WorkDir } from './workdir.js';

describe('quarantine file names', () => {
  it('accepts the names the daemon writes and nothing that could leave the folder', () => {
    const work = new WorkDir('/state');
    for (const written of [path.basename(work.quarantinePath('pay.ments-1', 3)), path.basename(work.foreignQuarantinePath('alpha', 2, 9))]) {
      expect(quarantineFileNameProblem(written), written).toBeUndefined();
    }
    for (const bad of ['', '..', '.', '../x.nsbackup', 'a/b.nsbackup', 'a\\b.nsbackup', 'x.nsbackup\0', '.x.nsbackup', '-x.nsbackup', 'x.nsbackup.tmp', 'x y.nsbackup', `${'a'.repeat(247)}.nsbackup`]) {
      expect(quarantineFileNameProblem(bad), JSON.stringify(bad)).toBeDefined();
    }
  });

  it('tells the namespace from the name by the configured namespaces, longest first', () => {
    const ns = ['alpha', 'alpha-epoch', 'beta'];
    expect(quarantineNamespaceOf('alpha-epoch3-2026.nsbackup', ns)).toBe('alpha');
    expect(quarantineNamespaceOf('alpha-epoch-epoch3-2026.nsbackup', ns)).toBe('alpha-epoch');
    expect(quarantineNamespaceOf('beta-foreign-epoch1-seq2-2026.nsbackup', ns)).toBe('beta');
    expect(quarantineNamespaceOf('gamma-epoch1-2026.nsbackup', ns)).toBeUndefined();
  });

  it('lists regular quarantine files only, sorted; none when the folder is missing', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'nhr-workdir-'));
    try {
      const work = new WorkDir(dir);
      expect(work.quarantineFiles()).toEqual([]);
      await work.prepare();
      await writeFile(path.join(work.quarantine, 'b-epoch1-x.nsbackup'), '');
      await writeFile(path.join(work.quarantine, 'a-epoch1-x.nsbackup'), '');
      await writeFile(path.join(work.quarantine, 'a-epoch1-x.nsbackup.tmp-1'), '');
      await mkdir(path.join(work.quarantine, 'c-epoch1-dir.nsbackup'));
      await symlink('/etc/hostname', path.join(work.quarantine, 'd-epoch1-link.nsbackup'));
      expect(work.quarantineFiles()).toEqual(['a-epoch1-x.nsbackup', 'b-epoch1-x.nsbackup']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
