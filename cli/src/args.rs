//! The command line (issue 22): one clap struct per subcommand holding
//! only that subcommand's options, the groups several share flattened in
//! (`Net`, `Account`, `Verbosity`, `Answering`, `UserAgent`), values
//! checked while parsing (the types below, each `FromStr`), and `serve
//! --config FILE`: the same options read from a TOML file, the command
//! line overriding it field by field.
//!
//! A new option goes into the group of every command that takes it (a
//! new group: one `#[command(flatten)]` line per command); a new `serve`
//! option also goes into [`ServeArgs::over`], which lists every field so
//! that one left out does not compile.

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::de::{self, SeqAccess, Visitor};
use serde::Deserialize;
use sipline::auth::Algorithm;
use sipline::endpoint::FloodLimit;
use sipline::transport::Transport;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

const TOP_EXAMPLES: &str = "\
Examples:
  sipline serve                                   a registrar and proxy on 127.0.0.1:5060 (demo account printed)
  sipline serve --config serve.toml --workers 4   options from a file, one overridden
  sipline register sip:demo@127.0.0.1 --registrar sip:127.0.0.1 --user demo --password-file pw
  sipline message sip:demo@127.0.0.1 hello --proxy sip:127.0.0.1 --from sip:demo@127.0.0.1 --user demo
  sipline listen --answer --bind 127.0.0.1:5070
  sipline call sip:bob@127.0.0.1:5070 --hangup-after 5
  sipline completions bash > /etc/bash_completion.d/sipline

Exit status: 0 success, 1 failure, 2 usage error. `sipline COMMAND --help` tells more.";

const PARSE_EXAMPLES: &str = "\
Output, one line per file (with --json, one JSON object per line):
  FILE<TAB>ok<TAB>request METHOD URI
  FILE<TAB>ok<TAB>response CODE REASON
  FILE<TAB>error<TAB>what went wrong

Examples:
  sipline parse samples/invite.sip samples/ok.sip
  sipline parse --json samples/invite.sip

Exit status: 0 if every file parsed, 1 if any did not, 2 on a usage error.";

const SERVE_EXAMPLES: &str = "\
Examples:
  sipline serve                                              demo account, 127.0.0.1:5060
  sipline serve --domain example.com --bind 0.0.0.0:5060 --users users.txt --tls-self-signed
  sipline serve --config serve.toml --bind 127.0.0.1:5080    the file's options, another address
  sipline serve --location redis://127.0.0.1:6379 --instance a --secret-file secret --bind 127.0.0.1:5060
  sipline serve --quiet --flood-limit off --overload-delay off    load tests

--config FILE: a TOML file with one key per option (`workers = 4`, `alias = [\"a.example\"]`,
`tls-self-signed = true`), paths relative to the file's folder; cli/serve.example.toml lists
them all. An option on the command line overrides the file's; unknown keys are an error.";

const LISTEN_EXAMPLES: &str = "\
Examples:
  sipline listen --bind 127.0.0.1:5070                   prints what arrives, answers MESSAGE 200
  sipline listen --answer --bind 127.0.0.1:5070          answers INVITEs (built-in SDP)
  sipline listen --answer --quiet --workers 4 --bind 127.0.0.1:5070    load runs
  sipline listen --presence 'open:at my desk' --bind 127.0.0.1:5070
  sipline listen --transport tls --cert c.pem --key k.pem --ca clients.pem --require-client-cert";

const REGISTER_EXAMPLES: &str = "\
Examples:
  sipline register sip:alice@example.com --registrar sip:127.0.0.1 --user alice --password-file pw
  sipline register sip:alice@example.com --registrar sip:a.example.com --registrar sip:b.example.com \\
          --user alice --answer        (the password from SIPLINE_PASSWORD)

Prints each registration change, answers like `listen`, unregisters on Ctrl-C or SIGTERM.";

const MESSAGE_EXAMPLES: &str = "\
Examples:
  sipline message sip:bob@127.0.0.1:5070 hello
  sipline message sip:bob@example.com 'hi' --proxy sip:127.0.0.1 --from sip:alice@example.com --user alice

Prints the final response; exit 0 on a 2xx, 1 otherwise.";

const CALL_EXAMPLES: &str = "\
Examples:
  sipline call sip:bob@127.0.0.1:5070 --hangup-after 5
  sipline call sip:bob@127.0.0.1:5070 --hold-after 2 --hangup-after 10
  sipline call sip:bob@127.0.0.1:5070 --transfer-to sip:carol@127.0.0.1:5071 --transfer-after 1

Prints each response; hangs up SECS after the answer or on Ctrl-C or SIGTERM (CANCEL before it).
Exit 0 if answered (and, with --transfer-to, transferred), 1 otherwise.";

const SUBSCRIBE_EXAMPLES: &str = "\
Examples:
  sipline subscribe sip:bob@127.0.0.1:5070 --event presence
  sipline subscribe sip:alice@example.com --event reg --registrar sip:127.0.0.1 --user alice
  sipline subscribe sip:alice@example.com --event message-summary --expires 600

Prints each NOTIFY (state and body) until the notifier ends the subscription or Ctrl-C (which
unsubscribes first). Exit 0 if the subscription was accepted.";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  sipline completions bash > ~/.local/share/bash-completion/completions/sipline
  sipline completions zsh > ~/.zfunc/_sipline
  sipline completions fish > ~/.config/fish/completions/sipline.fish";

