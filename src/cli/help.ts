// The `cdp` command's words: the usage line and each command's --help.
import { INBOX_FILE } from "../inbox/inbox.js";
import { JOURNAL_FILE } from "../store/journal.js";

export const USAGE = `cdp: configuration delivery pipeline

Usage:
  cdp init   --dir D --schemas S     create and mark a data directory (once; idempotent)
  cdp watch  --dir D [--schemas S]   run the watcher in the foreground
  cdp push   --dir D LINE...         append change lines to D/${INBOX_FILE} (- reads them from stdin)
  cdp get    --dir D [app[.key]]     print the current config as JSON
  cdp status --dir D [--json]        the watcher, revision, lines waiting, last rejection
  cdp check  --schemas S [--dir D] [FILE|-]    say which lines would be rejected and why
  cdp history --dir D [app[.key]] [--limit N] [--json]   revisions, newest first
  cdp rollback --dir D (--to REV | --last) [--dry-run]   undo changes through the inbox
  cdp compact --dir D [--keep N]   rewrite the journal as its state plus recent history
  cdp rekey  --dir D --secrets-key OLD --new-key NEW   seal every secret value with NEW
  cdp push   --dir D --at TIME|--for DURATION LINE...   a change in time (scheduled, temporary)
  cdp schedule [cancel ID] --dir D [--json]   the changes in time that are due
  cdp plan   --dir D --schemas NEW   what taking the schemas in NEW would do (versions, keys)
  cdp rollout start --dir D --hosts H1[,H2] --bake S [--wait] LINE...   stage a fleet change on canaries
  cdp rollout status|abort|promote --dir D   follow, stop or finish a fleet's rollouts

Settings come from flags, then environment variables, then the data directory: every option
--NAME may be given as CDP_NAME (upper case, '-' as '_': CDP_DIR, CDP_SCHEMAS,
CDP_MAX_LINE_BYTES, CDP_HTTP …; for a switch, 1 or 0), and --schemas defaults to the schema
directory recorded by 'cdp init'. Flags win.
Secret (writeOnly) values are sealed at rest (AES-256-GCM) when a key is given: --secrets-key FILE
(CDP_SECRETS_KEY_FILE), 64 hex digits, on every command that reads or writes values ('cdp init
--secrets-key FILE' writes a new one); a directory whose secrets are sealed refuses to run without it.
Run 'cdp COMMAND --help' for a command's options.
Exit codes: 0 done; 1 a check found rejections, a rollback was refused, or a fault stopped cdp;
2 bad usage or an invalid bootstrap (a schema or the journal); 3 the inbox stayed unavailable.`;

