// The one parser of the per-user control socket's requests (JSON lines, like
// the admin socket's), and the pure rules for changing a user policy:
//   {"cmd":"policy.list"}                          → the caller's policies and addresses
//   {"cmd":"policy.show","address":A}              → A's policy (null when none)
//   {"cmd":"policy.set","address":A,"policy":P}    → change A's policy; P's keys that are present replace
//   {"cmd":"policy.clear","address":A}             → remove A's policy
//   {"cmd":"spam.checker"}                          → the caller's spam checker, started if need be:
//                                                     its socket, for `mailproc learn` (TELL)
//   {"cmd":"rules.list","address":A}                      → A's own rules, with the admin's locked and other rules
//   {"cmd":"rules.add","address":A,"rule":TEXT,"position":N?}  (N from 1; absent = at the end)
//   {"cmd":"rules.remove","address":A,"n":N}
//   {"cmd":"rules.move","address":A,"from":N,"to":M}
//   {"cmd":"rules.clear","address":A}
//   {"cmd":"rules.test","address":A,"sender":S?,"spam":BOOL?,"message":BASE64,"size":BYTES?}
//                                                    → the dry run: what would happen, nothing delivered
//   {"cmd":"rules.log","address":A,"last":N?}        → the newest N decisions (default 20, at most 1000)
// The rules.* requests are served on the admin socket too (root: any address).
// P = { allow?: [GLOB…], deny?: [GLOB…], onlyAllowed?: bool, greylist?: bool|null, maxSize?: bytes|null }
// (null = back to the default: the site's greylisting, no size limit).
// Replies are {"ok":true,…} or {"ok":false,"error":"…"}; the caller is not in
// the protocol: the socket it came in on says who it is (user-sockets.ts).
//
// Exports: parseUserRequest, parseRulesRequest, RulesRequest, applyPolicyChange, isEmptyPolicy, normaliseAddress,
// normalisePattern, describePolicy, UserRequest, PolicyChange,
// PolicySettings, PolicyView, and the limits. Pure; a bad request is
// answered with a string naming the field, never thrown. Sender patterns are
// checked by src/mail/pattern.ts, the module that matches them in linear
// time, so what it cannot run is refused here, naming the field.
import { checkPattern } from '../mail/pattern.js';
import type { UserPolicyRecord } from '../policy/index.js';

export const MAX_PATTERNS = 100;
export const MAX_PATTERN_CHARS = 256;
export const MAX_ADDRESS_CHARS = 254;
/** 1 TiB: anything larger is a typo, and it keeps sizes exact in a double. */
export const MAX_SIZE = 2 ** 40;

export interface PolicyChange {
  readonly allow?: readonly string[];
  readonly deny?: readonly string[];
  readonly onlyAllowed?: boolean;
  /** null: back to the site's setting. */
  readonly greylist?: boolean | null;
  /** null: no limit. */
  readonly maxSize?: number | null;
}

/** A dry run's message, base64: room for 8 MiB (the CLI sends at most that, with the real size beside it). */
export const MAX_TEST_MESSAGE = 8 * 1024 * 1024;
export const MAX_LOG_ENTRIES = 1000;

export type RulesRequest =
  | { readonly cmd: 'rules.list' | 'rules.clear'; readonly address: string }
  | { readonly cmd: 'rules.add'; readonly address: string; readonly rule: string; readonly position?: number }
  | { readonly cmd: 'rules.remove'; readonly address: string; readonly n: number }
  | { readonly cmd: 'rules.move'; readonly address: string; readonly from: number; readonly to: number }
  | { readonly cmd: 'rules.test'; readonly address: string; readonly sender: string; readonly spam: boolean; readonly message: Buffer; readonly size: number }
  | { readonly cmd: 'rules.log'; readonly address: string; readonly last: number };

export type UserRequest =
  | RulesRequest
  | { readonly cmd: 'policy.list' | 'spam.checker' }
  | { readonly cmd: 'policy.show' | 'policy.clear'; readonly address: string }
  | { readonly cmd: 'policy.set'; readonly address: string; readonly change: PolicyChange };

/** What a policy says, without who set it. */
export type PolicySettings = Omit<UserPolicyRecord, 'owner' | 'uid' | 'updatedAt'>;

/** A policy as replies show it. */
export interface PolicyView extends PolicySettings {
  readonly updatedAt: string;
}

const BAD_CHARS = /[\s\p{Cc}<>]/u;