/// `sipline`: the command line.
#[derive(Parser, Debug)]
#[command(
    name = "sipline",
    version,
    propagate_version = true,
    about = "A SIP (RFC 3261) registrar and proxy, user agent and message checker.",
    after_help = TOP_EXAMPLES,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub(crate) struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Check SIP message files (RFC 3261 §18.3 datagram rules, §8.2 checks)
    #[command(after_help = PARSE_EXAMPLES)]
    Parse(ParseArgs),
    /// A registrar and proxy for a domain (RFC 3261 §10.3, §16), on UDP, TCP and TLS
    ///
    /// Serves domain D (default: the --bind host) on UDP and TCP at ADDR (default
    /// 127.0.0.1:5060), and TLS 1.2/1.3 on the next port with --cert/--key or
    /// --tls-self-signed. Users come from --users FILE (default: a printed one-time demo
    /// account). Every request to a user is challenged alike (unknown usernames get the same
    /// 401 as a wrong password), so a scanner cannot tell who exists or is online.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// A peer-to-peer endpoint: prints what arrives, answers MESSAGE 200
    ///
    /// Prints the MESSAGE requests it gets (answered 200) and the other requests it is
    /// handed. Without --answer, INVITEs are rejected 486 and REFERs 405.
    #[command(after_help = LISTEN_EXAMPLES)]
    Listen(ListenArgs),
    /// Register AOR at a registrar (digest authentication, refresh) and stay registered
    #[command(after_help = REGISTER_EXAMPLES)]
    #[command(mut_arg("registrar", |a| a.required(true)))]
    Register(RegisterArgs),
    /// Send one MESSAGE (RFC 3428)
    #[command(after_help = MESSAGE_EXAMPLES)]
    #[command(mut_arg("registrar", |a| a.conflicts_with("proxy")))]
    Message(MessageArgs),
    /// Place one call (INVITE with an SDP offer) and follow it
    #[command(after_help = CALL_EXAMPLES)]
    #[command(mut_arg("registrar", |a| a.conflicts_with("proxy")))]
    Call(CallArgs),
    /// Subscribe to an event package (RFC 6665) and print each NOTIFY
    #[command(after_help = SUBSCRIBE_EXAMPLES)]
    #[command(mut_arg("registrar", |a| a.conflicts_with("proxy")))]
    Subscribe(SubscribeArgs),
    /// Print a shell completion script
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions(CompletionsArgs),
}

/// A usage error found after parsing (a file that cannot be read, options
/// that do not go together in a way clap does not check), in clap's
/// format for `command`: the error, its usage line, exit status 2.
pub(crate) fn usage_error(command: &str, why: &str) -> std::process::ExitCode {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    cli.build();
    let error = match cli.find_subcommand_mut(command) {
        Some(sub) => sub.error(clap::error::ErrorKind::InvalidValue, why),
        None => cli.error(clap::error::ErrorKind::InvalidValue, why),
    };
    let _ = error.print();
    std::process::ExitCode::from(2)
}

/// `parse`'s arguments.
#[derive(Args, Debug)]
pub(crate) struct ParseArgs {
    /// One JSON object per file (one per line) with the parsed structure
    #[arg(long)]
    pub(crate) json: bool,
    /// The message files, each read as one SIP message
    #[arg(value_name = "FILE", required = true)]
    pub(crate) files: Vec<String>,
}

/// `completions`' arguments.
#[derive(Args, Debug)]
pub(crate) struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

/// How much is printed (the network commands but `serve`, whose options
/// are all its own: see [`ServeArgs`]).
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Output")]
pub(crate) struct Verbosity {
    /// Print every SIP message sent and received (to standard error)
    #[arg(short, long)]
    pub(crate) verbose: bool,
    /// Draw the messages as a ladder instead (one arrow per message between this endpoint and
    /// each peer, like sngrep's call flow; to standard error)
    #[arg(long)]
    pub(crate) ladder: bool,
    /// Print one JSON object per event line ({"event": KIND, its fields, "text": the line it
    /// replaces}) instead of text
    #[arg(long)]
    pub(crate) json: bool,
}

/// Sockets and TLS: `listen` and the clients.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Network and TLS")]
pub(crate) struct Net {
    /// The address to listen on (listen: default 0.0.0.0:0; clients: default the address that
    /// reaches the registrar, proxy or target, port 0)
    #[arg(long, value_name = "ADDR")]
    pub(crate) bind: Option<SocketAddr>,
    /// The transport to send over (and listen on)
    #[arg(long, value_enum, ignore_case = true, value_name = "PROTO", default_value_t = TransportArg::Udp)]
    pub(crate) transport: TransportArg,
    /// TLS certificate chain (PEM): listen's own, a client's to present
    #[arg(long, value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// TLS private key (PEM) for --cert
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// Trusted roots (PEM; default: the system's)
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// Receive and send buffer asked for on each UDP socket (default 8388608, 8 MiB; 0: the
    /// system's default); the kernel may grant less: the granted sizes are printed at start
    #[arg(long, value_name = "BYTES")]
    pub(crate) udp_buffer: Option<usize>,
}

impl Net {
    /// `--transport` as the core's.
    pub(crate) fn transport(&self) -> Transport {
        self.transport.into()
    }
}

/// `--transport udp|tcp|tls`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransportArg {
    /// UDP (RFC 3261 §18)
    Udp,
    /// TCP
    Tcp,
    /// TLS 1.2/1.3 over TCP (RFC 3261 §26.2)
    Tls,
}

impl From<TransportArg> for Transport {
    fn from(t: TransportArg) -> Transport {
        match t {
            TransportArg::Udp => Transport::Udp,
            TransportArg::Tcp => Transport::Tcp,
            TransportArg::Tls => Transport::Tls,
        }
    }
}

