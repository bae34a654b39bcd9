// Text formatting shared by the subcommands that print what the daemon said:
// ages ("42s", "5m", "3h"), delays ("35ms", "2.50s"), sizes ("12.3 KiB"), local times
// ("2026-12-05 09:47:12 +0100") and space-aligned tables. Pure, but for the
// local time zone, which is the point of local times.

/** A duration as a short age: seconds below 2 minutes, minutes below 2 hours, then hours. */
export const formatAge = (ms: number): string => {
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
};

/** A delay in seconds: milliseconds below a second, seconds with two figures below 2 minutes, then as an age. */
export const formatSeconds = (s: number): string =>
  s < 1 ? `${Math.round(s * 1000)}ms` : s < 120 ? `${s.toFixed(s < 10 ? 2 : 1)}s` : formatAge(s * 1000);

/** Rows as columns padded to the widest cell, two spaces apart, no trailing blanks. */
export function formatTable(rows: (string | number)[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => String(r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((c, i) => String(c).padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}

/** 512 → "512 B", 12605 → "12.3 KiB", 10485760 → "10.0 MiB". */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  let n = bytes / 1024;
  for (const unit of ['KiB', 'MiB', 'GiB']) {
    if (n < 1024 || unit === 'GiB') return `${n.toFixed(1)} ${unit}`;
    n /= 1024;
  }
  return `${bytes} B`;
}

const pad = (n: number, w = 2): string => String(n).padStart(w, '0');

/** Epoch milliseconds as local time with its offset, like Postfix's logs and date(1): "2026-12-05 09:47:12 +0100". */
export function formatLocalTime(ms: number): string {
  const d = new Date(ms);
  const off = -d.getTimezoneOffset();
  const zone = `${off < 0 ? '-' : '+'}${pad(Math.floor(Math.abs(off) / 60))}${pad(Math.abs(off) % 60)}`;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zone}`;
}
