import { readdirSync, readlinkSync } from 'node:fs';

/** This process's open files in `dir` (Linux: /proc/self/fd), named or unlinked (a deleted file reads `<path> (deleted)`). */
export function openFilesUnder(dir: string): string[] {
  const links = readdirSync('/proc/self/fd').map((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      return '';
    }
  });
  return links.filter((l) => l.startsWith(`${dir}/`));
}