/// Where requests go and who sends them: `register` and the clients.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Registrar, proxy and credentials")]
pub(crate) struct Account {
    /// A registrar, registered with first (repeatable: the next takes the registration when
    /// the one in use stops answering, and the first again once it answers, RFC 3263 §4.3)
    #[arg(long, value_name = "URI")]
    pub(crate) registrar: Vec<String>,
    /// The outbound proxy every request goes through
    #[arg(long, value_name = "URI")]
    pub(crate) proxy: Option<String>,
    /// The digest username (its password: SIPLINE_PASSWORD, --password-file or --password)
    #[arg(long, value_name = "U")]
    pub(crate) user: Option<String>,
    /// The password (for tests: it shows in the process list; prefer SIPLINE_PASSWORD or
    /// --password-file)
    #[arg(long, value_name = "P", env = "SIPLINE_PASSWORD", hide_env_values = true)]
    pub(crate) password: Option<String>,
    /// Read the password from FILE's first line (before --password and SIPLINE_PASSWORD)
    #[arg(long, value_name = "FILE")]
    pub(crate) password_file: Option<PathBuf>,
}

impl Account {
    /// The first `--registrar`: the one registered with.
    pub(crate) fn registrar(&self) -> Option<&str> {
        self.registrar.first().map(String::as_str)
    }

    /// The password: `--password-file`'s first line, else `--password`
    /// or `SIPLINE_PASSWORD` (an empty one is none).
    pub(crate) fn password(&self) -> Result<Option<String>, String> {
        match &self.password_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| format!("--password-file {}: {e}", path.display()))?;
                Ok(Some(text.lines().next().unwrap_or_default().to_owned()))
            }
            None => Ok(self.password.clone().filter(|p| !p.is_empty())),
        }
    }
}

/// `--user-agent`: the clients' User-Agent.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct UserAgent {
    /// The User-Agent header field's value (default sipline/VERSION; none: no such header)
    #[arg(long, value_name = "TEXT", alias = "server-header")]
    pub(crate) user_agent: Option<String>,
}