export const HELP: Record<string, string> = {
  init: `Usage: cdp init --dir D --schemas S [--secrets-key FILE]

Create the data directory D (mode 0700) and mark it as cdp's, recording the schema directory S
in D/cdp.conf. Every other command refuses a directory that is not initialised (exit 2), so
that a typo in --dir or an unmounted volume never looks like an empty configuration.
The schemas must load (at least one S/<app>.schema.json), and a journal already in D (from an
earlier cdp) must hold under them. Running it again with the same settings changes nothing
(exit 0).

Options:
  --secrets-key FILE     seal secret (writeOnly) values at rest with the key in FILE (64 hex
                         digits; a new random key is written there, mode 0600, when FILE does
                         not exist). Keep FILE outside D. Its id is recorded in D/cdp.conf: from
                         then on every command on D needs --secrets-key FILE (or
                         CDP_SECRETS_KEY_FILE)`,
  watch: `Usage: cdp watch --dir D --schemas S [options]

Follow D/${INBOX_FILE}: each new line is parsed, validated against S/<app>.schema.json and
either appended to the journal D/${JOURNAL_FILE} and applied, or written to D/cdp.rej with
the reason. Lines appended while cdp was stopped are processed at start.
Refuses to start (exit 2) when a schema or the journal is invalid.
SIGINT/SIGTERM finish and flush the batch in hand, then exit 0.

Options:
  --dir D                the data directory (made by 'cdp init')
  --schemas S            the directory of <app>.schema.json files (default: the one
                         recorded by 'cdp init')
  --max-line-bytes N     reject lines longer than N bytes (default 65536; with
                         --cluster at most 131072)
  --poll-interval MS     check the inbox every MS ms even without file events (default 1000)
  --poll-only            use the periodic check alone, no file-system events (network file systems)
  --max-outage SECONDS   exit 3 when the inbox stays unavailable longer than this (default 10)
  --max-outages N        exit 3 after more than N outages within the outage window (default 5)
  --outage-window SECONDS  the window for --max-outages (default 600)
  --render FILE          write app configs to files for services that read files, as FILE (JSON:
                         {"targets": [{"app", "template" or "format", "dest", "check", "reload",
                         "health", …}]}) says; checked, reloaded, probed, and taken back when the
                         service disagrees (docs/rendering.md). May be given more than once
  --compact-after N      compact the journal once it holds N changes (default 100000; 0: never)
  --keep-history N       changes kept as history when compacting (default 1000)
  --log-level LEVEL      trace, debug, info, warn, error (default info)
  --pretty               human-readable logs (the default on a terminal)

The sidecar (off unless --http is given):
  --http ADDRESS         serve the HTTP API, event stream, metrics and dashboard on
                         HOST:PORT (or PORT, on 127.0.0.1; 0 takes a free port)
  --token-file F         bearer tokens, one 'read|write|admin TOKEN NAME [apps=A,B*] [secrets]'
                         per line (read again when it changes); without it only a loopback
                         address is allowed and no token is asked for
  --http-max-body BYTES  refuse larger request bodies with 413 (default 1048576)
  --http-wait SECONDS    how long POST /v1/changes waits for outcomes before 202 (default 10)
  --http-keepalive SECONDS  keep-alive comment interval on idle event streams (default 15)
  --http-timeout SECONDS cut off a request not received within this time (default 15)

A fleet (off unless --cluster is given): one configuration for many hosts, ordered by etcd.
Each host keeps its own data directory; a line read here is committed to the fleet's log
only if the fleet is still at the state it was judged against, and every host applies the
log in the same order.
  --cluster URLS         etcd endpoints: etcd://host:port[,host:port...] (or http(s)://)
  --cluster-prefix P     the fleet's key prefix in etcd, the same on every host (e.g. /cdp/prod)
  --cluster-host NAME    this host's name in the fleet's records (default: hostname:dir)
  --cluster-user U       etcd user; the password is read from --cluster-password-file F
  --cluster-ca F         CA certificate (PEM) for TLS to etcd; --cluster-cert F and
                         --cluster-key F for a client certificate
  --fleet-downgrade      move the fleet down to this host's schema files where they declare
                         an older x-cdp-version than the fleet's (the start of a rolling
                         downgrade); without it, a host with older files keeps the fleet's`,
  push: `Usage: cdp push --dir D [--reason TEXT] LINE... | cdp push --dir D -

Append change lines (app:key:value) to D/${INBOX_FILE}, all in one write, as 'echo LINE >>'
does, each after a '# by: USER' comment (the user behind sudo, where there is one) and, with
--reason, a '# reason: TEXT' comment: history, events and the dashboard show both. With -, the
lines are read from standard input.
When a watcher is running on D, cdp push waits for each line's outcome and prints it:
accepted at revision N, or rejected with the reason (exit 1 when any line is rejected); for an
app rendered for a service (--render), it waits for the service's verdict: 'taken back at
revision N: REASON' (exit 1). Without a watcher, it says the lines wait in the inbox and judges
them against the schemas and configuration in force: exit 1 when any would be rejected.

Options:
  --reason TEXT          why: recorded with each change
  --wait                 wait for the outcomes (the default when a watcher is running)
  --no-wait              only queue the lines
  --wait-timeout SECONDS how long to wait for the outcomes (default 10)
  --at TIME              apply the lines at TIME (RFC 3339, 2026-12-24T02:00:00Z, or +DURATION
                         from now: +90s, +30m, +2h, +1d), judged again then (a line that no
                         longer holds lands in cdp.rej with the reason). Judged now as well:
                         exit 1, and nothing scheduled, when it would be refused today
  --for DURATION         apply the lines (now, or --at TIME) and take them back after DURATION
                         (90s, 30m, 2h, 1d): each key goes back to its value before, unless
                         someone changed it since (then it is left alone, and history says so)
With --at or --for the schedule's id is printed; 'cdp schedule' lists what is due.`,
  schedule: `Usage: cdp schedule --dir D [--json]
       cdp schedule cancel --dir D ID

List the changes in time that are due (cdp push --at/--for, POST /v1/changes?at=…&for=…),
soonest first: id, when, the lines (secret values as [secret]), who and why. A schedule is
journaled when it is made: a watcher that was stopped when a time passed applies what is due
at start, once, in order. cancel ends one through the inbox (the watcher records it).

Options:
  --json                 [{"id", "at", "lines", "by", "reason", "kind"}] ("kind": "change", or
                         "expiry" for the end of a --for change, with "restores")`,
  rollout: `Usage: cdp rollout start --dir D (--hosts H1[,H2…] --bake SECONDS | --steps 10,50,100 --every SECONDS) [--for DURATION] [--wait] [--reason TEXT] LINE...
       cdp rollout status --dir D [--json]
       cdp rollout abort --dir D [--id ID | --app APP] [--reason TEXT]
       cdp rollout promote --dir D [--id ID | --app APP]

A staged rollout in a fleet (D is a fleet host's data directory, its watcher running with
--cluster). start stages the change LINEs (all of one app, judged against the fleet's state
like any batch) on the canary hosts named by their --cluster-host names: they apply it at once,
the other hosts do not while it bakes. It prints the rollout's id once staged; with --wait it
returns when the rollout ends: exit 0 promoted, 1 aborted (with the reason).
With --steps, the change goes to that percentage of the fleet's hosts (the first ready ones by
name) step by step, each baking --every seconds, as AWS AppConfig's linear strategies do.
While it bakes, the rollout is aborted when a canary vetoes it (a subscriber's veto(), a render
target's failed check, reload or health, /readyz turning not ready) or disappears: the canaries
take the previous values back, the other hosts never apply it, and the reason is recorded in
history and in the cdp.rej of the host that started it. Once the bake ends with no veto, every
host applies it. One rollout per app at a time: other changes to that app are rejected while it
bakes. Every step is a fleet revision; any host carries a rollout on if the one that started it
dies (the deadline lives in etcd).
status lists the rollouts in progress and the recent ones (any host); abort and promote end the
one in progress (say which with --id or --app when several are) from any host.

Options:
  --hosts H1,H2          the canaries (their --cluster-host names)
  --bake SECONDS         how long the canaries run it before it is promoted
  --steps P1,P2,…,100    percentages of the fleet's hosts, step by step (instead of --hosts)
  --every SECONDS        how long each step bakes
  --for DURATION         (start) a temporary change: once promoted, each key it changed is put
                         back after DURATION (90s, 30m, 2h), unless changed since (cdp schedule)
  --wait                 (start) wait until the rollout ends
  --reason TEXT          why (start: recorded with the changes; abort: with the abort)
  --id ID, --app APP     which rollout (abort, promote)
  --wait-timeout SECONDS how long to wait for the watcher (default 10; with --wait, no limit)
  --json                 (status) the rollouts as JSON`,
  status: `Usage: cdp status --dir D [--json]

Say what state D is in: whether a watcher runs on it (its pid, since when, its sidecar's
address, its fleet), the revision, how many lines wait in D/${INBOX_FILE}, the last rejection,
and the schemas in force (their version and a digest of each file).

Options:
  --json                 the same as JSON, for scripts`,
  get: `Usage: cdp get --dir D [--schemas S] [app[.key.path]]

Print the configuration persisted in D/${JOURNAL_FILE} (with schema defaults) as JSON:
all apps, one app, or one key. Exits 2 on an invalid journal or an unknown app or key.
Secret (writeOnly) values are printed as "[secret]".

Options:
  --show-secrets         print secret values too`,
  check: `Usage: cdp check --schemas S [--dir D] [FILE|-]

Dry run: judge each line of FILE (or standard input) as the watcher would, one after the
other, and print every line that would be rejected, with the reason. With --dir, lines are
judged against the current configuration in D/${JOURNAL_FILE}, otherwise against the
schema defaults. Exit 0 when every line would be accepted, 1 when any would be rejected.

Options:
  --max-line-bytes N     the line length limit to apply (default 65536)`,
  history: `Usage: cdp history --dir D [--schemas S] [app[.key.path]] [--limit N] [--json]

Print the accepted changes recorded in D/${JOURNAL_FILE}, newest first: revision, time, source,
key, old and new value. Secret (writeOnly) values are shown as [secret].

Options:
  --limit N              at most N revisions
  --json                 a JSON array, for scripts`,
  plan: `Usage: cdp plan --dir D --schemas NEW [--json]

Preview what taking the schema files in NEW would do to D's configuration, without writing
anything: per app, the schema version from → to (x-cdp-version) and the keys added, removed,
renamed (moved by a step of x-cdp-migrations) and whose effective value changes (old → new).
It is judged as the watcher would judge it: the journal replayed, each app migrated through
every step on the way, then checked whole against NEW. Compared with the schema directory the
data directory records (cdp init). Secret (writeOnly) values are shown as [secret].
Exit 0 when the configuration holds under NEW; 1 with the reason when it would be refused.

Options:
  --json                 the plan as JSON ({"ok": true, "apps": [...]} or {"ok": false, "reason": ...})`,
  rekey: `Usage: cdp rekey --dir D --secrets-key OLD --new-key NEW

Seal every secret value of D (in D/${JOURNAL_FILE}, D/cdp.rej and D/cdp.rollouts) again with the
key in NEW (written, mode 0600, when NEW does not exist), and every secret still in clear too;
then record NEW as D's key. Each file is rewritten beside itself, fsync'd and renamed over it:
after a crash, run the same command again to finish. Stop the watcher first; start it again
with --secrets-key NEW. OLD may be left out for a directory that has no key yet.`,
  compact: `Usage: cdp compact --dir D [--schemas S] [--keep N]

Rewrite the journal D/${JOURNAL_FILE} as the configuration before its last N changes plus those
changes (default 1000), so that it stops growing; replaying it gives the same configuration,
revision and inbox position. Crash-safe: a temporary file is written and fsync'd, then renamed
over the journal. A running watcher compacts by itself (--compact-after); stop it first to
compact by hand.

Options:
  --keep N               changes to keep as history (default 1000; 0 keeps none)`,
  rollback: `Usage: cdp rollback --dir D [--schemas S] (--to REV | --last) [--dry-run]

Bring the configuration back to its state at revision REV (--last: undo the latest change).
cdp computes the change lines that undo every later change (keys that did not exist at REV go
back to their schema default) and appends them to D/${INBOX_FILE}, so the watcher validates,
journals and announces them like any other change. A rollback that the current schemas would
refuse is refused (exit 1) before anything is written, with the reason.

Options:
  --dry-run              print the lines without appending them`,
};
