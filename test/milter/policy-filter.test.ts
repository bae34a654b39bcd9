// The policy chain through the milter, without the wire: the attributes the
// filter builds for a RCPT (what check_policy_service would have sent) and
// how an access(5) action comes back (as Postfix's smtpd applies it), as
// tables; then the filter itself on one connection, with a decide() that
// records what it was asked and answers from a table, and an end-of-message
// session that records the modifications.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createLogger } from '../../src/log.js';
import type { EomSession, MilterFilter, NormalizedVerdict } from '../../src/milter/index.js';
import { mapPolicyAction, policyAttributes, createPolicyFilter, type PolicyFacts } from '../../src/milter/policy-filter.js';
import { negotiate, SMFIP } from '../../src/milter/protocol.js';

const quiet = createLogger({ format: 'text', level: 'error', write: () => undefined });

function facts(over: Partial<PolicyFacts> & { macros?: Record<string, string> } = {}): PolicyFacts {
  const macros = over.macros ?? {};
  return {
    connect: { hostname: 'mail.sender.test', family: 'inet', address: '192.0.2.7', port: 40123 },
    helo: 'mail.sender.test',
    sender: 'eve@sender.test',
    senderArgs: ['SIZE=1234', 'BODY=8BITMIME'],
    recipient: 'dev@example.test',
    instance: 'a.1',
    macro: (n) => macros[n],
    ...over,
  };
}

test('the attributes of a RCPT are those Postfix sends to check_policy_service', () => {
  const a = policyAttributes(facts({
    macros: {
      i: '4Xyz1', '{auth_type}': 'PLAIN', '{auth_authen}': 'eve', '{auth_author}': '', '{tls_version}': 'TLSv1.3',
      '{cipher}': 'TLS_AES_256_GCM_SHA384', '{cipher_bits}': '256', '{daemon_addr}': '127.0.0.1', '{cert_subject}': 'CN=eve',
    },
  }));
  const want: Record<string, string> = {
    request: 'smtpd_access_policy', protocol_state: 'RCPT', protocol_name: 'ESMTP', helo_name: 'mail.sender.test',
    queue_id: '4Xyz1', sender: 'eve@sender.test', recipient: 'dev@example.test', recipient_count: '0',
    client_address: '192.0.2.7', client_name: 'mail.sender.test', reverse_client_name: 'mail.sender.test', client_port: '40123',
    instance: 'a.1', sasl_method: 'PLAIN', sasl_username: 'eve', sasl_sender: '', size: '1234',
    encryption_protocol: 'TLSv1.3', encryption_cipher: 'TLS_AES_256_GCM_SHA384', encryption_keysize: '256',
    ccert_subject: 'CN=eve', server_address: '127.0.0.1',
  };
  for (const [k, v] of Object.entries(want)) assert.equal(a.get(k), v, k);
});

test('client attributes: unknown names, IPv6, macros over connect info, no ESMTP', () => {
  const rows: { name: string; f: PolicyFacts; want: Record<string, string> }[] = [
    {
      name: 'a client without a name (Sendmail\'s "[addr]") is "unknown", as Postfix says',
      f: facts({ connect: { hostname: '[192.0.2.7]', family: 'inet', address: '192.0.2.7', port: 1 } }),
      want: { client_name: 'unknown', reverse_client_name: 'unknown', client_address: '192.0.2.7' },
    },
    {
      name: 'IPv6: the bare address',
      f: facts({ connect: { hostname: 'unknown', family: 'inet6', address: 'IPv6:2001:db8::5', port: 25 } }),
      want: { client_address: '2001:db8::5', client_name: 'unknown', client_port: '25' },
    },
    {
      name: 'macros, when the MTA sends them, win over the connect info',
      f: facts({ macros: { '{client_addr}': '198.51.100.1', '{client_name}': 'real.test', '{client_ptr}': 'ptr.test', '{client_port}': '9', '{daemon_port}': '25' } }),
      want: { client_address: '198.51.100.1', client_name: 'real.test', reverse_client_name: 'ptr.test', client_port: '9', server_port: '25' },
    },
    {
      name: 'a local (unix) client has no address; MAIL FROM without parameters is SMTP; the null sender is empty',
      f: facts({ connect: { hostname: 'localhost', family: 'unix', address: '/run/x', port: 0 }, senderArgs: [], sender: '' }),
      want: { client_address: '', client_port: '', protocol_name: 'SMTP', sender: '', size: '' },
    },
  ];
  for (const r of rows) {
    const a = policyAttributes(r.f);
    for (const [k, v] of Object.entries(r.want)) assert.equal(a.get(k), v, `${r.name}: ${k}`);
  }
});