/// What `listen` and `register` do with what comes in.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Answering")]
pub(crate) struct Answering {
    /// Answer every INVITE with 200 and an SDP answer (RFC 3264: PCMU, PCMA or
    /// telephone-event on the discard port; 488 if none of those is offered), and take
    /// transfers: a REFER's (RFC 3515) Refer-To target is called (with Referred-By, and
    /// Replaces if it carries one) and the call's progress reported to the transferor.
    /// Without it INVITEs get 486 and REFERs 405
    #[arg(long)]
    pub(crate) answer: bool,
    /// With --answer: answer with FILE (application/sdp) instead
    #[arg(long, value_name = "FILE", requires = "answer")]
    pub(crate) body: Option<PathBuf>,
    /// Answer presence subscriptions (RFC 3856) with a PIDF document (RFC 3863) saying open or
    /// closed, with NOTE
    #[arg(long, value_name = "open|closed[:NOTE]")]
    pub(crate) presence: Option<PresenceArg>,
    /// Print no line per request or call (load runs)
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

/// `listen`'s arguments.
#[derive(Args, Debug, Clone)]
pub(crate) struct ListenArgs {
    /// Mutual TLS: only clients whose certificate chains to a root of --ca are taken (needs
    /// --transport tls, --cert/--key and --ca)
    #[arg(long)]
    pub(crate) require_client_cert: bool,
    /// N answering endpoints on the address, one thread each (SO_REUSEPORT)
    #[arg(long, value_name = "N", value_parser = parse_workers, default_value = "1")]
    pub(crate) workers: NonZeroU16,
    /// The Server header field's value (default sipline/VERSION; none: no such header)
    #[arg(long, value_name = "TEXT", alias = "user-agent")]
    pub(crate) server_header: Option<String>,
    #[command(flatten)]
    pub(crate) answering: Answering,
    #[command(flatten)]
    pub(crate) net: Net,
    #[command(flatten)]
    pub(crate) verbosity: Verbosity,
}

/// `register`'s arguments.
#[derive(Args, Debug, Clone)]
pub(crate) struct RegisterArgs {
    /// The address of record to register (a SIP URI)
    #[arg(value_name = "AOR")]
    pub(crate) aor: String,
    /// The registration's lifetime asked for, in seconds (default 3600)
    #[arg(long, value_name = "SECS")]
    pub(crate) expires: Option<u32>,
    #[command(flatten)]
    pub(crate) user_agent: UserAgent,
    #[command(flatten)]
    pub(crate) account: Account,
    #[command(flatten)]
    pub(crate) answering: Answering,
    #[command(flatten)]
    pub(crate) net: Net,
    #[command(flatten)]
    pub(crate) verbosity: Verbosity,
}

/// `message`'s arguments.
#[derive(Args, Debug, Clone)]
pub(crate) struct MessageArgs {
    /// Where to (a SIP URI)
    #[arg(value_name = "TARGET")]
    pub(crate) target: String,
    /// The text (text/plain)
    #[arg(value_name = "TEXT")]
    pub(crate) text: String,
    /// The From URI (default: the --user, or sipline, at the registrar's host)
    #[arg(long, value_name = "URI")]
    pub(crate) from: Option<String>,
    #[command(flatten)]
    pub(crate) user_agent: UserAgent,
    #[command(flatten)]
    pub(crate) account: Account,
    #[command(flatten)]
    pub(crate) net: Net,
    #[command(flatten)]
    pub(crate) verbosity: Verbosity,
}

/// `call`'s arguments.
#[derive(Args, Debug, Clone)]
pub(crate) struct CallArgs {
    /// Whom to call (a SIP URI)
    #[arg(value_name = "TARGET")]
    pub(crate) target: String,
    /// The offer's file (default: an SDP offer of PCMU, PCMA and telephone-event)
    #[arg(long, value_name = "FILE")]
    pub(crate) body: Option<PathBuf>,
    /// --body's content type (default application/sdp)
    #[arg(long, value_name = "TYPE", requires = "body")]
    pub(crate) content_type: Option<String>,
    /// Hang up SECS after the answer (default: on Ctrl-C or SIGTERM)
    #[arg(long, value_name = "SECS")]
    pub(crate) hangup_after: Option<Seconds>,
    /// Put the call on hold SECS after the answer (re-INVITE, sendonly, RFC 3264 §8.4)
    #[arg(long, value_name = "SECS")]
    pub(crate) hold_after: Option<Seconds>,
    /// Ask the peer to call URI (REFER, RFC 3515), print its progress, hang up when it ends;
    /// exit 0 if the transfer got a 2xx
    #[arg(long, value_name = "URI")]
    pub(crate) transfer_to: Option<String>,
    /// When to transfer: SECS after the answer (default 0)
    #[arg(long, value_name = "SECS", requires = "transfer_to")]
    pub(crate) transfer_after: Option<Seconds>,
    /// The From URI (default: the --user, or sipline, at the registrar's host)
    #[arg(long, value_name = "URI")]
    pub(crate) from: Option<String>,
    #[command(flatten)]
    pub(crate) user_agent: UserAgent,
    #[command(flatten)]
    pub(crate) account: Account,
    #[command(flatten)]
    pub(crate) net: Net,
    #[command(flatten)]
    pub(crate) verbosity: Verbosity,
}

/// `subscribe`'s arguments.
#[derive(Args, Debug, Clone)]
pub(crate) struct SubscribeArgs {
    /// Whose events (a SIP URI)
    #[arg(value_name = "TARGET")]
    pub(crate) target: String,
    /// The event package: presence, reg, message-summary… (RFC 6665 §7.2)
    #[arg(long, value_name = "EVENT", required = true)]
    pub(crate) event: String,
    /// The subscription's lifetime asked for, in seconds (default 3600; refreshed), and the
    /// registration's with --registrar
    #[arg(long, value_name = "SECS")]
    pub(crate) expires: Option<u32>,
    /// A body type taken in NOTIFYs (repeatable; default: the package's)
    #[arg(long, value_name = "TYPE")]
    pub(crate) accept: Vec<String>,
    /// The From URI (default: the --user, or sipline, at the registrar's host)
    #[arg(long, value_name = "URI")]
    pub(crate) from: Option<String>,
    #[command(flatten)]
    pub(crate) user_agent: UserAgent,
    #[command(flatten)]
    pub(crate) account: Account,
    #[command(flatten)]
    pub(crate) net: Net,
    #[command(flatten)]
    pub(crate) verbosity: Verbosity,
}

/// `serve`'s options, from the command line and from `--config FILE`
/// alike: one flat struct, each field a command-line option and a key of
/// the file (kebab-case, as the option), so that the two never differ.
/// (Flat, not flattened groups: serde refuses unknown keys only in a flat
/// struct.)
#[derive(Args, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
#[allow(clippy::struct_excessive_bools)] // one per switch
pub(crate) struct ServeArgs {
    /// Read these options from FILE (TOML, one key per option); the command line overrides
    /// it option by option
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub(crate) config: Option<PathBuf>,
    /// The domain served (default: the --bind host)
    #[arg(long, value_name = "D")]
    pub(crate) domain: Option<String>,
    /// The address for UDP and TCP (default 127.0.0.1:5060; TLS on the next port)
    #[arg(long, value_name = "ADDR")]
    pub(crate) bind: Option<SocketAddr>,
    /// The users: `user:password` or `user:realm:HA1` per line (default: a printed one-time
    /// demo account)
    #[arg(long, value_name = "FILE")]
    pub(crate) users: Option<PathBuf>,
    /// Another name or address the domain answers to (repeatable)
    #[arg(long, value_name = "HOST[:PORT]")]
    #[serde(alias = "aliases")]
    pub(crate) alias: Vec<String>,
    /// TLS certificate chain (PEM), with --key
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub(crate) cert: Option<PathBuf>,
    /// TLS private key (PEM), with --cert
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub(crate) key: Option<PathBuf>,
    /// Make a certificate for the domain and the bound address on the spot; its authority's
    /// certificate is written to a file (printed) for clients' --ca
    #[arg(long, help_heading = "TLS")]
    pub(crate) tls_self_signed: bool,
    /// Trusted roots (PEM) for client certificates
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub(crate) ca: Option<PathBuf>,
    /// Mutual TLS: only clients whose certificate chains to a root of --ca are taken
    #[arg(long, help_heading = "TLS")]
    pub(crate) require_client_cert: bool,
    /// The shortest registration taken, in seconds (default 60)
    #[arg(long, value_name = "SECS", help_heading = "Registrar")]
    pub(crate) min_expires: Option<u32>,
    /// Digest algorithms challenged with, in order (default md5 alone, as Kamailio: phones
    /// such as baresip 1.x and Twinkle refuse a challenge that also offers SHA-256;
    /// sha-256,md5 offers RFC 8760's SHA-256 first)
    #[arg(long, value_name = "ALGS", help_heading = "Registrar")]
    pub(crate) digest: Option<Digest>,
    /// An old default, kept so that recorded commands still run: --digest md5,sha-256.
    #[arg(long, hide = true)]
    #[serde(skip)]
    pub(crate) md5_first: bool,
    /// Requests from outside the domain reach its users without authenticating (calls from
    /// other domains); off by default
    #[arg(long, help_heading = "Registrar")]
    pub(crate) allow_guests: bool,
    /// N wrong digest answers for one username, or from one address (IPv6: its /64), within
    /// --auth-window ban it for --ban (default 10; 0: no bans)
    #[arg(long, value_name = "N", help_heading = "Protection")]
    pub(crate) max_auth_failures: Option<u32>,
    /// The window wrong answers are counted in, seconds (default 60)
    #[arg(long, value_name = "SECS", help_heading = "Protection")]
    pub(crate) auth_window: Option<Seconds>,
    /// How long a ban lasts, seconds (default 300); banned answers get 403
    #[arg(long, value_name = "SECS", help_heading = "Protection")]
    pub(crate) ban: Option<Seconds>,
    /// Requests a second from one address before the rest are dropped unanswered (default
    /// 1000/2000; BURST default twice RATE; off for load tests)
    #[arg(long, value_name = "RATE[/BURST]|off", help_heading = "Protection")]
    pub(crate) flood_limit: Option<FloodSetting>,
    /// New requests that waited longer than MS get 503 with Retry-After (default 125, T1/4,
    /// twice that before the first refusal; registrations up to 1.5x, answers to a challenge
    /// up to 3x; refused statelessly); off: never
    #[arg(long, value_name = "MS|off", help_heading = "Protection")]
    pub(crate) overload_delay: Option<OverloadSetting>,
    /// Receive and send buffer asked for on each UDP socket (default 8388608, 8 MiB; 0: the
    /// system's default)
    #[arg(long, value_name = "BYTES", help_heading = "Scale")]
    pub(crate) udp_buffer: Option<usize>,
    /// N registrar/proxy cores, one thread each, sharing the bindings (default: one per CPU);
    /// each listens on every address (SO_REUSEPORT)
    #[arg(long, value_name = "N", value_parser = parse_workers, help_heading = "Scale")]
    pub(crate) workers: Option<NonZeroU16>,
    /// Where the bindings are kept: memory, or mirrored to Redis and shared with the other
    /// instances of the domain (default memory)
    #[arg(long, value_name = "memory|redis://HOST:PORT[/DB]", help_heading = "Scale")]
    pub(crate) location: Option<Location>,
    /// This instance's name among those sharing --location (default: random)
    #[arg(long, value_name = "NAME", help_heading = "Scale")]
    pub(crate) instance: Option<String>,
    /// The nonces' key: FILE's SHA-256 (16 bytes or more, the same at every instance, so that
    /// a challenge from one is answered at another)
    #[arg(long, value_name = "FILE", help_heading = "Scale")]
    pub(crate) secret_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0: any; the address is printed)
    #[arg(long, value_name = "ADDR", help_heading = "Output")]
    pub(crate) metrics: Option<SocketAddr>,
    /// The Server header field's value (default sipline/VERSION; none: no such header)
    #[arg(long, value_name = "TEXT", alias = "user-agent")]
    pub(crate) server_header: Option<String>,
    /// Print every SIP message sent and received (to standard error)
    #[arg(short, long, help_heading = "Output")]
    pub(crate) verbose: bool,
    /// Draw the messages as a ladder instead (one arrow per message between the server and
    /// each peer; to standard error)
    #[arg(long, help_heading = "Output")]
    pub(crate) ladder: bool,
    /// Print no line per request
    #[arg(short, long, help_heading = "Output")]
    pub(crate) quiet: bool,
}

