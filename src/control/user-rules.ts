// The rules.* requests (user-protocol.ts): a mailbox owner's own rules for
// their addresses — list, add, remove, move, clear — the dry run (test) and
// the decision log (log). Served on each user's control socket (the socket
// says who asks: user-sockets.ts) and on the admin socket (root, any address
// the daemon accepts).
//
// Who may: a user, only for an address they own by name (ownership.ts); root,
// for any address, on behalf of whoever its mail is delivered as. A record
// keeps the owner it was set for (owner value + uid), so an address that
// changes hands drops its old owner's rules (src/local/user-rules.ts).
// What a user's rule may say is checked by src/db/user-rule.ts against the
// policy the delivery will check it against (the same function), plus the
// list's limits (rules.user_max_rules, rules.user_max_forwards). A refused
// change changes nothing. A change is one put of the whole list: the next
// message sees the old list or the new one. Each change is logged:
//   rules: uid=1001 alice@example.test add "folder:Invoices header:Subject=Invoice* stop"
// The dry run is src/local/deliver.ts's decideRecipient — the delivery's own
// code up to the point where copies would be written — with the evaluation
// watched (plan.trace); with spam=true the owner's real checker is asked.
//
// Exports: createRulesService, RulesService, RulesServiceOptions, RulesCaller.
// Failure contract: every refusal is an {ok:false,error} reply naming what is
// wrong; LMDB trouble rejects (the socket code answers "internal error").
import { formatCondition, formatDestination, formatRule } from '../classify/rule-text.js';
import type { RulesConfig } from '../config/index.js';
import { checkUserRuleSet, parseUserRule, resolveRecipient, type Tables } from '../db/index.js';
import {
  decideRecipient, lookupRecipient, ruleOwnerAddress, type DecisionLog, type DeliveryContext, type OwnerRules,
} from '../local/index.js';
import type { Logger } from '../log.js';
import { parseRecipient } from '../mail/address.js';
import { parseMessage } from '../mail/message.js';
import type { Identity } from '../os/identity.js';
import type { StateStore, UserRulesRecord } from '../state/index.js';
import { deliveryOwnerOf, ownerOfAddress, type Ownership, type OwnershipOptions } from './ownership.js';
import type { RulesRequest } from './user-protocol.js';

export type RulesCaller = { readonly root: true } | { readonly root: false; readonly who: Identity };

export interface RulesServiceOptions {
  readonly tables: Tables;
  readonly state: StateStore;
  readonly ownerRules: OwnerRules;
  readonly decisions: DecisionLog;
  /** Read per request: the configuration may be reloaded. */
  readonly ownership: () => OwnershipOptions;
  readonly config: () => RulesConfig;
  readonly delivery: () => DeliveryContext;
  readonly log: Logger;
}

export interface RulesService {
  answer(caller: RulesCaller, req: RulesRequest): Promise<Record<string, unknown>>;
}

const TABLES = ['rules', 'uid', 'gid', 'lists', 'spam'] as const;

