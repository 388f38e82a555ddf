/** `x` to `digits` decimal places, as a number (for JSON reports and logs). */
export function round(x: number, digits: number): number {
  return Number(x.toFixed(digits));
}