impl ServeArgs {
    /// These options over `file`'s, option by option: each given here
    /// wins (a list: if given at all), a switch is on if on in either.
    pub(crate) fn over(self, file: ServeArgs) -> ServeArgs {
        // Every field by name: a new one must be placed here to compile.
        let ServeArgs {
            config,
            domain,
            bind,
            users,
            alias,
            cert,
            key,
            tls_self_signed,
            ca,
            require_client_cert,
            min_expires,
            digest,
            md5_first,
            allow_guests,
            max_auth_failures,
            auth_window,
            ban,
            flood_limit,
            overload_delay,
            udp_buffer,
            workers,
            location,
            instance,
            secret_file,
            metrics,
            server_header,
            verbose,
            ladder,
            quiet,
        } = self;
        ServeArgs {
            config,
            domain: domain.or(file.domain),
            bind: bind.or(file.bind),
            users: users.or(file.users),
            alias: if alias.is_empty() { file.alias } else { alias },
            cert: cert.or(file.cert),
            key: key.or(file.key),
            tls_self_signed: tls_self_signed || file.tls_self_signed,
            ca: ca.or(file.ca),
            require_client_cert: require_client_cert || file.require_client_cert,
            min_expires: min_expires.or(file.min_expires),
            digest: digest.or(file.digest),
            md5_first: md5_first || file.md5_first,
            allow_guests: allow_guests || file.allow_guests,
            max_auth_failures: max_auth_failures.or(file.max_auth_failures),
            auth_window: auth_window.or(file.auth_window),
            ban: ban.or(file.ban),
            flood_limit: flood_limit.or(file.flood_limit),
            overload_delay: overload_delay.or(file.overload_delay),
            udp_buffer: udp_buffer.or(file.udp_buffer),
            workers: workers.or(file.workers),
            location: location.or(file.location),
            instance: instance.or(file.instance),
            secret_file: secret_file.or(file.secret_file),
            metrics: metrics.or(file.metrics),
            server_header: server_header.or(file.server_header),
            verbose: verbose || file.verbose,
            ladder: ladder || file.ladder,
            quiet: quiet || file.quiet,
        }
    }

