#!/usr/bin/perl
# spam-checker.pl — per-user SpamAssassin checkers forked from one preloaded
# parent (see libexec/NOTES.md for the why and the measured memory).
#
# What it does. Started as root by the Node master. The parent loads and
# compiles SpamAssassin's site rules once, reading nothing of any user (its
# HOME is a private temp dir while it compiles, no user_prefs), warms the
# rules up on sample messages so lazily built structures exist before it
# forks, then on command forks ONE child per active user. The child drops to
# the user's uid/gid for good before it reads any user file, reads the user's
# ~/.spamassassin/user_prefs (score-only, as spamd does), keeps the user's
# Bayes database open between messages, and serves the SPAMD protocol (what
# the real spamc speaks) on a unix socket it creates (0600) at the path given.
# The compiled rules are shared with the parent copy-on-write.
#
# Control protocol: lines on the parent's stdin/stdout, TAB-separated fields.
#   parent -> master
#     ready     <parent pid> <SpamAssassin version>
#     started   <uid> <child pid>            right after a fork
#     listening <uid> <child pid>            the child's socket accepts
#     failed    <uid> <child pid or 0> <reason>
#     exited    <uid> <child pid> <wait status: "exit N" | "signal N (NAME)[, core dumped]">
#     error     <text>                       a bad command line or command
#   master -> parent
#     start <uid> <gid> <username> <home> <socket path> <sync seconds> <sync messages>
#     stop  <uid>
#   Every `started` pid gets exactly one `exited`, and before it exactly one
#   of `listening` or `failed`. `start` for a uid that already has a child:
#   the same parameters answer `started` again (then `listening` if it is
#   listening, else `listening`/`failed` follows in due course); different
#   parameters, or a child still stopping, answer `failed <uid> 0 <reason>`.
#   `stop` for a uid without a checker answers `error`. A stopped child ends
#   its request, syncs Bayes, removes its socket, exits 0 (`exited`).
#   stdin EOF, SIGTERM, SIGINT: TERM every child, wait --stop-timeout, KILL
#   the rest, exit 0. The parent dies with the master (PR_SET_PDEATHSIG).
#
# Options: --local-tests-only (the default) | --network; --max-size BYTES
# (default 10 MiB: a request over it is refused, not truncated); --read-timeout
# S (30: the whole request must arrive within it); --check-timeout S (300);
# --stop-timeout S (30: TERM, then KILL); --site-config DIR, --rules DIR
# (SpamAssassin's site and default rule directories); --verbose (one log line
# per request).
#
# SPAMD side: CHECK SYMBOLS REPORT REPORT_IFSPAM PROCESS HEADERS TELL PING
# SKIP from SPAMC/1.0 to 1.5, replies in spamd's formats headed SPAMD/1.5.
# `User:` must name this checker's user when present. TELL learns/forgets
# locally (Set/Remove: local, Message-class needed to Set); remote is ignored
# unless --network. `Compress:` is refused.
#
# How it fails. A bad command line: `error` then exit 64. SpamAssassin that
# will not load or compile: `error` then exit 1. A child that cannot start
# (no such uid, uid 0, privileges not dropped, socket not made): `failed`
# then `exited`; the parent carries on. A home that is missing or not owned
# by the user is NOT a failure: that child runs without user_prefs, Bayes and
# auto-welcomelist learning, and says so on stderr. Per connection a child
# answers the proper SPAMD error line (76 bad request, 65 message too big,
# 67 another User:, 79 timeout, 69 learning off, 70 SpamAssassin died) and closes; a request not complete within
# --read-timeout is dropped, so a half request never wedges the child. A
# check that overruns --check-timeout is answered 79 and the child exits
# (the master restarts it): its SpamAssassin state is not trusted after an
# interrupted check. A dead child's listening socket dies with it: nothing
# else holds that descriptor.
#
# Why it is safe. The parent is the only code that keeps root and it reads no
# user-controlled file. A child, before it touches any user file, closes
# every descriptor of the parent except its one-way status pipe (which is its
# stderr; stdin/stdout are /dev/null), leaves the session (no controlling
# terminal), sets its groups to exactly the user's gid, sets real, effective
# and saved gid then uid, verifies all of them (also in /proc, fs ids and
# groups included), verifies that root cannot be regained, makes itself
# non-dumpable (no ptrace, no /proc/PID/mem or environ for the user), and only
# then sets its parent-death signal (a credential change clears it) and
# checks that the parent is still there. What a child sends up the pipe is
# treated as untrusted text by the parent. Only unix sockets are used.

use strict;
use warnings;

use Config ();
use Errno qw(EAGAIN EINTR EPERM EWOULDBLOCK);
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK);
use File::Path ();
use File::Temp ();
use Getopt::Long ();
use IO::Handle ();
use IO::Socket::UNIX ();
use POSIX ();
use Socket qw(SOCK_STREAM);
use Time::HiRes ();

# SYS_* numbers for this architecture (h2ph output shipped with Debian's perl).
BEGIN { no warnings; require 'syscall.ph'; }

use constant {
  PR_SET_PDEATHSIG => 1,
  PR_GET_DUMPABLE  => 3,
  PR_SET_DUMPABLE  => 4,
  SPAMD_VERSION    => 'SPAMD/1.5',
  STATUS_MARK      => "\x01",       # status lines on a child's pipe; all else is log text
  MAX_HEADERS      => 255,          # as spamd
  MAX_LINE         => 8192,         # request line and each protocol header
  MAX_CONTROL_LINE => 16384,
  USER_PREFS_MAX   => 1024 * 1024,
};

# sysexits, as spamd names them in its replies
my %EX = (
  EX_OK => 0, EX_DATAERR => 65, EX_NOUSER => 67, EX_UNAVAILABLE => 69,
  EX_SOFTWARE => 70, EX_PROTOCOL => 76, EX_TIMEOUT => 79,
);

my %opt = (
  network         => 0,
  'max-size'      => 10 * 1024 * 1024,
  'read-timeout'  => 30,
  'check-timeout' => 300,
  'stop-timeout'  => 30,
  verbose         => 0,
);

my $CTL;            # the parent's control output (the master's pipe), never inherited
my $SA;             # the Mail::SpamAssassin object, compiled once in the parent
my ($SIG_R, $SIG_W);  # self-pipe: signal handlers write a byte, the select loop wakes
my %GOT;            # signals seen (TERM, CHLD)

###########################################################################
# parent

sub main {
  $0 = 'spam-checker';
  $SIG{PIPE} = 'IGNORE';
  parse_command_line();
  close_inherited_descriptors();
  open($CTL, '>&', \*STDOUT) or die "spam-checker: dup stdout: $!\n";
  $CTL->autoflush(1);
  # Anything printed to STDOUT by a library goes to the log, never into the
  # control stream.
  open(STDOUT, '>&', \*STDERR) or die "spam-checker: stdout to stderr: $!\n";
  STDERR->autoflush(1);
  umask 077;
  chdir '/';
  my $master = getppid();
  set_parent_death_signal();
  exit 0 if getppid() != $master;       # the master died before we could watch it

  # Helpers SpamAssassin may run get a known environment, not the master's.
  my %keep = map { $_ => $ENV{$_} } grep { defined $ENV{$_} } qw(TZ LANG LC_ALL LC_CTYPE LC_MESSAGES TMPDIR);
  %ENV = (%keep, PATH => '/usr/sbin:/usr/bin:/sbin:/bin');

  $SIG{__WARN__} = sub { my $m = $_[0]; chomp $m; print STDERR "spam-checker[$$]: $m\n" };
  my $t0 = Time::HiRes::time();
  my $version = eval { load_spamassassin() };
  if (!defined $version) {
    my $why = $@ || 'unknown error';
    chomp $why;
    emit('error', "cannot load SpamAssassin: $why");
    exit 1;
  }
  log_parent(sprintf('SpamAssassin %s rules compiled and warmed up in %.1f s (%s)',
    $version, Time::HiRes::time() - $t0, $SA->{local_tests_only} ? 'local tests only' : 'network tests on'));

  pipe($SIG_R, $SIG_W) or die "spam-checker: pipe: $!\n";
  nonblocking($SIG_R);
  nonblocking($SIG_W);
  $SIG{CHLD} = sub { $GOT{CHLD} = 1; syswrite($SIG_W, 'C') };
  $SIG{TERM} = $SIG{INT} = sub { $GOT{TERM} = 1; syswrite($SIG_W, 'T') };
  $SIG{HUP} = 'IGNORE';

  emit('ready', $$, $version);
  parent_loop();
}

