// The recipient layer: between the protocol listeners (src/smtp) and the
// workers, everything about one recipient of one message — who owns the
// address (resolve.ts), what happens to it (deliver.ts: loop check, the
// owner's spam verdict in the owner's slots, the plan, the copies), the one
// status its copies fold into (fold.ts), intake's LMTP/SMTP semantics
// (intake.ts), the owners' own rules layered with the admin's (user-rules.ts)
// and the one writer of the delivery log line and the decision log
// (delivery-log.ts, decision-log.ts).
// NOTES.md beside this file says why planning runs here, in the master.
export { createIntake, type IntakeDeps, type IntakeHandlers, type IntakeResult } from './intake.js';
export {
  decideRecipient, deliverToAddress, deliverToRecipient,
  type DecideOptions, type DeliverOptions, type DeliveryContext, type RecipientDecision, type SpamCheck, type VerdictSource,
} from './deliver.js';
export { createRelayCopyContext, type RelayCopyContext } from './relay-copies.js';
export { createDuplicateFilter, type DuplicateFilter, type DuplicateRecords } from './dedupe.js';
export { srsRecipient, srsSender } from './srs.js';
export { answerVacations, readVacationText, type VacationContext } from './vacation.js';
export { createDecisionLog, type DecisionLog } from './decision-log.js';
export { createOwnerRules, ruleOwnerAddress, userRulePolicyFor, type LayeredRule, type OwnerRules, type OwnerRulesOptions } from './user-rules.js';
export { askChecker, createSpamVerdicts, type CheckerOutcome, type SpamVerdictsOptions } from './spam.js';
export { acceptRecipient, lookupRecipient, unknownUser, type Recipient, type ResolvedRecipient } from './resolve.js';
export { foldCopies } from './fold.js';
export { formatSeconds, logDelivery, type DeliveryLogEntry } from './delivery-log.js';
export { createProbeLedger, type ProbeCounts, type ProbeLedger } from './probe.js';