    /// The options of `--config`, if given, under these: the result, or
    /// what is wrong with the file (a usage error).
    pub(crate) fn with_config_file(self) -> Result<ServeArgs, String> {
        match self.config.clone() {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| format!("--config {}: {e}", path.display()))?;
                let file = ServeArgs::from_toml(&text, path.parent().unwrap_or(Path::new("")))
                    .map_err(|e| format!("--config {}: {e}", path.display()))?;
                Ok(self.over(file))
            }
            None => Ok(self),
        }
    }

    /// The options in the TOML `text`, its relative paths taken from
    /// `dir` (the file's folder).
    pub(crate) fn from_toml(text: &str, dir: &Path) -> Result<ServeArgs, toml::de::Error> {
        let mut file: ServeArgs = toml::from_str(text)?;
        for path in
            [&mut file.users, &mut file.cert, &mut file.key, &mut file.ca, &mut file.secret_file].into_iter().flatten()
        {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
        Ok(file)
    }

    /// `--digest`, or the old `--md5-first`'s order.
    pub(crate) fn algorithms(&self) -> Option<Vec<Algorithm>> {
        match (&self.digest, self.md5_first) {
            (Some(d), _) => Some(d.0.clone()),
            (None, true) => Some(vec![Algorithm::Md5, Algorithm::Sha256]),
            (None, false) => None,
        }
    }
}

/// `--workers N`: 1 or more.
fn parse_workers(v: &str) -> Result<NonZeroU16, String> {
    let n: u16 = v.parse().map_err(|e| format!("{e} (1 to 65535)"))?;
    NonZeroU16::new(n).ok_or_else(|| "at least 1".to_owned())
}

/// Seconds, fractions allowed (`--hangup-after 1.5`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Seconds(pub(crate) Duration);

impl FromStr for Seconds {
    type Err = String;

    fn from_str(v: &str) -> Result<Seconds, String> {
        let secs: f64 = v.trim().parse().map_err(|_| format!("{v:?} is not a number of seconds"))?;
        Duration::try_from_secs_f64(secs).map(Seconds).map_err(|_| format!("{v:?}: 0 or more seconds"))
    }
}

/// `--presence open|closed[:NOTE]`: open or not, and the note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PresenceArg {
    /// Open (or closed).
    pub(crate) open: bool,
    /// The note, if any.
    pub(crate) note: Option<String>,
}

impl FromStr for PresenceArg {
    type Err = String;

    fn from_str(v: &str) -> Result<PresenceArg, String> {
        let (status, note) = match v.split_once(':') {
            Some((s, n)) => (s, Some(n.to_owned())),
            None => (v, None),
        };
        match status {
            "open" => Ok(PresenceArg { open: true, note }),
            "closed" => Ok(PresenceArg { open: false, note }),
            _ => Err("open or closed, with :NOTE if wanted".to_owned()),
        }
    }
}

/// `--digest md5,sha-256`: algorithm names (RFC 8760), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digest(pub(crate) Vec<Algorithm>);

impl FromStr for Digest {
    type Err = String;

    fn from_str(list: &str) -> Result<Digest, String> {
        list.split(',')
            .map(|name| match Algorithm::from_name(name.trim()) {
                Some(a @ (Algorithm::Md5 | Algorithm::Sha256)) => Ok(a),
                _ => Err(format!("{name:?} is not md5 or sha-256")),
            })
            .collect::<Result<_, _>>()
            .map(Digest)
    }
}

/// `serve --flood-limit`: a limit, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloodSetting {
    /// No limit.
    Off,
    /// This one.
    Limit(FloodLimit),
}

impl FromStr for FloodSetting {
    type Err = String;

    /// `RATE[/BURST]|off` (BURST default twice RATE).
    fn from_str(v: &str) -> Result<FloodSetting, String> {
        if v.eq_ignore_ascii_case("off") {
            return Ok(FloodSetting::Off);
        }
        let bad = |e: std::num::ParseIntError| format!("{v:?}: {e} (RATE[/BURST] or off)");
        let (rate, burst) = match v.split_once('/') {
            Some((r, b)) => (r.parse::<u32>().map_err(bad)?, Some(b.parse::<u32>().map_err(bad)?)),
            None => (v.parse::<u32>().map_err(bad)?, None),
        };
        if rate == 0 {
            return Err("RATE must be above 0 (off for no limit)".to_owned());
        }
        Ok(FloodSetting::Limit(FloodLimit::new(rate, burst.unwrap_or(rate.saturating_mul(2)))))
    }
}

/// `serve --overload-delay`: the queueing delay past which new requests
/// are refused, or off (issue 19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OverloadSetting {
    /// Never refused.
    Off,
    /// Refused past this delay.
    Delay(Duration),
}

impl FromStr for OverloadSetting {
    type Err = String;

    /// `MS|off`.
    fn from_str(v: &str) -> Result<OverloadSetting, String> {
        if v.eq_ignore_ascii_case("off") {
            return Ok(OverloadSetting::Off);
        }
        match v.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(OverloadSetting::Delay(Duration::from_millis(ms))),
            Ok(_) => Err("MS must be above 0 (off for none)".to_owned()),
            Err(e) => Err(format!("{v:?}: {e} (MS or off)")),
        }
    }
}