/** "Alice@Example.Test" or "<alice@example.test>" → "alice@example.test"; an error text otherwise. */
export function normaliseAddress(value: unknown): { readonly address: string } | string {
  if (typeof value !== 'string') return 'address: expected a string';
  const text = value.trim().replace(/^<(.*)>$/, '$1').toLowerCase();
  const at = text.lastIndexOf('@');
  if (text.length > MAX_ADDRESS_CHARS) return `address: longer than ${MAX_ADDRESS_CHARS} characters`;
  if (at <= 0 || at === text.length - 1 || BAD_CHARS.test(text)) return `address: expected user@domain, got ${JSON.stringify(value)}`;
  return { address: text };
}

/** A sender glob, lower case; "<>" is the null sender. An error text when it cannot be one. */
export function normalisePattern(value: unknown): { readonly pattern: string } | string {
  if (typeof value !== 'string') return 'expected a string';
  const text = value.trim().toLowerCase();
  if (text === '<>') return { pattern: text };
  if (text === '') return 'empty pattern';
  if (text.length > MAX_PATTERN_CHARS) return `longer than ${MAX_PATTERN_CHARS} characters`;
  if (/[<>]/.test(text)) return `${JSON.stringify(value)}: write the address without angle brackets ("<>" alone is the null sender)`;
  if (BAD_CHARS.test(text)) return `${JSON.stringify(value)}: no spaces or control characters`;
  // The module that will match it decides what it can run (in linear time); today every glob passes.
  const problem = checkPattern({ kind: 'glob', glob: text });
  if (problem !== undefined) return `${JSON.stringify(value)}: ${problem.message} (at character ${problem.offset + 1})`;
  return { pattern: text };
}

function parsePatterns(value: unknown, field: string): readonly string[] | string {
  if (!Array.isArray(value)) return `policy.${field}: expected a list of patterns`;
  if (value.length > MAX_PATTERNS) return `policy.${field}: at most ${MAX_PATTERNS} patterns`;
  const out: string[] = [];
  for (const [i, v] of value.entries()) {
    const p = normalisePattern(v);
    if (typeof p === 'string') return `policy.${field}[${i}]: ${p}`;
    if (!out.includes(p.pattern)) out.push(p.pattern);
  }
  return out;
}

const CHANGE_KEYS = new Set(['allow', 'deny', 'onlyAllowed', 'greylist', 'maxSize']);

function parseChange(value: unknown): PolicyChange | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'policy: expected an object';
  const r = value as Record<string, unknown>;
  const unknown = Object.keys(r).filter((k) => !CHANGE_KEYS.has(k));
  if (unknown.length > 0) return `policy: unknown key ${JSON.stringify(unknown[0])} (known: ${[...CHANGE_KEYS].join(', ')})`;
  const change: { -readonly [K in keyof PolicyChange]: PolicyChange[K] } = {};
  for (const field of ['allow', 'deny'] as const) {
    if (r[field] === undefined) continue;
    const list = parsePatterns(r[field], field);
    if (typeof list === 'string') return list;
    change[field] = list;
  }
  if (r.onlyAllowed !== undefined) {
    if (typeof r.onlyAllowed !== 'boolean') return 'policy.onlyAllowed: expected true or false';
    change.onlyAllowed = r.onlyAllowed;
  }
  if (r.greylist !== undefined) {
    if (typeof r.greylist !== 'boolean' && r.greylist !== null) return 'policy.greylist: expected true, false or null (the site\'s setting)';
    change.greylist = r.greylist;
  }
  if (r.maxSize !== undefined) {
    if (r.maxSize !== null && (typeof r.maxSize !== 'number' || !Number.isInteger(r.maxSize) || r.maxSize < 1 || r.maxSize > MAX_SIZE)) {
      return `policy.maxSize: expected a number of bytes from 1 to ${MAX_SIZE}, or null (no limit)`;
    }
    change.maxSize = r.maxSize;
  }
  return change;
}

const position = (value: unknown, field: string): number | string =>
  typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 100_000 ? value : `${field}: expected a rule number (1, 2, …)`;

const RULES_COMMANDS = ['rules.list', 'rules.add', 'rules.remove', 'rules.move', 'rules.clear', 'rules.test', 'rules.log'];