sub parse_command_line {
  my @args = @ARGV;
  my @problems;
  my $local;
  local $SIG{__WARN__} = sub { my $m = $_[0]; chomp $m; push @problems, $m };
  Getopt::Long::Configure('no_ignore_case', 'no_auto_abbrev');
  my $ok = Getopt::Long::GetOptionsFromArray(\@args,
    'local-tests-only' => \$local,
    'network'          => \$opt{network},
    'max-size=i'       => \$opt{'max-size'},
    'read-timeout=f'   => \$opt{'read-timeout'},
    'check-timeout=f'  => \$opt{'check-timeout'},
    'stop-timeout=f'   => \$opt{'stop-timeout'},
    'site-config=s'    => \$opt{'site-config'},
    'rules=s'          => \$opt{rules},
    'verbose'          => \$opt{verbose},
  );
  push @problems, 'unexpected argument(s): ' . join(' ', @args) if @args;
  push @problems, '--local-tests-only and --network contradict each other' if $local && $opt{network};
  push @problems, "--max-size must be between 1 and 1073741824 bytes" if $opt{'max-size'} < 1 || $opt{'max-size'} > 1073741824;
  for my $t (qw(read-timeout check-timeout stop-timeout)) {
    push @problems, "--$t must be a positive number of seconds" unless $opt{$t} > 0;
  }
  for my $d (qw(site-config rules)) {
    push @problems, "--$d $opt{$d}: not a directory" if defined $opt{$d} && !-d $opt{$d};
  }
  return if $ok && !@problems;
  push @problems, 'bad option' unless @problems;
  print STDOUT join("\t", 'error', 'bad command line: ' . join('; ', map { sanitize($_) } @problems)), "\n";
  exit 64;
}

# Loads Mail::SpamAssassin, compiles the site rules as spamd does
# (compile_now with a throw-away HOME) and runs sample messages through every
# reply path, so that what SpamAssassin builds lazily exists before the fork
# and is shared rather than rebuilt in every child. Returns the version.
sub load_spamassassin {
  my $tmphome = File::Temp::tempdir('spam-checker-XXXXXXXX', TMPDIR => 1, CLEANUP => 0);
  my $ok = eval {
    mkdir("$tmphome/.spamassassin", 0700) or die "mkdir $tmphome/.spamassassin: $!\n";
    local $ENV{HOME} = $tmphome;
    require Mail::SpamAssassin;
    require Mail::SpamAssassin::PerMsgStatus;
    require Mail::SpamAssassin::PerMsgLearner;
    require Mail::SpamAssassin::Util;
    $SA = Mail::SpamAssassin->new({
      dont_copy_prefs      => 1,
      local_tests_only     => $opt{network} ? 0 : 1,
      require_rules        => 1,
      skip_prng_reseeding  => 1,     # each child reseeds after its fork
      home_dir_for_helpers => $tmphome,
      userprefs_filename   => "$tmphome/.spamassassin/user_prefs",
      rules_filename       => $opt{rules} || 0,
      site_rules_filename  => $opt{'site-config'} || 0,
    });
    # Sample messages must leave no trace: with the auto-welcomelist or TxRep
    # on, a check writes to their database, and an admin may have put that
    # at a global path (we are root here). Off while compiling and warming
    # up; the admin's values come back before any fork.
    $SA->init(0);
    my %off = (use_auto_welcomelist => 0, use_txrep => 0, bayes_auto_learn => 0);
    my %saved = map { $_ => [exists $SA->{conf}->{$_}, $SA->{conf}->{$_}] } keys %off;
    $SA->{conf}->{$_} = $off{$_} for keys %off;
    $SA->compile_now(0, 1);
    keep_eval_glue();
    warm_up();
    for my $k (keys %saved) {
      if ($saved{$k}[0]) { $SA->{conf}->{$k} = $saved{$k}[1] } else { delete $SA->{conf}->{$k} }
    }
    # Modules a child would otherwise load on its first learn or report.
    for my $m (qw(Mail::SpamAssassin::BayesStore::DBM DB_File Mail::SpamAssassin::Locker::UnixNFSSafe)) {
      eval "require $m; 1" or log_parent("preloading $m: $@");
    }
    if ($opt{network}) { require Mail::SpamAssassin::Reporter }
    # Forget every path computed under the throw-away HOME.
    delete $SA->{conf}->{sed_path_cache};
    $SA->finish_learner();
    $SA->call_plugins('prefork_init');
    1;
  };
  my $err = $@;
  File::Path::remove_tree($tmphome, { safe => 1 });
  die $err unless $ok;
  return Mail::SpamAssassin::Version();
}

# SpamAssassin gives every eval function of the rules (about 230 with the
# stock rules) a small dispatch method in PerMsgStatus, compiled by a string
# eval the first time a message needs it, and PerMsgStatus::finish undefines
# them all again: so every message compiles ~230 subs, 6-8% of a check here.
# The method only forwards to the plugin named in the message's own conf
# (conf->{eval_plugins}), so one definition is right for every message and
# every user; finish is wrapped to leave these methods defined, and
# register_plugin_eval_glue then finds them and compiles nothing. Nothing
# else that finish does changes. Were a SpamAssassin version to name these
# variables otherwise, the wrapper would find nothing to keep and checks
# would simply cost what they cost in spamd.
sub keep_eval_glue {
  no strict 'refs';
  no warnings 'once';
  return unless defined &Mail::SpamAssassin::PerMsgStatus::finish
    && defined &Mail::SpamAssassin::PerMsgStatus::register_plugin_eval_glue;
  my $finish = \&Mail::SpamAssassin::PerMsgStatus::finish;
  my $glue = \%Mail::SpamAssassin::PerMsgStatus::TEMPORARY_EVAL_GLUE_METHODS;
  my $temporary = \@Mail::SpamAssassin::PerMsgStatus::TEMPORARY_METHODS;
  no warnings 'redefine';
  *Mail::SpamAssassin::PerMsgStatus::finish = sub {
    @$temporary = grep { !exists $glue->{$_} } @$temporary;
    goto &$finish;
  };
}

sub warm_up {
  my $use_bayes_rules = $SA->{conf}->{use_bayes_rules};
  $SA->{conf}->{use_bayes_rules} = 0;     # no user state exists here
  for my $text (warm_up_messages()) {
    my $mail = $SA->parse(\$text, 0);
    my $status = Mail::SpamAssassin::PerMsgStatus->new($SA, $mail, { disable_auto_learning => 1 });
    $status->check();
    $status->set_tag('REMOTEHOSTNAME', 'localhost');
    $status->set_tag('REMOTEHOSTADDR', '127.0.0.1');
    my @keep = ($status->get_report(), $status->get_names_of_tests_hit(), $status->rewrite_mail(),
      Mail::SpamAssassin::Util::get_tag_value_for_score($status->get_score(), $status->get_required_score(), $status->is_spam()));
    $status->finish();
    $mail->finish();
  }
  $SA->{conf}->{use_bayes_rules} = $use_bayes_rules;
}