test('access(5) actions map to what Postfix would answer for that recipient', () => {
  const R = 'dev@example.test';
  const rows: { action: string; verdict: NormalizedVerdict; hold?: string; prepend?: { name: string; value: string }; ignored?: boolean }[] = [
    { action: 'DUNNO', verdict: { result: 'continue' } },
    { action: 'ok', verdict: { result: 'continue' } },
    { action: '', verdict: { result: 'continue' } },
    { action: '250', verdict: { result: 'continue' } },
    { action: 'DEFER_IF_REJECT 4.7.1 maybe', verdict: { result: 'continue' } },
    {
      action: 'REJECT 5.7.1 Only subscribers may post to this list',
      verdict: { result: 'reject', code: '554', xcode: '5.7.1', text: `<${R}>: Recipient address rejected: Only subscribers may post to this list` },
    },
    { action: 'reject', verdict: { result: 'reject', code: '554', xcode: '5.7.1', text: `<${R}>: Recipient address rejected: Access denied` } },
    { action: 'REJECT No thanks', verdict: { result: 'reject', code: '554', xcode: '5.7.1', text: `<${R}>: Recipient address rejected: No thanks` } },
    // The enhanced code's class follows the reply's, as Postfix makes it.
    { action: 'REJECT 4.2.2 full', verdict: { result: 'reject', code: '554', xcode: '5.2.2', text: `<${R}>: Recipient address rejected: full` } },
    { action: '550 5.1.1 No such user', verdict: { result: 'reject', code: '550', xcode: '5.1.1', text: `<${R}>: Recipient address rejected: No such user` } },
    { action: '421 closing', verdict: { result: 'tempfail', code: '421', xcode: '4.7.1', text: `<${R}>: Recipient address rejected: closing` } },
    {
      action: 'DEFER_IF_PERMIT 4.7.1 Greylisted, please try again later',
      verdict: { result: 'tempfail', code: '450', xcode: '4.7.1', text: `<${R}>: Recipient address rejected: Greylisted, please try again later` },
    },
    {
      action: 'DEFER_IF_PERMIT 4.3.0 Temporary lookup failure, try again later',
      verdict: { result: 'tempfail', code: '450', xcode: '4.3.0', text: `<${R}>: Recipient address rejected: Temporary lookup failure, try again later` },
    },
    { action: 'DEFER', verdict: { result: 'tempfail', code: '450', xcode: '4.7.1', text: `<${R}>: Recipient address rejected: Service unavailable` } },
    { action: 'DISCARD spam trap', verdict: { result: 'discard' } },
    { action: 'HOLD look at this', verdict: { result: 'continue' }, hold: 'look at this' },
    { action: 'HOLD', verdict: { result: 'continue' }, hold: 'held by policy' },
    { action: 'PREPEND X-Greylist: delayed 300 seconds by mailprocd', verdict: { result: 'continue' }, prepend: { name: 'X-Greylist', value: 'delayed 300 seconds by mailprocd' } },
    { action: 'PREPEND no header here', verdict: { result: 'continue' }, ignored: true },
    { action: 'PREPEND Bad Name: x', verdict: { result: 'continue' }, ignored: true },
    { action: 'WARN look', verdict: { result: 'continue' }, ignored: true },
    { action: 'FILTER smtp:[127.0.0.1]:10025', verdict: { result: 'continue' }, ignored: true },
    { action: 'REDIRECT x@y', verdict: { result: 'continue' }, ignored: true },
    { action: 'reject_unknown_client_hostname', verdict: { result: 'continue' }, ignored: true },
  ];
  for (const r of rows) {
    const got = mapPolicyAction(r.action, R);
    assert.deepEqual(got.verdict, r.verdict, r.action);
    assert.equal(got.hold, r.hold, `${r.action}: hold`);
    assert.deepEqual(got.prepend, r.prepend, `${r.action}: prepend`);
    assert.equal(got.ignored !== undefined, r.ignored === true, `${r.action}: ignored`);
  }
});

test('a recipient\'s bytes cannot break the reply: control characters are replaced', () => {
  const got = mapPolicyAction('REJECT 5.7.1 no', 'a\r\nb\u00e9@x');
  assert.equal(got.verdict.text, '<a??b?@x>: Recipient address rejected: no');
});

/** One connection's events through a filter; the eom session records modifications. */
function session(): { s: EomSession; mods: string[]; macros: Map<string, string> } {
  const mods: string[] = [];
  const macros = new Map<string, string>();
  const s = {
    macro: (n: string) => macros.get(n),
    recipients: [] as string[],
    sender: undefined,
    addHeader: (n: string, v: string | Buffer) => mods.push(`add ${n}:${String(v)}`),
    insertHeader: (i: number, n: string, v: string | Buffer) => mods.push(`insert ${i} ${n}:${String(v)}`),
    changeHeader: (n: string, i: number, v: string | Buffer | null) => mods.push(`change ${n} ${i} ${String(v)}`),
    addRecipient: (a: string) => mods.push(`addrcpt ${a}`),
    deleteRecipient: (a: string) => mods.push(`delrcpt ${a}`),
    changeSender: (a: string) => mods.push(`chgfrom ${a}`),
    replaceBody: () => mods.push('replbody'),
    quarantine: (r: string) => mods.push(`quarantine ${r}`),
    progress: () => undefined,
  } satisfies EomSession;
  return { s, mods, macros };
}

