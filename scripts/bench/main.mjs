#!/usr/bin/env node
// `npm run bench`: mailprocd measured part by part, each side by side with
// the peer that does the same job, in the same run, on the same machine:
//  - lmtp:   LMTP → Maildir delivery throughput and latency, beside Dovecot's
//            LMTP server (scripts/bench/lmtp.mjs);
//  - policy: the Postfix policy endpoint (check_policy_service) with the lists
//            check, beside policyd-weight and postgrey (scripts/bench/policy.mjs);
//  - policy-state: the full policy chain (lists, userpolicy, greylist,
//            ratelimit) with its state on LMDB, PostgreSQL and Redis, beside
//            postgrey (scripts/bench/policy-state.mjs);
//  - spam:   SpamAssassin as each recipient's owner (LMTP in, per-user
//            checkers, Maildir out) on the peers' labelled corpus, beside
//            `spamassassin` per message and one spamd asked by `spamc -u`,
//            with verdicts compared message by message and private memory
//            per user (scripts/bench/spam.mjs; needs root);
//  - forward: forward:ADDR copies through relay.smtp (nodemailer's pool) to a
//            loopback SMTP sink: forwards/s, p50/p99 and connections opened
//            per 1000 forwards; no peer sets up forwarding, so no ratio
//            (scripts/bench/forward.mjs);
//  - milter: the milter endpoint behind a real Postfix: the site spam check
//            beside spamass-milter (msgs/s, verdicts compared), and the
//            policy chain with a header add beside no milter (p50 overhead)
//            (scripts/bench/milter.mjs; needs root).
// By default every part, one after the other, in the order below; `--only P`
// or `--skip P` runs one part alone or leaves one out.
//
//   node scripts/bench/main.mjs [--only P | --skip P] [--no-peers] [--builtin]
//        [--log-info] [--keep] [--timeout 900] [each part's options; --help lists them]
//
// The peers directory is $MAILPROC_PEERS or ../shared/peers next to the repo
// (see its README). Exit status: 0 when every run completed and nothing was
// lost, whatever the ratios (this is a report, not a test); 1 when a run
// failed, a message or answer was lost or the time limit (--timeout, whole
// bench) was hit; 2 for bad usage or a missing build. Everything it starts is
// stopped by PID (or by the process group it created), and the temp dir is
// removed (--keep keeps it). Loopback and unix sockets only. What the parts
// share — options, output, starting and stopping daemons and peers, /proc
// figures — is scripts/bench/harness.mjs.
import { runBench } from './harness.mjs';
import lmtp from './lmtp.mjs';
import policy from './policy.mjs';
import spam from './spam.mjs';
import forward from './forward.mjs';
import milter from './milter.mjs';
import policyState from './policy-state.mjs';

// A new part is one more module with the same shape (harness.mjs, "A part
// is …"), added here in the order it should run.
await runBench([lmtp, policy, policyState, spam, forward, milter]);
