export interface Rate {
  t: number;
  a: number;
  b: number;
  dt: number;
}
export function rates(timeline: readonly (readonly [number, number, number])[], idle: { a: number; b: number }): Rate[];
export function overlap(rs: readonly Rate[], passS: number, min?: number): { bothS: number; busyAS: number; busyBS: number; share: number };