test('the filter asks once per recipient with that recipient\'s attributes and applies each answer', async () => {
  const asked: ReadonlyMap<string, string>[] = [];
  const answers: Record<string, string> = {
    'dev@example.test': 'REJECT 5.7.1 Only subscribers may post to this list',
    'grey@example.test': 'DEFER_IF_PERMIT 4.7.1 Greylisted',
    'tag@example.test': 'PREPEND X-Greylist: delayed 300 seconds',
    'hold@example.test': 'HOLD review',
  };
  const filter: MilterFilter = createPolicyFilter({ decide: (a) => { asked.push(a); return Promise.resolve(answers[a.get('recipient') ?? ''] ?? 'DUNNO'); }, log: quiet })();
  const { s, mods, macros } = session();
  await filter.connect?.(s, { hostname: 'mx.sender.test', family: 'inet', address: '192.0.2.9', port: 5555 });
  await filter.helo?.(s, 'mx.sender.test');
  macros.set('{auth_authen}', 'eve');
  await filter.envfrom?.(s, 'eve@sender.test', []);
  macros.set('i', 'Q1');
  const got = [];
  for (const r of ['dev@example.test', 'alice@example.test', 'grey@example.test', 'tag@example.test', 'hold@example.test']) got.push(await filter.envrcpt?.(s, r, []));
  const summary = got.map((v) => (typeof v === 'object' && v !== null ? `${v.result} ${v.code ?? '-'}` : String(v)));
  assert.deepEqual(summary, ['reject 554', 'continue -', 'tempfail 450', 'continue -', 'continue -']);
  assert.equal(asked.length, 5);
  assert.equal(asked[0]?.get('client_address'), '192.0.2.9');
  assert.equal(asked[0]?.get('helo_name'), 'mx.sender.test');
  assert.equal(asked[0]?.get('sasl_username'), 'eve');
  assert.equal(asked[1]?.get('queue_id'), 'Q1');
  assert.equal(asked[0]?.get('instance'), asked[4]?.get('instance'), 'one instance per message');
  await filter.eom?.(s);
  assert.deepEqual(mods, ['insert 0 X-Greylist:delayed 300 seconds', 'quarantine review']);

  // The next message starts clean: no header or hold carried over, a new instance.
  mods.length = 0;
  await filter.envfrom?.(s, 'eve@sender.test', []);
  await filter.envrcpt?.(s, 'alice@example.test', []);
  await filter.eom?.(s);
  assert.deepEqual(mods, []);
  assert.notEqual(asked[5]?.get('instance'), asked[0]?.get('instance'));
});

test('an aborted message forgets its prepends', async () => {
  const filter = createPolicyFilter({ decide: () => Promise.resolve('PREPEND X-Tag: yes'), log: quiet })();
  const { s, mods } = session();
  await filter.envfrom?.(s, 'a@b.test', []);
  await filter.envrcpt?.(s, 'alice@example.test', []);
  await filter.abort?.(s);
  await filter.envfrom?.(s, 'a@b.test', []);
  await filter.envrcpt?.(s, 'alice@example.test', []);
  await filter.eom?.(s);
  assert.deepEqual(mods, ['insert 0 X-Tag:yes'], 'once, for the message that ended; the session adds the space after the colon');
});

test('a decide() that fails is a temporary refusal of that recipient (fail closed), never a throw', async () => {
  const filter = createPolicyFilter({ decide: () => Promise.reject(new Error('broken')), log: quiet })();
  const { s } = session();
  await filter.envfrom?.(s, 'a@b.test', []);
  assert.deepEqual(await filter.envrcpt?.(s, 'alice@example.test', []), { result: 'tempfail', code: '451', xcode: '4.3.0', text: 'Temporary lookup failure, try again later' });
});

test('events every filter only observes are negotiated without a reply (NR_*), where the MTA offers it; others keep theirs', () => {
  const offer = { kind: 'optneg', version: 6, actions: 0x1ff, protocol: 0x1fffff } as const;
  const events = new Set(['connect', 'helo', 'envfrom', 'envrcpt']);
  const quietAll = negotiate(offer, { events, envelope: false, modify: true, quiet: new Set(['connect', 'helo', 'envfrom']) });
  const none = negotiate(offer, { events, envelope: false, modify: true });
  assert.ok(quietAll.kind === 'optneg' && none.kind === 'optneg');
  const nr = SMFIP.NR_CONN | SMFIP.NR_HELO | SMFIP.NR_MAIL;
  assert.equal(quietAll.protocol & nr, nr);
  assert.equal(quietAll.protocol & SMFIP.NR_RCPT, 0, 'RCPT, where the policy answers, keeps its reply');
  assert.equal(none.protocol & nr, 0);
  // An MTA that does not offer NR_CONN: the event keeps its reply.
  const old = negotiate({ ...offer, protocol: 0x1fffff & ~SMFIP.NR_CONN }, { events, envelope: false, modify: true, quiet: new Set(['connect']) });
  assert.ok(old.kind === 'optneg');
  assert.equal(old.protocol & SMFIP.NR_CONN, 0);
});