sub warm_up_messages {
  my $ham = <<'EOM';
Received: from mail.example.org (mail.example.org [192.0.2.10])
	by mx.example.net (Postfix) with ESMTPS id 4XYZ123
	for <alice@example.net>; Mon, 06 Jan 2025 10:00:00 +0000 (UTC)
From: Bob Example <bob@example.org>
To: Alice <alice@example.net>
Subject: Lunch on Thursday?
Date: Mon, 06 Jan 2025 10:59:58 +0100
Message-ID: <warm-up-ham@example.org>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b1"

--b1
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Hi Alice, shall we meet at noon? The agenda is at https://www.example.org/a=
genda and the caf=C3=A9 is near the station. Call me on +1 555 0100.

--b1
Content-Type: text/html; charset=utf-8

<html><body><p>Hi Alice, shall we meet at <b>noon</b>? The
<a href="https://www.example.org/agenda">agenda</a>.</p>
<img src="https://www.example.org/t.gif" width="1" height="1"></body></html>
--b1--
EOM
  my $spam = <<'EOM';
Received: from unknown (HELO bulk) (198.51.100.7)
	by mx.example.net with SMTP; Mon, 06 Jan 2025 10:00:00 +0000
From: "Prize Office" <winner@example.com>
To: undisclosed-recipients:;
Subject: You WON!!! Claim your prize now
Date: Mon, 06 Jan 2025 10:00:00 +0000
Message-ID: <warm-up-spam@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b2"

--b2
Content-Type: text/plain; charset=us-ascii

XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X
Click http://198.51.100.7/claim?id=1 to claim your FREE prize of $1,000,000!

--b2
Content-Type: application/octet-stream; name="prize.txt"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="prize.txt"

WW91IGhhdmUgd29uIGEgcHJpemUuCg==
--b2--
EOM
  return ($ham, $spam);
}

# The parent's event loop: commands on stdin, status from the children's
# pipes, signals through the self-pipe.
my (%CHILD, %PID_OF_UID);   # pid -> child record; uid -> pid
my $IN_BUF = '';

sub parent_loop {
  for (;;) {
    my $rin = '';
    vec($rin, fileno(STDIN), 1) = 1;
    vec($rin, fileno($SIG_R), 1) = 1;
    for my $c (values %CHILD) { vec($rin, fileno($c->{pipe}), 1) = 1 if $c->{pipe} }
    my $timeout = next_stop_deadline();
    $timeout = defined $timeout ? ($timeout > 0 ? $timeout : 0) : undef;
    my $n = select(my $rout = $rin, undef, undef, $timeout);
    drain_signal_pipe();
    reap_children() if delete $GOT{CHLD};
    shutdown_and_exit('SIGTERM') if $GOT{TERM};
    kill_overdue_children();
    next if $n <= 0;
    for my $pid (keys %CHILD) {
      my $c = $CHILD{$pid} or next;
      read_child_pipe($c) if $c->{pipe} && vec($rout, fileno($c->{pipe}), 1);
    }
    if (vec($rout, fileno(STDIN), 1)) {
      my $r = sysread(STDIN, $IN_BUF, 65536, length $IN_BUF);
      if (!defined $r) {
        next if $! == EAGAIN || $! == EINTR;
        shutdown_and_exit("stdin: $!");
      }
      while ((my $i = index($IN_BUF, "\n")) >= 0) {
        my $line = substr($IN_BUF, 0, $i + 1, '');
        $line =~ s/\r?\n\z//;
        handle_command($line);
      }
      if (length($IN_BUF) > MAX_CONTROL_LINE) {
        emit('error', 'command line too long (over ' . MAX_CONTROL_LINE . ' bytes): discarded');
        $IN_BUF = '';
      }
      shutdown_and_exit('stdin closed') if $r == 0;
    }
  }
}

sub handle_command {
  my ($line) = @_;
  return if $line eq '';
  my @f = split /\t/, $line, -1;
  my $cmd = shift @f;
  if ($cmd eq 'start') {
    return emit('error', 'start: expected 7 fields (uid gid username home socket sync-seconds sync-messages), got ' . scalar(@f)) if @f != 7;
    return start_child(@f);
  }
  if ($cmd eq 'stop') {
    return emit('error', 'stop: expected 1 field (uid), got ' . scalar(@f)) if @f != 1;
    my ($uid) = @f;
    return emit('error', "stop: bad uid \"$uid\"") unless $uid =~ /^\d{1,10}\z/;
    $uid += 0;
    my $pid = $PID_OF_UID{$uid};
    return emit('error', "stop: no checker runs for uid $uid") unless $pid;
    stop_child($CHILD{$pid});
    return;
  }
  emit('error', "unknown command \"$cmd\"");
}

sub start_child {
  my ($uid, $gid, $user, $home, $sock, $sync_s, $sync_m) = @_;
  return emit('error', "start: bad uid \"$uid\"") unless $uid =~ /^\d{1,10}\z/ && $uid < 4294967295;
  $uid += 0;                              # one spelling per uid in replies and in %PID_OF_UID
  my $fail = sub { emit('failed', $uid, 0, $_[0]) };
  return $fail->("bad gid \"$gid\"") unless $gid =~ /^\d{1,10}\z/ && $gid < 4294967295;
  return $fail->('refusing to run a checker as root (uid 0)') if $uid == 0;
  return $fail->('refusing to run a checker with gid 0') if $gid == 0;
  return $fail->('bad username') unless length($user) && length($user) <= 256 && $user !~ /[\x00-\x1f\x7f]/;
  return $fail->('home must be an absolute path') unless $home =~ m{\A/} && $home !~ /[\x00-\x1f\x7f]/;
  return $fail->('socket path must be an absolute path') unless $sock =~ m{\A/} && $sock !~ /[\x00-\x1f\x7f]/;
  return $fail->('socket path longer than 107 bytes') if length($sock) > 107;
  return $fail->("bad bayes sync seconds \"$sync_s\"") unless $sync_s =~ /^\d{1,9}\z/;
  return $fail->("bad bayes sync messages \"$sync_m\"") unless $sync_m =~ /^\d{1,9}\z/;
  return $fail->("no such uid $uid") unless defined getpwuid($uid);

  my $job = { uid => $uid + 0, gid => $gid + 0, user => $user, home => $home, sock => $sock,
              sync_seconds => $sync_s + 0, sync_messages => $sync_m + 0 };
  if (my $pid = $PID_OF_UID{$uid}) {
    my $c = $CHILD{$pid};
    return $fail->("the previous checker (pid $pid) is still stopping: start again after its exited line") if $c->{state} eq 'stopping';
    return $fail->("a checker (pid $pid) already runs for uid $uid with other parameters: stop it first")
      if join("\t", map { $c->{job}{$_} } sort keys %$job) ne join("\t", map { $job->{$_} } sort keys %$job);
    emit('started', $uid, $pid);
    emit('listening', $uid, $pid) if $c->{state} eq 'listening';
    return;
  }

  my ($r, $w);
  pipe($r, $w) or return $fail->("pipe: $!");
  # Signals stay blocked across the fork so that the child never runs the
  # parent's handlers (which write into the parent's self-pipe).
  my $mask = POSIX::SigSet->new(POSIX::SIGTERM(), POSIX::SIGINT(), POSIX::SIGCHLD(), POSIX::SIGHUP());
  my $old = POSIX::SigSet->new();
  POSIX::sigprocmask(POSIX::SIG_BLOCK(), $mask, $old);
  my $pid = fork();
  if (defined $pid && $pid == 0) {
    close $r;
    child_main($job, $w, $old);     # never returns
  }
  POSIX::sigprocmask(POSIX::SIG_SETMASK(), $old);
  close $w;
  if (!defined $pid) {
    close $r;
    return $fail->("fork: $!");
  }
  nonblocking($r);
  $CHILD{$pid} = { pid => $pid, uid => $uid, job => $job, pipe => $r, buf => '', state => 'starting' };
  $PID_OF_UID{$uid} = $pid;
  emit('started', $uid, $pid);
}

