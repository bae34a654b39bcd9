// The owner's own rules at delivery: which stored list (state store,
// user-rules) applies to a recipient, what the owner may write to (the
// policy src/db/user-rule.ts checks), and the order every rule is evaluated
// in (db/README.md, "Your users' own rules"):
//   1. the admin's `locked` rules for the address;
//   2. the owner's own rules;
//   3. the admin's other rules;
//   4. the default destination (the planner's, when nothing applied).
// A stored list applies only while the address is still the setter's: the
// uid table's exact entry still names what it named (record.owner) and the
// owner resolved now is the uid the list was set for (record.uid). The list
// is read with one get, so a message sees the old list or the new one.
// Each rule is parsed again with the policy in force now (an administrator
// who narrows rules.user_roots or turns user_pipes off is obeyed at the next
// message); a rule that no longer passes is skipped and logged, never guessed.
// Parses are cached by (policy, position, text).
//
// Exports: createOwnerRules, OwnerRules, LayeredRule, OwnerRulesOptions,
// ruleOwnerAddress, userRulePolicyFor. Never throws for a rule's content; LMDB
// trouble propagates (the caller defers the recipient).
import { dirname, isAbsolute, resolve } from 'node:path';
import { expandTemplate, type PlanDefaults } from '../classify/plan.js';
import type { Rule } from '../classify/rules.js';
import type { RulesConfig } from '../config/index.js';
import { parseUserRule, type TableReader, type UserRulePolicy } from '../db/index.js';
import type { Logger } from '../log.js';
import { lookupKeys, type RecipientAddress } from '../mail/address.js';
import type { Identity } from '../os/identity.js';
import { fitsKey, type StateStore, type UserRulesRecord } from '../state/index.js';

/** A rule in evaluation order, with where it comes from and its text. */
export interface LayeredRule {
  readonly rule: Rule;
  readonly layer: 'locked' | 'yours' | 'admin';
  /** The owner's rule as they wrote it; absent for the admin's (formatRule writes them, when someone reads them). */
  readonly text?: string;
}

export interface OwnerRulesOptions {
  readonly state: StateStore;
  readonly tables: TableReader;
  readonly config: () => RulesConfig;
  readonly defaults: () => PlanDefaults;
  /** paths.mail: the owner's per-user directory under it is theirs to write to. */
  readonly mailRoot?: () => string | undefined;
  /** Base of relative paths (the daemon's working directory). */
  readonly baseDir: string;
  readonly log: Logger;
}

export interface OwnerRules {
  /** Every rule for the recipient in evaluation order, the owner's own included when they apply. */
  layered(rcpt: RecipientAddress, admin: readonly Rule[], owner: Identity | undefined): LayeredRule[];
  /** The stored list for exactly this address (lower case), in force or stale. */
  stored(address: string): UserRulesRecord | undefined;
  /** The policy the owner's rules for `rcpt` are checked against. */
  policy(rcpt: RecipientAddress, owner: Identity): UserRulePolicy;
}

/** The keys that name one mailbox, most specific first: user+ext@domain, user@domain. */
const exactKeys = (r: RecipientAddress): string[] => lookupKeys(r).filter((k) => k.indexOf('@') > 0);

/** The address a recipient's decisions are logged under: without extension, lower case. */
export const ruleOwnerAddress = (r: RecipientAddress): string => `${r.user}@${r.domain}`.toLowerCase();

const within = (path: string, root: string): boolean => path === root || path.startsWith(`${root}/`);

/** What the owner of `rcpt` may write to; see src/db/user-rule.ts. */
export function userRulePolicyFor(o: Pick<OwnerRulesOptions, 'config' | 'defaults' | 'mailRoot' | 'baseDir'>, rcpt: RecipientAddress, owner: Identity): UserRulePolicy {
  const c = o.config();
  const d = o.defaults().destination;
  const abs = (p: string): string => (isAbsolute(p) ? resolve(p) : resolve(o.baseDir, p));
  const roots = new Set<string>([resolve(owner.home)]);
  if (d.kind === 'maildir' || d.kind === 'mbox') {
    const own = abs(expandTemplate(d.path, rcpt, owner.home));
    roots.add(d.kind === 'maildir' ? own : dirname(own));
    const mail = o.mailRoot?.();
    if (mail !== undefined) {
      // The per-user directory right under the mail root (workers/mail-root.ts makes it the owner's).
      const root = abs(mail);
      const below = own.slice(root.length + 1).split('/')[0];
      if (within(own, root) && below !== undefined && below !== '' && own !== root) roots.add(`${root}/${below}`);
    }
  }
  for (const r of c.user_roots) roots.add(resolve(r.replaceAll('${user}', owner.user).replaceAll('${home}', owner.home)));
  roots.delete('/');
  return {
    home: owner.home,
    address: ruleOwnerAddress(rcpt),
    roots: [...roots],
    ...(d.kind === 'maildir' ? { defaultMaildir: d.path } : {}),
    pipes: c.user_pipes,
  };
}

const CACHE_MAX = 5000;

export function createOwnerRules(o: OwnerRulesOptions): OwnerRules {
  const cache = new Map<string, Rule | string>();
  const warned = new Set<string>();
  const parse = (text: string, n: number, policy: UserRulePolicy): Rule | string => {
    const key = `${JSON.stringify(policy)}\0${n}\0${text}`;
    let got = cache.get(key);
    if (got === undefined) {
      if (cache.size >= CACHE_MAX) cache.clear();
      got = parseUserRule(text, n, policy);
      cache.set(key, got);
    }
    return got;
  };
  const stored = (address: string): UserRulesRecord | undefined => (fitsKey(address) ? o.state.userRules.get(address) : undefined);

  /** The owner's list in force for the recipient: its own address's, else its address without extension. */
  const inForce = (rcpt: RecipientAddress, owner: Identity): { address: string; record: UserRulesRecord } | undefined => {
    const keys = exactKeys(rcpt);
    for (const [i, address] of keys.entries()) {
      const record = stored(address);
      if (record === undefined || record.rules.length === 0) continue;
      // Who owns `address` by name: its own uid entry, else the less specific exact one (as control/ownership.ts decides).
      const named = o.tables.lookup('uid', keys.slice(i))?.value ?? '';
      if (record.owner === named && record.uid === owner.uid) return { address, record };
    }
    return undefined;
  };

  return {
    stored,
    policy: (rcpt, owner) => userRulePolicyFor(o, rcpt, owner),
    layered(rcpt, admin, owner) {
      const out: LayeredRule[] = admin.filter((r) => r.locked === true).map((rule) => ({ rule, layer: 'locked' as const }));
      const found = owner !== undefined && owner.uid !== 0 ? inForce(rcpt, owner) : undefined;
      if (found !== undefined && owner !== undefined) {
        const policy = userRulePolicyFor(o, rcpt, owner);
        found.record.rules.forEach((text, i) => {
          const rule = parse(text, i + 1, policy);
          if (typeof rule !== 'string') {
            out.push({ rule, layer: 'yours', text });
            return;
          }
          const note = `${found.address} ${rule}`;
          if (!warned.has(note)) {
            if (warned.size > CACHE_MAX) warned.clear();
            warned.add(note);
            o.log.warn(`rules: ${found.address}: the owner's rule ${i + 1} is skipped, it no longer passes this server's limits: ${rule}`);
          }
        });
      }
      for (const rule of admin) if (rule.locked !== true) out.push({ rule, layer: 'admin' });
      return out;
    },
  };
}