/// `serve --location`: where the bindings are kept (issue 20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// In this process only.
    Memory,
    /// Mirrored to the Redis server at this URL (`redis://` or `rediss://`).
    Redis(String),
}

impl FromStr for Location {
    type Err = String;

    fn from_str(url: &str) -> Result<Location, String> {
        if url == "memory" {
            Ok(Location::Memory)
        } else if url.starts_with("redis://") || url.starts_with("rediss://") {
            Ok(Location::Redis(url.to_owned()))
        } else {
            Err(format!("{url:?}: memory or redis://HOST:PORT[/DB]"))
        }
    }
}

/// Reads a value of the config file the way the command line reads it
/// (`FromStr`): from a string, or from a number written as one
/// (`ban = 300`, `auth-window = 0.5`), or, where `list` is set, from an
/// array of strings joined with commas (`digest = ["sha-256", "md5"]`).
struct FromStrVisitor<T> {
    expecting: &'static str,
    list: bool,
    value: PhantomData<T>,
}

impl<T: FromStr<Err = String>> Visitor<'_> for FromStrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

/// [`FromStrVisitor`] with the arrays it may read (a visitor's
/// `visit_seq` needs the `'de` lifetime the others do not).
struct ListVisitor<T>(FromStrVisitor<T>);

impl<'de, T: FromStr<Err = String>> Visitor<'de> for ListVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        self.0.visit_str(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.0.visit_i64(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.0.visit_u64(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.0.visit_f64(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        if !self.0.list {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let mut parts = Vec::new();
        // Bounded by the file's own length.
        while let Some(part) = seq.next_element::<String>()? {
            parts.push(part);
        }
        self.visit_str(&parts.join(","))
    }
}

/// `Deserialize` for a type read with `FromStr` (see [`FromStrVisitor`]).
macro_rules! deserialize_from_str {
    ($t:ty, $expecting:literal, list: $list:literal) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                d.deserialize_any(ListVisitor(FromStrVisitor {
                    expecting: $expecting,
                    list: $list,
                    value: PhantomData,
                }))
            }
        }
    };
}