export function createRulesService(o: RulesServiceOptions): RulesService {
  const ownership = async (caller: RulesCaller, address: string): Promise<Ownership | string> => {
    if (caller.root) return deliveryOwnerOf(o.ownership(), address);
    const own = await ownerOfAddress(o.ownership(), address);
    if (own !== undefined && own.identity.uid !== caller.who.uid) return `${address} is not yours`;
    if (own === undefined) {
      return `${address} is not yours (rules can be set only for an address the uid table gives you by name, as user@domain)`;
    }
    return own;
  };
  const inForce = (record: UserRulesRecord | undefined, own: Ownership): UserRulesRecord | undefined =>
    record !== undefined && record.owner === own.owner && record.uid === own.identity.uid ? record : undefined;
  const rcptOf = (address: string) => parseRecipient(address, o.ownership().recipientDelimiter);

  const view = (address: string, own: Ownership, record: UserRulesRecord | undefined): Record<string, unknown> => {
    const admin = lookupRecipient(o.tables, rcptOf(address))?.rules ?? [];
    const layered = o.ownerRules.layered(rcptOf(address), admin, undefined);
    return {
      ok: true, address, owner: own.identity.user,
      rules: (record?.rules ?? []).map((text, i) => ({ n: i + 1, text })),
      locked: layered.filter((l) => l.layer === 'locked').map((l) => ({ origin: l.rule.origin, text: l.text ?? formatRule(l.rule) })),
      admin: layered.filter((l) => l.layer === 'admin').map((l) => ({ origin: l.rule.origin, text: l.text ?? formatRule(l.rule) })),
      updatedAt: record?.updatedAt ?? null,
    };
  };

  /** Checks and stores a new list; the reply, or the refusal. */
  const store = async (caller: RulesCaller, address: string, own: Ownership, rules: string[], verb: string, what: string): Promise<Record<string, unknown>> => {
    if (rules.length === 0) {
      await o.state.userRules.remove(address);
    } else {
      const c = o.config();
      const policy = o.ownerRules.policy(rcptOf(address), own.identity);
      const parsed = [];
      for (const [i, text] of rules.entries()) {
        const rule = parseUserRule(text, i + 1, policy);
        if (typeof rule === 'string') return { ok: false, error: `${address}: ${rule}` };
        parsed.push(rule);
      }
      const problem = checkUserRuleSet(parsed, { maxRules: c.user_max_rules, maxForwards: c.user_max_forwards });
      if (problem !== undefined) return { ok: false, error: `${address}: ${problem}` };
      const record: UserRulesRecord = { rules, owner: own.owner, uid: own.identity.uid, updatedAt: new Date().toISOString() };
      await o.state.userRules.put(address, record);
    }
    const uid = caller.root ? 0 : caller.who.uid;
    o.log.info(`rules: uid=${uid} ${address} ${verb}${what !== '' ? ` ${what}` : ''}`);
    return view(address, own, o.state.userRules.get(address));
  };

  const test = async (req: Extract<RulesRequest, { cmd: 'rules.test' }>, own: Ownership): Promise<Record<string, unknown>> => {
    const rcpt = rcptOf(req.address);
    const resolved = lookupRecipient(o.tables, rcpt);
    if (resolved === undefined) return { ok: false, error: `${req.address}: no such address here` };
    const hits = resolveRecipient(o.tables, rcpt);
    const message = { ...parseMessage(req.message), receivedSize: req.size };
    const env = { queueId: 'DRYRUN', sender: req.sender, helo: 'localhost', clientAddress: '', protocol: 'LMTP' as const, arrival: new Date() };
    const d = await decideRecipient(o.delivery(), env, message, { rcpt, resolved }, { explain: true, spam: req.spam });
    const trace = d.plan.trace ?? [];
    const spam = d.spamSkipped ? { checked: false, reason: 'not checked' }
      : 'code' in d.spam ? { checked: false, reason: `the checker failed and the message would be deferred: ${d.spam.code} ${d.spam.text}` }
        : d.spam.verdict !== undefined
          ? { checked: true, isSpam: d.spam.verdict.isSpam, score: d.spam.verdict.score, required: d.spam.verdict.required ?? null, tests: d.spam.verdict.tests ?? [] }
          : { checked: false, reason: d.spam.header?.replace(/^X-Spam-Status:\s*/i, '').trim() || 'not checked (spam checking is off here)' };
    const plan = d.plan.kind === 'refuse'
      ? { kind: 'refuse', code: d.plan.status.code, text: d.plan.internal === true ? 'a table problem: see the daemon\'s log' : d.plan.status.text }
      : {
        kind: 'deliver',
        steps: d.plan.steps.map((s, i) => ({
          destination: d.decision.copies[i]?.destination ?? formatDestination(s.destination), user: s.user,
          ...(s.group !== undefined ? { group: s.group } : {}), origin: s.origin,
        })),
      };
    return {
      ok: true,
      test: {
        address: rcpt.address,
        keys: TABLES.flatMap((t) => {
          const hit = t === 'lists' ? hits.list : hits[t];
          return hit !== undefined ? [{ table: t, key: hit.key }] : [];
        }),
        owner: { user: own.identity.user, uid: own.identity.uid },
        sender: req.sender, size: req.size,
        headers: [...message.headers].flatMap(([name, values]) => values.map((v) => [name, v])),
        spam,
        rules: d.rules.map((l, i) => {
          const t = trace[i];
          return {
            layer: l.layer, origin: l.rule.origin, text: l.text ?? formatRule(l.rule), result: t?.result ?? 'not reached',
            ...(t?.failed !== undefined ? { failed: formatCondition(t.failed) } : {}), ...(l.rule.stop ? { stop: true } : {}),
          };
        }),
        plan,
      },
    };
  };

  // Changes are read-modify-write of one record: one at a time, so two at once cannot lose one.
  let changing: Promise<unknown> = Promise.resolve();
  const serialised = <T>(work: () => Promise<T>): Promise<T> => {
    const run = changing.then(work, work);
    changing = run.catch(() => undefined);
    return run;
  };

  const answer = async (caller: RulesCaller, req: RulesRequest): Promise<Record<string, unknown>> => {
    const own = await ownership(caller, req.address);
    if (typeof own === 'string') return { ok: false, error: own };
    const { address } = req;
    const current = inForce(o.state.userRules.get(address), own);
    const rules = [...(current?.rules ?? [])];
    const numbered = (n: number): string | undefined =>
      n > rules.length ? `${address} has ${rules.length === 0 ? 'no rules of yours' : `only ${rules.length} rule${rules.length === 1 ? '' : 's'}`}, no rule ${n}` : undefined;
    switch (req.cmd) {
      case 'rules.list':
        return view(address, own, current);
      case 'rules.add': {
        const at = Math.min(req.position ?? rules.length + 1, rules.length + 1);
        rules.splice(at - 1, 0, req.rule.trim());
        return store(caller, address, own, rules, 'add', `${req.position !== undefined ? `at ${at} ` : ''}${JSON.stringify(req.rule.trim())}`);
      }
      case 'rules.remove': {
        const bad = numbered(req.n);
        if (bad !== undefined) return { ok: false, error: bad };
        const [gone] = rules.splice(req.n - 1, 1);
        return store(caller, address, own, rules, 'remove', `${req.n} ${JSON.stringify(gone)}`);
      }
      case 'rules.move': {
        const bad = numbered(req.from) ?? numbered(req.to);
        if (bad !== undefined) return { ok: false, error: bad };
        const [moved] = rules.splice(req.from - 1, 1);
        rules.splice(req.to - 1, 0, moved as string);
        return store(caller, address, own, rules, 'move', `${req.from} to ${req.to}`);
      }
      case 'rules.clear': {
        const removed = rules.length;
        const reply = await store(caller, address, own, [], 'clear', `(${removed} rule${removed === 1 ? '' : 's'})`);
        return { ...reply, removed };
      }
      case 'rules.test':
        return test(req, own);
      case 'rules.log': {
        const rcpt = rcptOf(address);
        const all = o.decisions.read(ruleOwnerAddress(rcpt), rcpt.extension === '' ? req.last : 1000);
        const entries = rcpt.extension === '' ? all : all.filter((e) => e.recipient.toLowerCase() === address).slice(-req.last);
        return { ok: true, address, entries };
      }
    }
  };

  return {
    answer: (caller, req) => (req.cmd === 'rules.test' || req.cmd === 'rules.log' || req.cmd === 'rules.list' ? answer(caller, req) : serialised(() => answer(caller, req))),
  };
}
