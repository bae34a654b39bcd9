// Text formatting shared by the subcommands that print what the daemon said:
// ages ("42s", "5m", "3h") and space-aligned tables. Pure.

/** A duration as a short age: seconds below 2 minutes, minutes below 2 hours, then hours. */
export const formatAge = (ms: number): string => {
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
};

/** Rows as columns padded to the widest cell, two spaces apart, no trailing blanks. */
export function formatTable(rows: (string | number)[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => String(r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => String(c).padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}
