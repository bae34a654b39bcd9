// userpolicy: what a mailbox owner set for their own addresses with
// `mailproc policy` (stored in the policy state — the local LMDB `user-policy`
// sub-database, or the PostgreSQL / Redis the nodes share, state.backend —
// written by the per-user control sockets, src/control/user-sockets.ts).
// The recipient's policy is its own address's, else its address without the
// extension (alice+lists@x, then alice@x). At protocol_state=RCPT:
//   sender matches allow                 → not refused for who it is
//   sender matches deny                  → REJECT 5.7.1 Sender refused by the recipient's policy
//   onlyAllowed, sender matches no allow → REJECT 5.7.1 The recipient accepts mail only from senders they allow
//                                          (the null sender passes: bounces of one's own mail;
//                                           deny "<>" refuses them too)
//   size (SIZE= of MAIL FROM) > maxSize  → 552 5.2.3 Message too large for the recipient (…)
//   greylist true                        → the greylist check for this recipient, when the chain has no
//                                          greylist of its own (see exemptFromGreylist for false)
// At END-OF-MESSAGE, when Postfix names the one recipient, only the size is
// checked (the real size: a client that announced none is caught there).
// Patterns are globs like the tables' sender= conditions (`*`, `?`, no case),
// matched in linear time by src/mail/pattern.ts (compiled once, cached);
// the null sender is matched as "<>". No policy → no opinion, at one or two
// LMDB gets per request (one round trip on a shared engine), which is why
// the plugin is in the default chain. A request's lookup is kept with the
// request (a WeakMap on it), so the greylist link's exemption check reuses
// it instead of asking again: the same request, the same answer.
//
// A record is in force only while the uid table still gives its address (by
// an exact key, user+ext@domain or user@domain) to the owner it was set
// under: an address moved to another user does not carry the old owner's
// policy along.
//
// Exports: createUserPolicyStore, createUserPolicyPlugin, exemptFromGreylist,
// judgeUserPolicy (pure), exactKeys (pure), UserPolicyStore, UserPolicyEntry.
// Never throws for a miss or for an address of any length: a key too long
// for LMDB (keys.ts) has no owner in the uid table and no stored policy, so
// it is not looked up. State failures (LMDB, or a shared engine unreachable
// or past state.timeout) propagate to the chain, which logs them
// and answers this plugin's onError: fail closed (FAIL_CLOSED), since the
// owner asked for these refusals and a temporary one only delays a sender
// the policy would let in. The greylist check run here for recipients who
// turned it on is part of this plugin: its failure fails closed too.
import type { TableHit, TableReader } from '../../db/index.js';
import { lookupKeys, parseRecipient, type RecipientAddress } from '../../mail/address.js';
import { matchPattern } from '../../mail/pattern.js';
import { fitsKey } from '../../state/index.js';
import type { PolicyState, UserPolicyRecord } from '../../state/index.js';
import { FAIL_CLOSED, type PolicyAction, type PolicyPlugin, type PolicyRequest } from '../types.js';

export const DENY_ACTION: PolicyAction = "REJECT 5.7.1 Sender refused by the recipient's policy";
export const ONLY_ALLOWED_ACTION: PolicyAction = 'REJECT 5.7.1 The recipient accepts mail only from senders they allow';
/**
 * 552, not REJECT (Postfix's access_map_reject_code, 554): the same reply the
 * daemon gives for a rule's maxsize, and RFC 1870's code for a size refusal.
 */
export const sizeAction = (limit: number): PolicyAction => `552 5.2.3 Message too large for the recipient (limit ${limit} bytes)`;

/** The keys that name one mailbox, most specific first: user+ext@domain, user@domain (lower case). */
export function exactKeys(r: RecipientAddress): string[] {
  return lookupKeys(r).filter((k) => k.indexOf('@') > 0);
}

const senderMatches = (patterns: readonly string[], sender: string): boolean =>
  patterns.some((glob) => matchPattern({ kind: 'glob', glob }, sender === '' ? '<>' : sender));

export interface PolicyFacts {
  readonly state: 'RCPT' | 'END-OF-MESSAGE';
  /** Envelope sender, "" for the null sender. */
  readonly sender: string;
  /** Bytes; 0 = not known. */
  readonly size: number;
}

/** The refusal a policy gives, or undefined; pure. Greylisting is the plugin's business. */
export function judgeUserPolicy(p: UserPolicyRecord, f: PolicyFacts): PolicyAction | undefined {
  if (f.state === 'RCPT' && !senderMatches(p.allow, f.sender)) {
    if (senderMatches(p.deny, f.sender)) return DENY_ACTION;
    if (p.onlyAllowed && f.sender !== '') return ONLY_ALLOWED_ACTION;
  }
  if (p.maxSize !== undefined && f.size > p.maxSize) return sizeAction(p.maxSize);
  return undefined;
}

export interface UserPolicyEntry {
  /** The key it is stored under (lower case). */
  readonly address: string;
  readonly policy: UserPolicyRecord;
}