/** The rules.* requests (user sockets and the admin socket alike); undefined when `r.cmd` is not one. */
export function parseRulesRequest(r: Record<string, unknown>): RulesRequest | string | undefined {
  const cmd = r.cmd;
  if (typeof cmd !== 'string' || !cmd.startsWith('rules.')) return undefined;
  if (!RULES_COMMANDS.includes(cmd)) return `unknown command ${JSON.stringify(cmd)} (known: ${RULES_COMMANDS.join(', ')})`;
  const a = normaliseAddress(r.address);
  if (typeof a === 'string') return a;
  const { address } = a;
  switch (cmd) {
    case 'rules.list':
    case 'rules.clear':
      return { cmd, address };
    case 'rules.add': {
      if (typeof r.rule !== 'string' || r.rule.trim() === '') return 'rule: expected the text of a rule';
      if (r.position === undefined) return { cmd, address, rule: r.rule };
      const p = position(r.position, 'position');
      return typeof p === 'string' ? p : { cmd, address, rule: r.rule, position: p };
    }
    case 'rules.remove': {
      const n = position(r.n, 'n');
      return typeof n === 'string' ? n : { cmd, address, n };
    }
    case 'rules.move': {
      const from = position(r.from, 'from');
      if (typeof from === 'string') return from;
      const to = position(r.to, 'to');
      return typeof to === 'string' ? to : { cmd, address, from, to };
    }
    case 'rules.test': {
      if (typeof r.message !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(r.message)) return 'message: expected the message in base64';
      const message = Buffer.from(r.message, 'base64');
      if (message.length > MAX_TEST_MESSAGE) return `message: at most ${MAX_TEST_MESSAGE} bytes (send the start and give its size)`;
      let sender = '';
      if (r.sender !== undefined && r.sender !== '' && r.sender !== '<>') {
        const s = normaliseAddress(r.sender);
        if (typeof s === 'string') return `sender: ${s.replace(/^address: /, '')}`;
        sender = s.address;
      }
      if (r.spam !== undefined && typeof r.spam !== 'boolean') return 'spam: expected true or false';
      const size = r.size ?? message.length;
      if (typeof size !== 'number' || !Number.isInteger(size) || size < message.length || size > MAX_SIZE) return 'size: expected the message\'s size in bytes';
      return { cmd, address, sender, spam: r.spam === true, message, size };
    }
    case 'rules.log': {
      const last = r.last ?? 20;
      if (typeof last !== 'number' || !Number.isInteger(last) || last < 1 || last > MAX_LOG_ENTRIES) return `last: expected a number from 1 to ${MAX_LOG_ENTRIES}`;
      return { cmd, address, last };
    }
    default:
      return `unknown command ${JSON.stringify(cmd)} (known: ${RULES_COMMANDS.join(', ')})`;
  }
}

/** The one parser of per-user control requests. */
export function parseUserRequest(line: string): UserRequest | string {
  let m: unknown;
  try {
    m = JSON.parse(line);
  } catch {
    return 'not JSON';
  }
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return 'not an object';
  const r = m as Record<string, unknown>;
  const rules = parseRulesRequest(r);
  if (rules !== undefined) return rules;
  switch (r.cmd) {
    case 'policy.list':
    case 'spam.checker':
      return { cmd: r.cmd };
    case 'policy.show':
    case 'policy.clear':
    case 'policy.set': {
      const a = normaliseAddress(r.address);
      if (typeof a === 'string') return a;
      if (r.cmd !== 'policy.set') return { cmd: r.cmd, address: a.address };
      const change = parseChange(r.policy);
      return typeof change === 'string' ? change : { cmd: r.cmd, address: a.address, change };
    }
    default:
      return `unknown command ${JSON.stringify(r.cmd)} (known: policy.list, policy.show, policy.set, policy.clear, spam.checker, rules.list, rules.add, rules.remove, rules.move, rules.clear, rules.test, rules.log)`;
  }
}

/**
 * The policy after a change: keys present replace, absent keep, null removes.
 * Refuses a result that would take no mail at all or say nothing.
 */
export function applyPolicyChange(current: PolicySettings | undefined, change: PolicyChange): PolicySettings | string {
  const allow = change.allow ?? current?.allow ?? [];
  const deny = change.deny ?? current?.deny ?? [];
  const onlyAllowed = change.onlyAllowed ?? current?.onlyAllowed ?? false;
  const greylist = change.greylist === null ? undefined : (change.greylist ?? current?.greylist);
  const maxSize = change.maxSize === null ? undefined : (change.maxSize ?? current?.maxSize);
  if (onlyAllowed && allow.length === 0) return 'only-allowed needs at least one allow pattern (otherwise every sender but the null sender is refused)';
  const next: PolicySettings = {
    allow, deny, onlyAllowed,
    ...(greylist !== undefined ? { greylist } : {}),
    ...(maxSize !== undefined ? { maxSize } : {}),
  };
  return next;
}

/** True when a policy asks for nothing: storing it would only cost a lookup. */
export function isEmptyPolicy(p: PolicySettings): boolean {
  return p.allow.length === 0 && p.deny.length === 0 && !p.onlyAllowed && p.greylist === undefined && p.maxSize === undefined;
}

export function describePolicy(p: UserPolicyRecord): PolicyView {
  return {
    allow: p.allow, deny: p.deny, onlyAllowed: p.onlyAllowed,
    ...(p.greylist !== undefined ? { greylist: p.greylist } : {}),
    ...(p.maxSize !== undefined ? { maxSize: p.maxSize } : {}),
    updatedAt: p.updatedAt,
  };
}