deserialize_from_str!(Seconds, "a number of seconds", list: false);
deserialize_from_str!(Digest, "algorithm names: \"md5,sha-256\" or [\"md5\", \"sha-256\"]", list: true);
deserialize_from_str!(FloodSetting, "RATE[/BURST] or \"off\"", list: false);
deserialize_from_str!(OverloadSetting, "milliseconds or \"off\"", list: false);
deserialize_from_str!(Location, "\"memory\" or \"redis://HOST:PORT[/DB]\"", list: false);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The example file in the repository.
    const EXAMPLE: &str = include_str!("../serve.example.toml");

    fn serve(args: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from([&["sipline", "serve"][..], args].concat()).expect("serve's arguments");
        match cli.command {
            Command::Serve(s) => s,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_example_file_holds_every_option() {
        let file = ServeArgs::from_toml(EXAMPLE, Path::new("/etc/sipline")).expect("the example parses");
        assert_eq!(file.domain.as_deref(), Some("example.test"));
        assert_eq!(file.bind, Some("127.0.0.1:5060".parse().expect("an address")));
        assert_eq!(file.alias, ["sip.example.test", "127.0.0.1:5060"]);
        assert_eq!(file.min_expires, Some(60));
        assert_eq!(file.digest, Some(Digest(vec![Algorithm::Md5])));
        assert_eq!(file.max_auth_failures, Some(10));
        assert_eq!(file.auth_window, Some(Seconds(Duration::from_secs(60))));
        assert_eq!(file.ban, Some(Seconds(Duration::from_secs(300))));
        assert_eq!(file.flood_limit, Some(FloodSetting::Limit(FloodLimit::new(1000, 2000))));
        assert_eq!(file.overload_delay, Some(OverloadSetting::Delay(Duration::from_millis(125))));
        assert_eq!(file.udp_buffer, Some(8_388_608));
        assert_eq!(file.workers, NonZeroU16::new(2));
        assert_eq!(file.location, Some(Location::Memory));
        assert_eq!(file.server_header.as_deref(), Some("sipline"));
        assert!(!file.allow_guests && !file.tls_self_signed && !file.require_client_cert);
        assert!(!file.verbose && !file.quiet);
        // Every key of the example, commented out or not, is an option:
        // with the commented-out ones in place of those set, it still parses.
        let key = |line: &str| line.split_once(" = ").map(|(k, _)| k.to_owned()).filter(|k| !k.contains(' '));
        let commented: Vec<&str> =
            EXAMPLE.lines().filter_map(|l| l.strip_prefix("# ")).filter(|l| key(l).is_some()).collect();
        let replaced: Vec<String> = commented.iter().filter_map(|l| key(l)).collect();
        let set = EXAMPLE.lines().filter(|l| key(l).is_some_and(|k| !replaced.contains(&k)));
        let all = set.chain(commented).fold(String::new(), |s, l| s + l + "\n");
        let every = ServeArgs::from_toml(&all, Path::new("/etc/sipline")).expect("every key parses");
        assert_eq!(every.users, Some(PathBuf::from("/etc/sipline/users.txt")), "relative to the file");
        assert_eq!(every.cert, Some(PathBuf::from("/etc/sipline/cert.pem")));
        assert_eq!(every.secret_file, Some(PathBuf::from("/var/lib/sipline/secret")), "absolute: as written");
        assert_eq!(every.location, Some(Location::Redis("redis://127.0.0.1:6379/0".to_owned())));
        assert_eq!(every.instance.as_deref(), Some("a"));
        assert!(every.tls_self_signed && every.require_client_cert && every.allow_guests);
    }

    #[test]
    fn the_command_line_overrides_the_file_option_by_option() {
        let file = ServeArgs::from_toml(EXAMPLE, Path::new("")).expect("the example parses");
        let merged =
            serve(&["--bind", "127.0.0.1:0", "--alias", "other.test", "-q", "--flood-limit", "off"]).over(file);
        assert_eq!(merged.bind, Some("127.0.0.1:0".parse().expect("an address")));
        assert_eq!(merged.alias, ["other.test"]);
        assert!(merged.quiet);
        assert_eq!(merged.flood_limit, Some(FloodSetting::Off));
        // The rest from the file.
        assert_eq!(merged.domain.as_deref(), Some("example.test"));
        assert_eq!(merged.workers, NonZeroU16::new(2));
        assert_eq!(merged.ban, Some(Seconds(Duration::from_secs(300))));
    }

    #[test]
    fn file_values_are_checked_as_the_command_line_checks_them() {
        let parse = |text: &str| ServeArgs::from_toml(text, Path::new("")).map_err(|e| e.to_string());
        assert_eq!(
            parse("auth-window = 0.5\nban = \"2.5\"").expect("seconds").ban,
            Some(Seconds(Duration::from_millis(2500)))
        );
        assert_eq!(
            parse("digest = [\"sha-256\", \"md5\"]").expect("a list").digest,
            Some(Digest(vec![Algorithm::Sha256, Algorithm::Md5]))
        );
        assert_eq!(parse("overload-delay = \"off\"").expect("off").overload_delay, Some(OverloadSetting::Off));
        assert_eq!(
            parse("flood-limit = 10").expect("a rate").flood_limit,
            Some(FloodSetting::Limit(FloodLimit::new(10, 20)))
        );
        let err = parse("digest = \"md5,sha-1\"").expect_err("sha-1");
        assert!(err.contains("\"sha-1\" is not md5 or sha-256"), "{err}");
        let err = parse("location = \"postgres://x\"").expect_err("not redis");
        assert!(err.contains("memory or redis://"), "{err}");
        let err = parse("workers = 0").expect_err("no workers");
        assert!(err.contains("workers"), "{err}");
        let err = parse("ban = -1").expect_err("negative");
        assert!(err.contains("ban"), "{err}");
        let err = parse("bogus = 1").expect_err("unknown");
        assert!(err.contains("unknown field `bogus`"), "{err}");
        let err = parse("config = \"other.toml\"").expect_err("no nesting");
        assert!(err.contains("unknown field `config`"), "{err}");
        let err = parse("domain = ").expect_err("bad TOML");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn values_are_checked_while_parsing() {
        let err = |args: &[&str]| Cli::try_parse_from(args).expect_err("refused").to_string();
        assert!(err(&["sipline", "serve", "--workers", "0"]).contains("at least 1"));
        assert!(err(&["sipline", "serve", "--location", "mysql://x"]).contains("memory or redis://"));
        assert!(err(&["sipline", "serve", "--overload-delay", "0"]).contains("above 0"));
        assert!(err(&["sipline", "serve", "--flood-limit", "0"]).contains("above 0"));
        assert!(err(&["sipline", "serve", "--bind", "127.0.0.1:70000"]).contains("--bind"));
        assert!(err(&["sipline", "listen", "--transport", "sctp"]).contains("possible values: udp, tcp, tls"));
        assert!(err(&["sipline", "call", "sip:x@127.0.0.1", "--hangup-after=-1"]).contains("0 or more seconds"));
        assert!(err(&["sipline", "message", "sip:x@h", "t", "--workers", "2"]).contains("--workers"));
        assert!(err(&["sipline", "message", "sip:x@h", "t", "--registrar", "sip:h", "--proxy", "sip:h"])
            .contains("cannot be used with"));
        assert!(err(&["sipline", "register", "sip:x@h"]).contains("--registrar"));
        assert!(err(&["sipline", "listen", "--body", "x.sdp"]).contains("--answer"));
        let call = Cli::try_parse_from(["sipline", "call", "sip:x@h", "--hangup-after", "1.5"]).expect("parsed");
        let Command::Call(call) = call.command else { panic!("not call") };
        assert_eq!(call.hangup_after, Some(Seconds(Duration::from_millis(1500))));
        let listen = Cli::try_parse_from(["sipline", "listen", "--transport", "TCP", "--presence", "closed:away"]);
        let Command::Listen(listen) = listen.expect("parsed").command else { panic!("not listen") };
        assert_eq!(listen.net.transport(), Transport::Tcp);
        assert_eq!(listen.answering.presence, Some(PresenceArg { open: false, note: Some("away".to_owned()) }));
        assert_eq!(listen.workers.get(), 1);
    }

    #[test]
    fn the_password_file_comes_first() {
        let dir = std::env::temp_dir().join(format!("sipline-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a folder");
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\nignored\n").expect("written");
        let account = |extra: &[&str]| {
            let args = [&["sipline", "message", "sip:x@h", "t", "--user", "u"][..], extra].concat();
            let Command::Message(m) = Cli::try_parse_from(args).expect("parsed").command else { panic!("not message") };
            m.account.password()
        };
        let path = file.to_str().expect("utf-8");
        assert_eq!(account(&["--password-file", path, "--password", "p"]), Ok(Some("from-file".to_owned())));
        assert_eq!(account(&["--password", "p"]), Ok(Some("p".to_owned())));
        assert!(account(&["--password-file", "/no/such/file"]).is_err_and(|e| e.starts_with("--password-file")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