export interface UserPolicyStore {
  /** The uid-table entry that says whose mailbox `address` is, by an exact key only (never user, user+ext or @domain). */
  ownerEntry(address: string): TableHit<'uid'> | undefined;
  /** The policy in force for a recipient: its own address's, else its address without extension (one state round trip). */
  forRecipient(recipient: string): Promise<UserPolicyEntry | undefined>;
  /** forRecipient(req's recipient), asked once per request object. */
  forRequest(req: PolicyRequest): Promise<UserPolicyEntry | undefined>;
  /** This address's own record, if in force. */
  get(address: string): Promise<UserPolicyRecord | undefined>;
  put(address: string, policy: UserPolicyRecord): Promise<void>;
  /** Removes the record, in force or stale; false when there was none. */
  remove(address: string): Promise<boolean>;
  /** Every record in force that `uid` set. A scan: for `mailproc policy list`, not for requests. */
  listByUid(uid: number): Promise<UserPolicyEntry[]>;
}

export function createUserPolicyStore(state: PolicyState, tables: TableReader, recipientDelimiter: string): UserPolicyStore {
  const parse = (address: string): RecipientAddress => parseRecipient(address.toLowerCase(), recipientDelimiter);
  const ownerEntry = (address: string): TableHit<'uid'> | undefined => tables.lookup('uid', exactKeys(parse(address)));
  const inForce = (address: string, p: UserPolicyRecord | undefined): p is UserPolicyRecord =>
    p !== undefined && (ownerEntry(address)?.value ?? '') === p.owner;
  const get = async (address: string): Promise<UserPolicyRecord | undefined> => {
    const key = address.toLowerCase();
    if (!fitsKey(key)) return undefined;
    const [p] = await state.userPolicies([key]);
    return inForce(key, p) ? p : undefined;
  };
  const forRecipient = async (recipient: string): Promise<UserPolicyEntry | undefined> => {
    const keys = exactKeys(parse(recipient)).filter(fitsKey);
    if (keys.length === 0) return undefined;
    const found = await state.userPolicies(keys);
    for (let i = 0; i < keys.length; i++) {
      const address = keys[i] as string;
      const policy = found[i];
      if (inForce(address, policy)) return { address, policy };
    }
    return undefined;
  };
  const asked = new WeakMap<PolicyRequest, Promise<UserPolicyEntry | undefined>>();
  return {
    ownerEntry,
    forRecipient,
    forRequest(req) {
      let p = asked.get(req);
      if (p === undefined) {
        p = forRecipient(req.get('recipient'));
        asked.set(req, p);
      }
      return p;
    },
    get,
    put: async (address, policy) => {
      // The control protocol refuses such addresses first; this is the store's own guard.
      if (!fitsKey(address.toLowerCase())) throw new Error(`address too long for a policy (${address.length} characters)`);
      await state.putUserPolicy(address.toLowerCase(), policy);
    },
    remove: (address) => (fitsKey(address.toLowerCase()) ? state.removeUserPolicy(address.toLowerCase()) : Promise.resolve(false)),
    async listByUid(uid) {
      return (await state.userPoliciesOf(uid)).filter((e) => inForce(e.address, e.policy));
    },
  };
}

export interface UserPolicyPluginOptions {
  readonly store: UserPolicyStore;
  /**
   * The greylist check to run for recipients who turned greylisting on, when
   * the chain has no greylist of its own; its maintenance is then this
   * plugin's. Leave out when greylist is in the chain (that link serves them).
   */
  readonly greylist?: PolicyPlugin;
}

export function createUserPolicyPlugin(o: UserPolicyPluginOptions): PolicyPlugin {
  const { store, greylist } = o;
  const check = async (req: PolicyRequest): Promise<PolicyAction | undefined> => {
    const state = req.get('protocol_state');
    if (state !== 'RCPT' && state !== 'END-OF-MESSAGE') return undefined;
    const recipient = req.get('recipient');
    if (recipient === '') return undefined;
    const hit = await store.forRequest(req);
    if (hit === undefined) return undefined;
    const size = Number(req.get('size'));
    const refusal = judgeUserPolicy(hit.policy, { state, sender: req.get('sender').toLowerCase(), size: Number.isFinite(size) ? size : 0 });
    if (refusal !== undefined) return refusal;
    if (state === 'RCPT' && hit.policy.greylist === true && greylist !== undefined) return greylist.check(req);
    return undefined;
  };
  const maintain = greylist?.maintain?.bind(greylist);
  const close = greylist?.close?.bind(greylist);
  return {
    name: 'userpolicy',
    // Not cached: a change must apply to the next request, and a miss costs one or two gets.
    cacheTtlMs: 0,
    onError: FAIL_CLOSED,
    check,
    ...(maintain !== undefined ? { maintain } : {}),
    ...(close !== undefined ? { close } : {}),
  };
}

/** The chain's greylist link, skipping recipients whose owner turned greylisting off. */
export function exemptFromGreylist(greylist: PolicyPlugin, store: UserPolicyStore): PolicyPlugin {
  return {
    ...greylist,
    check: async (req) => {
      if (req.get('protocol_state') !== 'RCPT') return greylist.check(req);
      if ((await store.forRequest(req))?.policy.greylist === false) return undefined;
      return greylist.check(req);
    },
  };
}