sub stop_child {
  my ($c) = @_;
  return unless $c;
  kill 'TERM', $c->{pid};
  $c->{state} = 'stopping';
  $c->{stop_deadline} //= Time::HiRes::time() + $opt{'stop-timeout'};
}

sub next_stop_deadline {
  my @d = map { $_->{stop_deadline} } grep { defined $_->{stop_deadline} && !$_->{killed} } values %CHILD;
  return undef unless @d;
  my ($min) = sort { $a <=> $b } @d;
  return $min - Time::HiRes::time();
}

sub kill_overdue_children {
  my $now = Time::HiRes::time();
  for my $c (values %CHILD) {
    next unless defined $c->{stop_deadline} && !$c->{killed} && $now >= $c->{stop_deadline};
    log_parent("checker pid $c->{pid} (uid $c->{uid}) did not stop within $opt{'stop-timeout'} s: SIGKILL");
    kill 'KILL', $c->{pid};
    $c->{killed} = 1;
  }
}

# A child's pipe carries its stderr: log text, and status lines marked with
# STATUS_MARK. Everything is untrusted text (the child runs as the user).
sub read_child_pipe {
  my ($c) = @_;
  for (;;) {
    my $r = sysread($c->{pipe}, $c->{buf}, 65536, length $c->{buf});
    if (!defined $r) {
      last if $! == EAGAIN || $! == EWOULDBLOCK;
      next if $! == EINTR;
      $r = 0;
    }
    while ((my $i = index($c->{buf}, "\n")) >= 0) {
      child_line($c, substr($c->{buf}, 0, $i + 1, ''));
    }
    if (length($c->{buf}) > 65536) {
      child_line($c, substr($c->{buf}, 0, 4096, '') . ' [...]');
      $c->{buf} = '';
    }
    if ($r == 0) {
      child_line($c, $c->{buf}) if length $c->{buf};
      $c->{buf} = '';
      close $c->{pipe};
      delete $c->{pipe};
      last;
    }
  }
}

