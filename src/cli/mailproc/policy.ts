// `mailproc policy list | show ADDRESS | clear ADDRESS | set ADDRESS [OPTION…]`:
// a mailbox owner's policies for their own addresses. For ordinary users: it
// talks over the caller's own socket, <run>/users/<uid>/control.sock (or
// --socket PATH, $MAILPROC_SOCKET), where the daemon knows who is asking from
// the socket itself, so root is told to run it as the owner. This subcommand
// parses its own options (set has many), which is why the dispatcher asks
// isPolicyCommand first. Exit 0 done, 1 the daemon refused, 64 usage, 69 the
// daemon is not running or gives the caller no socket, 77 another user's
// socket.
import { parseArgs } from 'node:util';
import { loadDiscoveredConfig } from '../../config/index.js';
import { size as sizeUnit } from '../../config/units.js';
import { userSocketPath } from '../../control/user-sockets.js';
import type { PolicyChange, PolicyView } from '../../control/user-protocol.js';
import { askUserSocket } from './control-client.js';
import { formatTable } from './format.js';
import { describeArgError, USAGE } from './usage.js';

export const POLICY_OPTIONS = {
  config: { type: 'string', short: 'c' }, socket: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
  allow: { type: 'string', multiple: true }, deny: { type: 'string', multiple: true },
  'no-allow': { type: 'boolean' }, 'no-deny': { type: 'boolean' },
  'only-allowed': { type: 'string' }, greylist: { type: 'string' }, 'max-size': { type: 'string' },
} as const;

function onOff(option: string, text: string, extra: readonly string[] = []): boolean | null | string {
  const t = text.toLowerCase();
  if (['on', 'yes', 'true'].includes(t)) return true;
  if (['off', 'no', 'false'].includes(t)) return false;
  if (extra.includes(t)) return null;
  return `--${option}: expected on or off${extra.length > 0 ? ` or ${extra.join(' or ')}` : ''}, got "${text}"`;
}

/** The change `policy set` asks for, or a usage problem. */
function policyChange(v: { [K in keyof typeof POLICY_OPTIONS]?: string | boolean | string[] | undefined }): PolicyChange | string {
  const change: { -readonly [K in keyof PolicyChange]: PolicyChange[K] } = {};
  const allow = v.allow as string[] | undefined;
  const deny = v.deny as string[] | undefined;
  if (allow !== undefined || v['no-allow'] === true) change.allow = allow ?? [];
  if (deny !== undefined || v['no-deny'] === true) change.deny = deny ?? [];
  if (typeof v['only-allowed'] === 'string') {
    const b = onOff('only-allowed', v['only-allowed']);
    if (typeof b === 'string') return b;
    change.onlyAllowed = b === true;
  }
  if (typeof v.greylist === 'string') {
    const b = onOff('greylist', v.greylist, ['default']);
    if (typeof b === 'string') return b;
    change.greylist = b;
  }
  const max = v['max-size'];
  if (typeof max === 'string') {
    if (['none', 'off', '0'].includes(max.toLowerCase())) change.maxSize = null;
    else {
      const n = sizeUnit.safeParse(max);
      if (!n.success || n.data < 1) return `--max-size: expected a size like 10M, 512k or a number of bytes, or none, got "${max}"`;
      change.maxSize = n.data;
    }
  }
  return Object.keys(change).length > 0 ? change : 'policy set: nothing to set (give --allow, --deny, --only-allowed, --greylist or --max-size)';
}

function humanSize(n: number): string {
  for (const [unit, m] of [['G', 1024 ** 3], ['M', 1024 ** 2], ['k', 1024]] as const) if (n >= m && n % m === 0) return `${n} bytes (${n / m}${unit})`;
  return `${n} bytes`;
}

