#!/usr/bin/env bash
# Installs the Debian packages the integration tests and the benchmark need.
# Idempotent: packages already present are not fetched again, and nothing is
# done when every package is installed. Needs root on Debian/Ubuntu; anywhere
# else it prints what to install and exits 0 so that tests can skip (outside
# CI) or fail (under CI=true) with a message naming the package.
#
#   postfix          smtp-source for the load driver; the real MTA for later
#                    end-to-end tests. Installed as "No configuration": nothing
#                    of it runs.
#   swaks            the SMTP/LMTP client shown in README.
#   dovecot-core, dovecot-lmtpd
#                    the peer LMTP server the benchmark compares against.
#   spamassassin, spamd, spamc
#                    real SpamAssassin for the spam tests.
#   sa-compile       compiles SpamAssassin's body rules to native code when it
#                    is installed (re2c and the C compiler come with it) and
#                    loads them for every SpamAssassin on the host: spamd,
#                    `spamassassin` and our checkers alike. Verdicts and
#                    scores are the same; a check is ~8% cheaper. The peers'
#                    figures (../shared/peers) were measured with it, so the
#                    spam bench compares like with like.
#   policyd-weight, postgrey
#                    the peer policy servers the benchmark compares against.
#   lmdb-utils       mdb_stat/mdb_dump, handy to inspect ./var/db.
#   systemd          systemd-analyze, to verify the unit in docs/ (nothing of
#                    it is started).
#   strace           the durability tests watch the daemon's fsyncs with it.
#   mailman3         Mailman 3 core, the list manager the relay hands list
#                    posts to over LMTP; tests start their own instance in a
#                    temp directory. Its dbconfig questions are preseeded
#                    (SQLite under /var/lib/mailman3, no HyperKitty), so the
#                    install asks nothing; its service is stopped.
#   openssl          the STARTTLS tests make throwaway certificates with it.
#   spamass-milter   the peer milter the benchmark's milter part compares our
#                    site spam check against (it drives spamc → spamd); its
#                    service is stopped below, the bench starts its own.
#   prometheus       promtool, Prometheus's own reader of the text format: the
#                    metrics tests check the scrape with `promtool check
#                    metrics`; its server is stopped below, as the others are.
#   miltertest       OpenDKIM's milter test client (Lua scripts playing the
#                    MTA): the milter tests drive the example filter with it.
#   go-md2man        turns docs/man/*.md into the man pages `npm run package`
#                    puts in the Debian package (the install test builds it).
#   postgresql, redis-server
#                    the shared policy state engines (state.backend) and the
#                    central tables of `mailproc db sync`: the tests and the
#                    policy-state bench start their own instances on unix
#                    sockets in temp directories (PostgreSQL as the
#                    package's postgres user); the packages' own services
#                    are stopped below.
set -euo pipefail

PACKAGES=(postfix swaks dovecot-core dovecot-lmtpd spamassassin spamd spamc sa-compile policyd-weight postgrey lmdb-utils systemd strace mailman3 openssl prometheus miltertest go-md2man postgresql redis-server spamass-milter)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-os-packages: missing Debian packages: ${missing[*]}" >&2
  echo "install-os-packages: run as root on Debian: apt-get install ${missing[*]}" >&2
  exit 0
fi

echo "install-os-packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
debconf-set-selections <<'EOF'
postfix postfix/main_mailer_type select No configuration
mailman3 mailman3/dbconfig-install boolean true
mailman3 mailman3/database-type select sqlite3
mailman3 mailman3/config_hyperkitty boolean false
EOF
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages' own daemons are not wanted: tests start their own instances.
for svc in postfix dovecot spamd spamassassin policyd-weight postgrey mailman3 prometheus postgresql redis-server spamass-milter; do
  if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done