sub child_line {
  my ($c, $line) = @_;
  $line =~ s/\r?\n\z//;
  if (substr($line, 0, 1) eq STATUS_MARK) {
    my ($what, $reason) = split /\t/, substr($line, 1), 2;
    if ($what eq 'listening' && $c->{state} eq 'starting') {
      $c->{state} = 'listening';
      emit('listening', $c->{uid}, $c->{pid});
      return;
    }
    if ($what eq 'failed' && !$c->{answered} && $c->{state} eq 'starting') {
      $c->{answered} = 1;
      emit('failed', $c->{uid}, $c->{pid}, substr(sanitize($reason // 'unknown reason'), 0, 1000));
      return;
    }
  }
  $line = sanitize($line);
  $line = substr($line, 0, 2000) . ' [...]' if length($line) > 2000;
  print STDERR "spam-checker[$c->{pid}] uid $c->{uid}: $line\n";
}

sub reap_children {
  while ((my $pid = waitpid(-1, POSIX::WNOHANG())) > 0) {
    my $status = $?;
    my $c = delete $CHILD{$pid} or next;
    delete $PID_OF_UID{$c->{uid}} if ($PID_OF_UID{$c->{uid}} // 0) == $pid;
    read_child_pipe($c) if $c->{pipe};    # its last words come before `exited`
    if ($c->{pipe}) { close $c->{pipe}; delete $c->{pipe} }
    my $how = describe_wait($status);
    if ($c->{state} eq 'starting' && !$c->{answered}) {
      emit('failed', $c->{uid}, $pid, "exited before listening ($how)");
    }
    emit('exited', $c->{uid}, $pid, $how);
  }
}

sub describe_wait {
  my ($st) = @_;
  return 'exit ' . POSIX::WEXITSTATUS($st) if POSIX::WIFEXITED($st);
  if (POSIX::WIFSIGNALED($st)) {
    my $sig = POSIX::WTERMSIG($st);
    my $name = (split ' ', $Config::Config{sig_name})[$sig] // '?';
    return "signal $sig ($name)" . ($st & 128 ? ', core dumped' : '');
  }
  return "status $st";
}

sub drain_signal_pipe {
  my $junk;
  1 while sysread($SIG_R, $junk, 256) ;
}

my $SHUTTING_DOWN;
sub shutdown_and_exit {
  my ($why) = @_;
  exit 0 if $SHUTTING_DOWN++;
  log_parent("stopping ($why): " . scalar(keys %CHILD) . ' checker(s) to stop');
  stop_child($_) for values %CHILD;
  my $deadline = Time::HiRes::time() + $opt{'stop-timeout'};
  my $killed_at;
  while (%CHILD) {
    my $left = ($killed_at ? $killed_at + 5 : $deadline) - Time::HiRes::time();
    if ($left <= 0) {
      last if $killed_at;                 # a process KILL cannot end: give up waiting
      log_parent('checker(s) ' . join(' ', sort keys %CHILD) . " did not stop within $opt{'stop-timeout'} s: SIGKILL");
      kill 'KILL', keys %CHILD;
      $_->{killed} = 1 for values %CHILD;
      $killed_at = Time::HiRes::time();
      next;
    }
    my $rin = '';
    vec($rin, fileno($SIG_R), 1) = 1;
    for my $c (values %CHILD) { vec($rin, fileno($c->{pipe}), 1) = 1 if $c->{pipe} }
    my $n = select(my $rout = $rin, undef, undef, $left > 0.2 ? 0.2 : $left);
    drain_signal_pipe();
    if ($n > 0) {
      for my $c (values %CHILD) { read_child_pipe($c) if $c->{pipe} && vec($rout, fileno($c->{pipe}), 1) }
    }
    delete $GOT{CHLD};
    reap_children();
  }
  exit 0;
}

sub emit {
  my $line = join("\t", map { sanitize(defined $_ ? "$_" : '') } @_) . "\n";
  my $off = 0;
  while ($off < length $line) {
    my $w = syswrite($CTL // \*STDOUT, $line, length($line) - $off, $off);
    if (!defined $w) {
      next if $! == EINTR;
      # The master is gone: nobody to report to. Stop the children and leave.
      shutdown_and_exit("control output: $!") unless $SHUTTING_DOWN;
      return;
    }
    $off += $w;
  }
}

sub log_parent { my $m = sanitize($_[0]); print STDERR "spam-checker[$$]: $m\n" }

###########################################################################
# child: runs as root only until drop_privileges()

my %U;        # this child's user and settings
my %SYNC;     # Bayes journal sync bookkeeping
my ($LISTENER, $SOCK_ID);
my $EXIT_AFTER_CONNECTION;

sub child_main {
  my ($job, $status_w, $sigmask) = @_;
  my $parent = getppid();
  my $ok = eval {
    %U = %$job;
    $0 = "spam-checker [$U{user}]";
    for my $s (qw(TERM INT HUP CHLD USR1 USR2 ALRM)) { $SIG{$s} = 'DEFAULT' }
    $SIG{PIPE} = 'IGNORE';
    %GOT = ();
    isolate_descriptors($status_w);
    POSIX::setsid();                # no controlling terminal, own process group
    # A fresh self-pipe for this process (the parent's was closed above).
    pipe($SIG_R, $SIG_W) or die "pipe: $!\n";
    nonblocking($SIG_R);
    nonblocking($SIG_W);
    $SIG{TERM} = $SIG{INT} = sub { $GOT{TERM} = 1; syswrite($SIG_W, 'T') };
    $SIG{HUP} = 'IGNORE';
    POSIX::sigprocmask(POSIX::SIG_SETMASK(), $sigmask);
    $SIG{__WARN__} = sub { my $m = $_[0]; chomp $m; child_log($m) };

    drop_privileges($U{uid}, $U{gid});
    prctl(PR_SET_PDEATHSIG, POSIX::SIGTERM()) == 0 or die "prctl(PR_SET_PDEATHSIG): $!\n";
    if (getppid() != $parent) { POSIX::_exit(0) }   # the parent died before we watched it

    my $t0 = Time::HiRes::time();
    setup_user();
    open_socket();
    status_line('listening');
    child_log(sprintf('listening on %s as uid %d gid %d, ready in %.2f s (%s)', $U{sock}, $U{uid}, $U{gid},
      Time::HiRes::time() - $t0, $U{learning} ? "Bayes in $U{sadir}" : 'no learning'));
    1;
  };
  if (!$ok) {
    my $why = $@ || 'unknown error';
    chomp $why;
    status_line('failed', $why);
    POSIX::_exit(1);
  }
  my $code = eval { serve(); 0 } // do { my $e = $@; chomp $e; child_log("fatal: $e"); 70 };
  finish_child();
  POSIX::_exit($code);
}

# Leaves the child with exactly: fd 0 and 1 on /dev/null, fd 2 on the status
# pipe. Every other descriptor the root parent had (its control pipes, the
# other children's pipes, its self-pipe, anything a library opened) is gone
# before the uid changes.
sub isolate_descriptors {
  my ($status_w) = @_;
  for my $c (values %CHILD) { close $c->{pipe} if $c->{pipe} }
  %CHILD = ();
  %PID_OF_UID = ();
  close $CTL if $CTL;
  undef $CTL;
  close $SIG_R if $SIG_R;
  close $SIG_W if $SIG_W;
  open(STDIN, '<', '/dev/null') or die "stdin: $!\n";
  open(STDOUT, '>', '/dev/null') or die "stdout: $!\n";
  open(STDERR, '>&', $status_w) or die "stderr: $!\n";
  STDERR->autoflush(1);
  close $status_w;
  # Descriptors not known by name: put /dev/null on their number rather than
  # closing it, so that a stale Perl handle somewhere can never close a
  # socket that later reuses the number.
  opendir(my $d, '/proc/self/fd') or die "cannot list /proc/self/fd: $!\n";
  my @fds = grep { /^\d+\z/ && $_ > 2 } readdir($d);
  closedir $d;
  open(my $null, '<', '/dev/null') or die "/dev/null: $!\n";
  for my $fd (@fds) {
    next if $fd == fileno($null);
    next unless defined POSIX::fstat($fd);      # the directory handle, closed since
    defined POSIX::dup2(fileno($null), $fd) or die "dup2 over fd $fd: $!\n";
  }
  close $null;
}

sub status_line { my $l = STATUS_MARK . join("\t", map { sanitize($_) } @_) . "\n"; syswrite(STDERR, $l) }
sub child_log { my $l = sanitize($_[0]); syswrite(STDERR, "$l\n") }

sub prctl {
  my ($op, $arg) = @_;
  return syscall(SYS_prctl(), $op + 0, ($arg // 0) + 0, 0, 0, 0);
}

# Irreversibly becomes uid/gid: supplementary groups = just gid, then real,
# effective and saved gid, then uid. Verified afterwards, including that root
# cannot be regained; any doubt dies (the child reports `failed` and exits).
sub drop_privileges {
  my ($uid, $gid) = map { $_ + 0 } @_;     # numeric: syscall() passes strings as pointers
  die "refusing to run as root\n" if $uid == 0 || $gid == 0;
  if ($> == 0) {
    my $list = pack('L', $gid);             # a gid_t array of one; a variable, since syscall() may write to it
    syscall(SYS_setgroups(), 1, $list) == 0 or die "setgroups($gid): $!\n";
  }
  syscall(SYS_setresgid(), $gid, $gid, $gid) == 0 or die "setresgid($gid): $!\n";
  syscall(SYS_setresuid(), $uid, $uid, $uid) == 0 or die "setresuid($uid): $!\n";

  my @ru = getres(SYS_getresuid());
  my @rg = getres(SYS_getresgid());
  die "uids are (@ru) after setresuid($uid)\n" if grep { $_ != $uid } @ru;
  die "gids are (@rg) after setresgid($gid)\n" if grep { $_ != $gid } @rg;
  die "\$< \$> are $< $> after setresuid($uid)\n" if $< != $uid || $> != $uid;
  my ($rgid) = split ' ', $(;
  my ($egid, @groups) = split ' ', $);
  die "\$( \$) are '$(' '$)' after setresgid($gid)\n" if $rgid != $gid || $egid != $gid || grep { $_ != $gid } @groups;
  open(my $st, '<', '/proc/self/status') or die "cannot read /proc/self/status: $!\n";
  my %ids;
  while (<$st>) { $ids{$1} = [split ' ', $2 // ''] if /^(Uid|Gid|Groups):\s*(.*)$/ }
  close $st;
  die "/proc/self/status Uid: @{$ids{Uid} || []}\n" if @{$ids{Uid} || []} != 4 || grep { $_ != $uid } @{$ids{Uid}};
  die "/proc/self/status Gid: @{$ids{Gid} || []}\n" if @{$ids{Gid} || []} != 4 || grep { $_ != $gid } @{$ids{Gid}};
  die "/proc/self/status Groups: @{$ids{Groups} || []}\n" if grep { $_ != $gid } @{$ids{Groups} || []};
  # No way back to root.
  for my $try (
    ['setresuid(0,0,0)', sub { syscall(SYS_setresuid(), 0, 0, 0) }],
    ['setresuid(-1,0,-1)', sub { syscall(SYS_setresuid(), -1, 0, -1) }],
    ['setresgid(0,0,0)', sub { syscall(SYS_setresgid(), 0, 0, 0) }],
    ['setgroups(0)', sub { syscall(SYS_setgroups(), 0, 0) }],
  ) {
    my $r = $try->[1]->();
    die "$try->[0] succeeded after dropping privileges\n" if $r != -1;
    die "$try->[0] failed with '$!', not EPERM\n" if $! != EPERM;
  }
  # A uid change already cleared the dumpable flag when fs.suid_dumpable is
  # 0; set it explicitly so the user cannot ptrace this process (or read its
  # /proc/PID/mem, environ) whatever the sysctl says.
  prctl(PR_SET_DUMPABLE, 0) == 0 or die "prctl(PR_SET_DUMPABLE): $!\n";
  die "still dumpable\n" if prctl(PR_GET_DUMPABLE, 0) != 0;
}

sub getres {
  my ($nr) = @_;
  my ($r, $e, $s) = ("\0" x 4, "\0" x 4, "\0" x 4);
  syscall($nr, $r, $e, $s) == 0 or die "getres*id: $!\n";
  return map { unpack('L', $_) } $r, $e, $s;
}

# Runs as the user. The home counts only if it is a directory owned by the
# uid; then ~/.spamassassin (made 0700 if missing) holds user_prefs, Bayes
# and the auto-welcomelist. Otherwise: site settings only, no learning.
sub setup_user {
  srand();
  my $conf = $SA->{conf};
  $conf->{allow_user_rules} = 0;
  my $why;
  my @h = stat($U{home});
  if (!@h) { $why = "home $U{home}: $!" }
  elsif (!-d _) { $why = "home $U{home} is not a directory" }
  elsif ($h[4] != $U{uid}) { $why = "home $U{home} is owned by uid $h[4], not $U{uid}" }
  else {
    my $sadir = "$U{home}/.spamassassin";
    if (!-e $sadir && !mkdir($sadir, 0700)) { $why = "cannot create $sadir: $!" }
    else {
      my @s = stat($sadir);
      if (!@s || !-d _) { $why = "$sadir is not a directory" }
      elsif ($s[4] != $U{uid}) { $why = "$sadir is owned by uid $s[4], not $U{uid}" }
      else { $U{sadir} = $sadir }
    }
  }
  $ENV{HOME} = $U{home};
  $ENV{USER} = $ENV{LOGNAME} = $U{user};
  if ($U{sadir}) {
    $U{learning} = 1;
    $SA->{home_dir_for_helpers} = $U{home};
    read_user_prefs("$U{sadir}/user_prefs");
    # Whatever the site config says, this user's state lives in their home,
    # is written to the journal, and is synced on our schedule only (never in
    # the middle of a check).
    $conf->{bayes_path} = "$U{sadir}/bayes";
    $conf->{auto_welcomelist_path} = "$U{sadir}/auto-welcomelist";
    $conf->{bayes_learn_to_journal} = 1;
    $conf->{bayes_journal_max_size} = 0;
    $SA->signal_user_changed({ username => $U{user}, user_dir => $U{home}, userstate_dir => $U{sadir} });
  } else {
    $U{learning} = 0;
    $U{why} = $why;
    $SA->{home_dir_for_helpers} = undef;
    $conf->{use_bayes} = 0;
    $conf->{bayes_auto_learn} = 0;
    $conf->{use_auto_welcomelist} = 0;
    $conf->{use_txrep} = 0;
    $SA->signal_user_changed({ username => $U{user} });
    child_log("$why: running without user_prefs, Bayes and auto-welcomelist learning");
  }
  $SA->init(1);                               # per-process reinit (DNS resolver ids)
  $SA->call_plugins('spamd_child_init');
  $SA->init_learner({ caller_will_untie => 1, learn_to_journal => 1, opportunistic_expire_check_only => 1 });
  refresh_score_set();
  $U{bayes_sig} = bayes_signature();
  %SYNC = (pending => 0, first => undef);
}

# Score-only, as spamd reads it. Bounded: a FIFO would block the start and
# a huge file would bloat this user's checker, so only a regular file of at
# most USER_PREFS_MAX bytes is read; anything else is ignored with a log line.
sub read_user_prefs {
  my ($path) = @_;
  my @st = stat($path);
  return unless @st;                                    # no prefs: site settings
  return child_log("$path is not a regular file: ignored") unless -f _;
  return child_log("$path is larger than " . USER_PREFS_MAX . ' bytes: ignored') if $st[7] > USER_PREFS_MAX;
  $SA->read_scoreonly_config($path);
}

sub open_socket {
  my $path = $U{sock};
  if (lstat($path)) {
    die "$path exists and is not a socket\n" unless -S _;
    unlink($path) or die "cannot remove the old socket $path: $!\n";
  }
  my $old = umask(0177);
  $LISTENER = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $path, Listen => 16);
  my $err = $!;
  umask($old);
  die "cannot listen on $path: $err\n" unless $LISTENER;
  my @st = lstat($path);
  die "$path vanished after bind\n" unless @st && -S _;
  die sprintf("%s has mode %04o, not 0600\n", $path, $st[2] & 07777) if ($st[2] & 07777) != 0600;
  die "$path is owned by uid $st[4]\n" if $st[4] != $U{uid};
  $SOCK_ID = "$st[0]:$st[1]";
  nonblocking($LISTENER);
}

sub serve {
  for (;;) {
    last if $GOT{TERM} || $EXIT_AFTER_CONNECTION;
    my $rin = '';
    vec($rin, fileno($LISTENER), 1) = 1;
    vec($rin, fileno($SIG_R), 1) = 1;
    my $timeout = sync_due_in();
    my $n = select(my $rout = $rin, undef, undef, $timeout);
    drain_signal_pipe();
    if ($n > 0 && vec($rout, fileno($LISTENER), 1)) {
      my $c = $LISTENER->accept();
      if ($c) {
        eval { serve_connection($c); 1 } or do { my $e = $@; chomp $e; child_log("connection: $e") };
        close $c;
        alarm 0;
      }
    }
    sync_bayes('timer') if $SYNC{pending} && defined $timeout && sync_due_in() <= 0;
  }
}

sub finish_child {
  eval {
    sync_bayes('exit') if $U{learning};
    $SA->finish_learner();
    1;
  } or do { my $e = $@; chomp $e; child_log("at exit: $e") };
  if ($LISTENER && $SOCK_ID) {
    # Remove our socket, not something the user put in its place.
    my @st = lstat($U{sock});
    unlink($U{sock}) if @st && "$st[0]:$st[1]" eq $SOCK_ID;
  }
}

###########################################################################
# child: one SPAMD connection

sub serve_connection {
  my ($c) = @_;
  nonblocking($c);
  my $t0 = Time::HiRes::time();
  my $in = { fh => $c, buf => '', deadline => $t0 + $opt{'read-timeout'} };

  my ($line, $err) = read_line($in);
  return input_error($c, $err, 'before the request line') unless defined $line;
  $line =~ s/\r?\n\z//;
  my ($method, $version) = $line =~ /^(PROCESS|CHECK|SYMBOLS|REPORT|REPORT_IFSPAM|HEADERS|TELL|PING|SKIP) SPAMC\/(\d{1,3}\.\d{1,3})\z/;
  return reply_error($c, 'EX_PROTOCOL', 'Bad header line: ' . printable($line)) unless $method;

  my %h = (message_class => '');
  my $want_headers = $method eq 'TELL' || (($method eq 'PING' || $method eq 'SKIP') ? $version >= 1.5 : $version > 1.0);
  if ($want_headers) {
    return unless read_headers($c, $in, \%h);
  }
  return if $method eq 'SKIP';
  return send_reply($c, SPAMD_VERSION . " $EX{EX_OK} PONG\r\n") if $method eq 'PING';

  if (defined $h{length} && $h{length} > $opt{'max-size'}) {
    return too_big($c, $in, $h{length});
  }
  my $body;
  if (defined $h{length}) {
    my $st;
    ($body, $st) = read_exactly($in, $h{length});
    if (!defined $body) {
      return input_error($c, $st, 'in the message') unless $st eq 'eof';
      return reply_error($c, 'EX_PROTOCOL', "Bad header line: (Content-Length mismatch: Expected $h{length} bytes, got " . length($in->{buf}) . ' bytes)');
    }
  } else {
    my $st;
    ($body, $st) = read_to_eof($in, $opt{'max-size'});
    return too_big($c, $in, undef) if !defined $body && $st eq 'toobig';
    return input_error($c, $st, 'in the message') unless defined $body;
  }

  bayes_follow_external_changes();
  my $deadline = $t0 + $opt{'check-timeout'};
  my $ok = eval {
    Mail::SpamAssassin::Util::trap_sigalrm_fully(sub { die "checker processing timeout\n" });
    alarm(int($opt{'check-timeout'}) + 10);
    if ($method eq 'TELL') { do_tell($c, $version, \%h, \$body, $deadline) }
    else { do_check($c, $method, $version, \$body, $deadline, $t0) }
    alarm 0;
    1;
  };
  alarm 0;
  if (!$ok) {
    my $e = $@;
    chomp $e;
    if ($e =~ /checker processing timeout/) {
      reply_error($c, 'EX_TIMEOUT', "Timeout: ($opt{'check-timeout'} second timeout while trying to $method)");
      child_log("$method overran $opt{'check-timeout'} s: exiting so that a fresh checker takes over");
      $EXIT_AFTER_CONNECTION = 1;
    } else {
      reply_error($c, 'EX_SOFTWARE', "Software error: $method failed");
      child_log("$method failed: $e");
    }
    release_bayes_lock();
    return;
  }
  after_message();
}

sub read_headers {
  my ($c, $in, $h) = @_;
  for (1 .. MAX_HEADERS + 1) {
    my ($line, $err) = read_line($in);
    if (!defined $line) {
      input_error($c, $err, 'in the request headers');
      return 0;
    }
    $line =~ s/\r?\n\z//;
    return 1 if $line eq '';
    my ($name, $value) = split /:\s*/, $line, 2;
    my $bad = sub { reply_error($c, 'EX_PROTOCOL', "Bad header line: ($_[0])"); 0 };
    return $bad->("header not in 'Name: value' format") unless defined $value;
    $name = lc $name;    # spamd matches exact case; spamc sends these spellings
    if ($name eq 'content-length') {
      return $bad->('Content-Length contains non-numeric bytes') unless $value =~ /^\d{1,15}\z/;
      $h->{length} = $value + 0;
    } elsif ($name eq 'user') {
      return $bad->('User header contains control chars') if $value =~ /[\x00-\x1f\x7f]/;
      if ($value ne $U{user}) {
        my $uid = (getpwnam($value))[2];
        if (!defined $uid || $uid != $U{uid}) {
          reply_error($c, 'EX_NOUSER', 'User unknown: this checker serves only ' . printable($U{user}));
          return 0;
        }
      }
    } elsif ($name eq 'message-class') {
      return $bad->('Message-class header contains invalid class') unless $value =~ /^(spam|ham)\z/i;
      $h->{message_class} = lc $value;
    } elsif ($name eq 'set') {
      $h->{set_local} = $value =~ /local/i ? 1 : 0;
      $h->{set_remote} = $value =~ /remote/i ? 1 : 0;
    } elsif ($name eq 'remove') {
      $h->{remove_local} = $value =~ /local/i ? 1 : 0;
      $h->{remove_remote} = $value =~ /remote/i ? 1 : 0;
    } elsif ($name eq 'compress') {
      return $bad->('compression not supported by this checker: send the message uncompressed');
    }
    # other headers: ignored, as spamd does
  }
  reply_error($c, 'EX_PROTOCOL', 'Bad header line: (too many headers)');
  return 0;
}

sub do_check {
  my ($c, $method, $version, $body, $deadline, $t0) = @_;
  my $mail = $SA->parse($body, 0, { master_deadline => $deadline });
  my $status = Mail::SpamAssassin::PerMsgStatus->new($SA, $mail);
  $status->check();

  my $is_spam = $status->is_spam();
  my $score = Mail::SpamAssassin::Util::get_tag_value_for_score($status->get_score(), $status->get_required_score(), $is_spam);
  my $threshold = sprintf('%2.1f', $status->get_required_score());
  my $verdict = $method eq 'REPORT_IFSPAM' ? ($is_spam ? 'Yes' : 'No') : ($is_spam ? 'True' : 'False');
  my $spamhdr = "Spam: $verdict ; $score / $threshold";
  my $ok = SPAMD_VERSION . " $EX{EX_OK} EX_OK\r\n";
  my $reply;
  if ($method eq 'PROCESS' || $method eq 'HEADERS') {
    $status->set_tag('REMOTEHOSTNAME', 'localhost');
    $status->set_tag('REMOTEHOSTADDR', '127.0.0.1');
    my $msg = $status->rewrite_mail();
    $msg =~ s/(\015?\012\015?\012).*$/$1/s if $method eq 'HEADERS';
    if ($version >= 1.3) { $reply = $ok . 'Content-length: ' . length($msg) . "\r\n$spamhdr\r\n\r\n$msg" }
    elsif ($version >= 1.2) { $reply = $ok . 'Content-length: ' . length($msg) . "\r\n\r\n$msg" }
    else { $reply = "SPAMD/1.0 $EX{EX_OK} EX_OK\r\n$msg" }
  } elsif ($method eq 'CHECK') {
    $reply = "$ok$spamhdr\r\n\r\n";
  } else {
    my $text = '';
    if ($method eq 'REPORT' || ($method eq 'REPORT_IFSPAM' && $is_spam)) { $text = $status->get_report() }
    elsif ($method eq 'SYMBOLS') { $text = $status->get_names_of_tests_hit(); $text .= "\r\n" if $version < 1.3 }
    $reply = $version >= 1.3 ? $ok . 'Content-length: ' . length($text) . "\r\n$spamhdr\r\n\r\n$text"
                             : "$ok$spamhdr\r\n\r\n$text";
  }
  send_reply($c, $reply);
  if ($opt{verbose}) {
    my $id = printable($mail->get_pristine_header('Message-Id') // '(no id)');
    $id =~ s/\s+//g;
    child_log(sprintf('%s %s: %s (%s/%s) in %.1f s, %d bytes, autolearn=%s', $method, $id,
      $is_spam ? 'spam' : 'clean', $score, $threshold, Time::HiRes::time() - $t0, length($$body),
      $status->get_autolearn_status()));
  }
  $SYNC{expire} = 1 if $status->{bayes_expiry_due};
  $status->finish();
  $mail->finish();
}

sub do_tell {
  my ($c, $version, $h, $body, $deadline) = @_;
  if (!$U{learning}) {
    return reply_error($c, 'EX_UNAVAILABLE', "Service Unavailable: learning is off for this user ($U{why})");
  }
  if ($h->{set_local} && $h->{remove_local}) {
    return reply_error($c, 'EX_PROTOCOL', 'Bad header line: (Unable to set local and remove local in the same operation.)');
  }
  if ($h->{set_remote} && $h->{remove_remote}) {
    return reply_error($c, 'EX_PROTOCOL', 'Bad header line: (Unable to set remote and remove remote in the same operation.)');
  }
  if (($h->{set_local} || $h->{set_remote}) && !$h->{message_class}) {
    return reply_error($c, 'EX_PROTOCOL', 'Bad header line: (Set needs a Message-class header: spam or ham)');
  }
  my $mail = $SA->parse($body, 0, { master_deadline => $deadline });
  if ($mail->get_header('X-Spam-Checker-Version')) {
    my $clean = $SA->parse($SA->remove_spamassassin_markup($mail), 1, { master_deadline => $deadline });
    $mail->finish();
    $mail = $clean;
  }
  my (@did_set, @did_remove);
  if ($SA->{bayes_scanner} && $SA->{conf}->{bayes_learn_during_report}) {
    if ($h->{set_local}) {
      my $l = $SA->learn($mail, undef, $h->{message_class} eq 'spam' ? 1 : 0, 0);
      push @did_set, 'local' if $l->did_learn();
      $l->finish();
    }
    if ($h->{remove_local}) {
      my $l = $SA->learn($mail, undef, undef, 1);
      push @did_remove, 'local' if $l->did_learn();
      $l->finish();
    }
  }
  if ($h->{set_remote} || $h->{remove_remote}) {
    if ($opt{network}) {
      my $r = Mail::SpamAssassin::Reporter->new($SA, $mail);
      push @did_set, 'remote' if $h->{set_remote} && $r->report();
      push @did_remove, 'remote' if $h->{remove_remote} && $r->revoke();
    } else {
      child_log('TELL: remote report/revoke ignored (network tests are off)');
    }
  }
  my $reply = SPAMD_VERSION . " $EX{EX_OK} EX_OK\r\n";
  $reply .= 'DidSet: ' . join(',', @did_set) . "\r\n" if @did_set;
  $reply .= 'DidRemove: ' . join(',', @did_remove) . "\r\n" if @did_remove;
  send_reply($c, "$reply\r\n");
  child_log('TELL: ' . (@did_set ? 'set ' . join(',', @did_set) . ' ' : '') . (@did_remove ? 'removed ' . join(',', @did_remove) : '')
    . (@did_set || @did_remove ? '' : 'nothing done')) if $opt{verbose};
  $mail->finish();
}

###########################################################################
# child: Bayes, kept open between messages

# The Bayes database stays tied read-only between messages (SpamAssassin's
# learn_caller_will_untie). Learning goes to the journal; the journal is
# synced into the database every sync-messages messages or sync-seconds
# after the first unsynced one, whichever comes first (either 0: after every
# message), and at exit. A write lock is never kept between messages.
sub after_message {
  return unless $U{learning};
  $SYNC{pending}++;
  $SYNC{first} //= Time::HiRes::time();
  if ($SYNC{expire}) {
    delete $SYNC{expire};
    eval { $SA->rebuild_learner_caches(); 1 } or child_log("Bayes expiry: $@");
    $SYNC{pending} = 0;
    $SYNC{first} = undef;
    release_bayes_lock();
    refresh_score_set();
  } elsif ($U{sync_seconds} == 0 || $U{sync_messages} == 0 || $SYNC{pending} >= $U{sync_messages}
           || Time::HiRes::time() - $SYNC{first} >= $U{sync_seconds}) {
    sync_bayes('due');
  } else {
    release_bayes_lock();
  }
  $U{bayes_sig} = bayes_signature();
}

sub sync_due_in {
  return undef unless $U{learning} && $SYNC{pending} && defined $SYNC{first};
  my $left = $SYNC{first} + $U{sync_seconds} - Time::HiRes::time();
  return $left > 0 ? $left : 0;
}

sub sync_bayes {
  my ($why) = @_;
  return unless $U{learning} && $SA->{bayes_scanner};
  eval { $SA->{bayes_scanner}->sync(1, 0); 1 } or do { my $e = $@; chomp $e; child_log("Bayes journal sync ($why): $e") };
  $SYNC{pending} = 0;
  $SYNC{first} = undef;
  release_bayes_lock();
  refresh_score_set();
  $U{bayes_sig} = bayes_signature();
}

sub bayes_store {
  return undef unless $SA->{bayes_scanner};
  for my $p ($SA->get_loaded_plugins_list()) {
    return $p->{store} if ref($p) && $p->isa('Mail::SpamAssassin::Plugin::Bayes') && ref($p->{store});
  }
  return undef;
}

# A sync, an expiry, or a first learn (which creates the database) ties the
# database read-write under a lock; keeping that between messages would lock
# out the user's own sa-learn. The read-only tie stays.
sub release_bayes_lock {
  my $store = bayes_store();
  if (!$store || !$store->can('db_writable')) { $SA->finish_learner(); return }
  $store->untie_db() if $store->db_writable();
}

# The user may run sa-learn behind our back: a read-only tie would then see a
# stale database. Re-tie when the token file is not the one we last saw.
sub bayes_follow_external_changes {
  return unless $U{learning};
  my $sig = bayes_signature();
  return if $sig eq $U{bayes_sig};
  $SA->finish_learner();
  refresh_score_set();
  $U{bayes_sig} = bayes_signature();
}

sub bayes_signature {
  return '' unless $U{sadir};
  my @s = stat("$U{sadir}/bayes_toks");
  return @s ? join(':', @s[0, 1, 7, 9]) : '';
}

# As signal_user_changed does: score set 2/3 only once Bayes has enough
# messages to scan with.
sub refresh_score_set {
  my $set = $SA->{local_tests_only} ? 0 : 1;
  $set |= 2 if $SA->{bayes_scanner} && $SA->{conf}->{use_bayes_rules} && $SA->{bayes_scanner}->is_scan_available();
  $SA->{conf}->set_score_set($set) if ($SA->{conf}->get_score_set() // -1) != $set;
}

###########################################################################
# child: bounded reads and writes on one connection

# 'ok' after reading some bytes, 'eof', 'timeout' (the connection's deadline
# passed) or 'io'.
sub fill {
  my ($in) = @_;
  for (;;) {
    my $left = $in->{deadline} - Time::HiRes::time();
    return 'timeout' if $left <= 0;
    my $rin = '';
    vec($rin, fileno($in->{fh}), 1) = 1;
    my $n = select(my $rout = $rin, undef, undef, $left);
    if ($n < 0) { next if $! == EINTR; return 'io' }
    next if $n == 0;
    my $r = sysread($in->{fh}, $in->{buf}, 65536, length $in->{buf});
    if (!defined $r) { next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR; return 'io' }
    return $r ? 'ok' : 'eof';
  }
}

sub read_line {
  my ($in) = @_;
  for (;;) {
    my $i = index($in->{buf}, "\n");
    return substr($in->{buf}, 0, $i + 1, '') if $i >= 0;
    return (undef, 'toolong') if length($in->{buf}) > MAX_LINE;
    my $st = fill($in);
    return (undef, $st) if $st ne 'ok';
  }
}

sub read_exactly {
  my ($in, $n) = @_;
  while (length($in->{buf}) < $n) {
    my $st = fill($in);
    return (undef, $st) if $st ne 'ok';
  }
  my $body = $in->{buf};
  substr($body, $n) = '' if length($body) > $n;   # anything after the message is ignored, as spamd does
  $in->{buf} = '';
  return ($body, 'ok');
}

sub read_to_eof {
  my ($in, $cap) = @_;
  for (;;) {
    return (undef, 'toobig') if length($in->{buf}) > $cap;
    my $st = fill($in);
    if ($st eq 'eof') { my $b = $in->{buf}; $in->{buf} = ''; return ($b, 'ok') }
    return (undef, $st) if $st ne 'ok';
  }
}

# Over --max-size: answered before the body is read, then the body is read
# and thrown away (bounded by the connection's deadline) so that a client
# that writes the whole message before it reads, like spamc, gets the answer.
sub too_big {
  my ($c, $in, $length) = @_;
  reply_error($c, 'EX_DATAERR', 'Message too big: ' . (defined $length ? "Content-length $length" : 'more than that')
    . " exceeds the limit of $opt{'max-size'} bytes");
  my $seen = length $in->{buf};
  $in->{buf} = '';
  while (!defined $length || $seen < $length) {
    last if fill($in) ne 'ok';
    $seen += length $in->{buf};
    $in->{buf} = '';
  }
}

sub input_error {
  my ($c, $st, $where) = @_;
  $st //= 'io';
  return reply_error($c, 'EX_TIMEOUT', "Timeout: ($opt{'read-timeout'} second timeout reading input from client $where)") if $st eq 'timeout';
  return reply_error($c, 'EX_PROTOCOL', 'Bad header line: (line too long)') if $st eq 'toolong';
  return reply_error($c, 'EX_PROTOCOL', "Bad header line: (closed $where)") if $st eq 'eof';
  return;   # 'io': the client is gone
}

sub reply_error {
  my ($c, $code, $text) = @_;
  send_reply($c, SPAMD_VERSION . " $EX{$code} $text\r\n");
  child_log("$code: $text") if $opt{verbose} || $code ne 'EX_OK';
  return;
}

sub send_reply {
  my ($c, $data) = @_;
  my $deadline = Time::HiRes::time() + $opt{'read-timeout'};
  my $off = 0;
  while ($off < length $data) {
    my $left = $deadline - Time::HiRes::time();
    return 0 if $left <= 0;
    my $win = '';
    vec($win, fileno($c), 1) = 1;
    my $n = select(undef, my $wout = $win, undef, $left);
    next if $n <= 0;
    my $w = syswrite($c, $data, length($data) - $off, $off);
    if (!defined $w) { next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR; return 0 }
    $off += $w;
  }
  return 1;
}

###########################################################################
# both

sub nonblocking {
  my ($fh) = @_;
  my $flags = fcntl($fh, F_GETFL, 0) or die "fcntl: $!\n";
  fcntl($fh, F_SETFL, $flags | O_NONBLOCK) or die "fcntl: $!\n";
}

sub set_parent_death_signal {
  prctl(PR_SET_PDEATHSIG, POSIX::SIGTERM()) == 0 or die "spam-checker: prctl(PR_SET_PDEATHSIG): $!\n";
}

# Descriptors the parent inherited beyond stdio (a shell's, a supervisor's)
# are closed before anything else is opened.
sub close_inherited_descriptors {
  opendir(my $d, '/proc/self/fd') or do {
    print STDOUT "error\tcannot list /proc/self/fd: $!\n";
    exit 1;
  };
  my @fds = grep { /^\d+\z/ && $_ > 2 } readdir($d);
  my $own = fileno($d);
  closedir $d;
  for my $fd (@fds) { POSIX::close($fd) unless defined $own && $fd == $own }
}

sub sanitize { my $s = $_[0] // ''; $s =~ s/[\x00-\x1f\x7f]+/ /g; return $s }
sub printable { my $s = sanitize($_[0]); return length($s) > 200 ? substr($s, 0, 200) . '...' : $s }

main();