function formatPolicy(address: string, p: PolicyView | null): string {
  if (p === null) return `${address}: no policy\n`;
  const list = (l: readonly string[]): string => (l.length > 0 ? l.join(' ') : '(none)');
  return [
    address,
    `  allow         ${list(p.allow)}`,
    `  deny          ${list(p.deny)}`,
    `  only allowed  ${p.onlyAllowed ? 'on (other senders are refused; the null sender passes unless denied)' : 'off'}`,
    `  greylist      ${p.greylist === undefined ? "default (the server's setting)" : p.greylist ? 'on' : 'off'}`,
    `  max size      ${p.maxSize === undefined ? 'none' : humanSize(p.maxSize)}`,
    `  updated       ${p.updatedAt}`,
    '',
  ].join('\n');
}

/** argv: the whole command line after `mailproc` (options may come before "policy"). */
export async function runPolicy(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: POLICY_OPTIONS, allowPositionals: true });
  } catch (err) {
    process.stderr.write(`mailproc policy: ${describeArgError(err as Error)}\n${USAGE}`);
    return 64;
  }
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const [, verb, address, ...extra] = parsed.positionals;
  const usage = (why: string): number => {
    process.stderr.write(`mailproc: ${why}\n${USAGE}`);
    return 64;
  };
  const setOptions = (['allow', 'deny', 'no-allow', 'no-deny', 'only-allowed', 'greylist', 'max-size'] as const).filter((k) => v[k] !== undefined);
  if (extra.length > 0) return usage(`policy ${verb ?? ''}: unexpected ${extra.join(' ')}`);
  if (verb !== 'set' && setOptions.length > 0) return usage(`--${setOptions[0]} goes with policy set`);
  let request: Record<string, unknown>;
  if (verb === 'list' && address === undefined) request = { cmd: 'policy.list' };
  else if ((verb === 'show' || verb === 'clear') && address !== undefined) request = { cmd: `policy.${verb}`, address };
  else if (verb === 'set' && address !== undefined) {
    const change = policyChange(v);
    if (typeof change === 'string') return usage(change);
    request = { cmd: 'policy.set', address, policy: change };
  } else return usage('policy: expected list, show ADDRESS, clear ADDRESS or set ADDRESS …');

  let path = v.socket ?? process.env.MAILPROC_SOCKET;
  if (path === undefined || path === '') {
    const uid = process.getuid?.() ?? -1;
    if (uid === 0) return usage('policies belong to mailbox owners: run this as the owner (e.g. runuser -u USER -- mailproc policy …), or give --socket PATH');
    let run: string;
    try {
      run = loadDiscoveredConfig(v.config).paths.run;
    } catch (err) {
      process.stderr.write(`mailproc: ${(err as Error).message}\nmailproc: give the socket with --socket PATH or $MAILPROC_SOCKET (it is <run>/users/${uid}/control.sock)\n`);
      return 69;
    }
    path = userSocketPath(run, uid);
  }
  const r = await askUserSocket(path, request);
  if (typeof r === 'number') return r;
  if (r.applied === false) process.stderr.write("mailproc: note: userpolicy is not in the server's policy chain: policies are stored but not applied\n");
  if (v.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  else if (request.cmd === 'policy.clear') process.stdout.write(`${String(r.address)}: ${r.removed === true ? 'policy removed' : 'had no policy'}\n`);
  else if (request.cmd === 'policy.list') {
    const policies = r.policies as { address: string; policy: PolicyView }[];
    const addresses = r.addresses as string[];
    const out = policies.length === 0 ? ['no policies'] : [formatTable([
      ['ADDRESS', 'ALLOW', 'DENY', 'ONLY-ALLOWED', 'GREYLIST', 'MAX-SIZE'],
      ...policies.map(({ address: a, policy: p }) => [
        a, p.allow.length, p.deny.length, p.onlyAllowed ? 'on' : 'off',
        p.greylist === undefined ? 'default' : p.greylist ? 'on' : 'off', p.maxSize ?? 'none',
      ]),
    ])];
    out.push('', `your addresses: ${addresses.length > 0 ? addresses.join(' ') : '(none named in the uid table)'}`);
    process.stdout.write(`${out.join('\n')}\n`);
  } else process.stdout.write(formatPolicy(String(r.address), r.policy as PolicyView | null));
  return 0;
}
