//! `sipline`: the command-line face of the sipline SIP stack.
//!
//! ```text
//! sipline parse [--json] FILE...
//! sipline serve [--config FILE] [--bind ADDR] [--domain D] [--users FILE] [...]
//! sipline listen [--bind ADDR] [--transport udp|tcp|tls] [--answer [--body FILE]] [-v] [...]
//! sipline register URI --registrar URI... [--user U] [--expires SECS] [--answer] [...]
//! sipline message TARGET TEXT [--from URI] [--registrar URI... | --proxy URI] [--user U] [...]
//! sipline call TARGET [--body FILE [--content-type T]] [--hangup-after SECS] [--from URI]
//!              [--hold-after SECS] [--transfer-to URI [--transfer-after SECS]]
//!              [--registrar URI... | --proxy URI] [--user U] [...]
//! sipline subscribe TARGET --event EVENT [--expires SECS] [--accept TYPE]... [...]
//! sipline completions bash|zsh|fish|elvish|powershell
//! ```
//!
//! The arguments are parsed by clap (`args.rs`): each subcommand takes
//! only its own options (`sipline COMMAND --help` lists them, with
//! examples), values are checked while parsing, `--version` prints the
//! version. Passwords come from `SIPLINE_PASSWORD`, `--password-file FILE`
//! (its first line) or `--password`. `serve --config FILE` reads `serve`'s
//! options from a TOML file (`cli/serve.example.toml` has them all), the
//! command line overriding it option by option. Exit status: 0 success, 1
//! failure, 2 usage error (with `--help` and `--version`: 0).
//!
//! `serve` is a registrar and proxy for a domain (the project's main job).
//! `listen` is a peer-to-peer endpoint that prints the MESSAGE requests it
//! gets (answered 200) and other requests it is handed; with `--answer` it
//! answers every INVITE with 200 and the `--body` file as
//! `application/sdp` (default: the answer to the caller's SDP offer,
//! RFC 3264), printing `INVITE from …`, `ACK` and `BYE from …`; without it
//! INVITEs are rejected 486. `register` registers (digest authentication,
//! refresh), prints state changes and behaves like `listen`, and
//! unregisters on Ctrl-C or SIGTERM; `message` sends one MESSAGE
//! (registering first with `--registrar`), prints the final response and
//! exits 0 on a 2xx. `call` starts a session (registering first likewise)
//! with the `--body` file as its offer (default type `application/sdp`;
//! without one, an SDP offer of its own), prints each response (`180
//! Ringing`, `200 OK`), hangs up `--hangup-after` seconds after the answer
//! (BYE) or on Ctrl-C or SIGTERM (CANCEL before the answer), and exits 0
//! if the call was answered, 1 otherwise. `subscribe` subscribes to an
//! event package (RFC 6665) and prints each NOTIFY. Each prints the
//! addresses it bound (with no `--bind`, a client binds the one address
//! that reaches its first hop), and any failed TLS handshake (peer,
//! reason); `-v` prints every SIP message sent and received. `serve` and
//! `listen` take `--require-client-cert` (mutual TLS, clients' roots from
//! `--ca`); a client presents `--cert/--key`.
//!
//! `parse` reads each file's exact bytes as one SIP message (datagram rules
//! of RFC 3261 §18.3), checks it the way a receiving element would (§8.2)
//! and prints one line per file:
//!
//! ```text
//! FILE<TAB>ok<TAB>request METHOD URI
//! FILE<TAB>ok<TAB>response CODE REASON
//! FILE<TAB>error<TAB>what went wrong
//! ```
//!
//! With `--json` each file gives one JSON object (one per line) with the
//! parsed structure. The exit status is 0 if every file parsed, 1 if any did
//! not, 2 on a usage error.

mod args;
mod heap;
mod json;
mod ladder;
mod media;
mod metrics;
mod net;
mod out;
mod subscribe;
mod tls_files;
mod transfer;
mod wire_log;

use args::{Cli, Command, ParseArgs};
use clap::{CommandFactory, Parser};
use sipline::message::validate::validate;
use sipline::message::{Message, StartLine};
use std::io::{self, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Usage errors exit 2; --help and --version (on standard output) 0.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match cli.command {
        Command::Parse(args) => parse_cmd(&args),
        Command::Completions(args) => {
            clap_complete::generate(args.shell, &mut Cli::command(), "sipline", &mut io::stdout());
            ExitCode::SUCCESS
        }
        network => net::run(network),
    }
}

fn parse_cmd(args: &ParseArgs) -> ExitCode {
    let as_json = args.json;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut all_ok = true;
    for file in &args.files {
        let file = file.as_str();
        let line = match std::fs::read(file) {
            Err(e) => {
                all_ok = false;
                if as_json {
                    json::error(file, &format!("cannot read: {e}"))
                } else {
                    format!("{file}\terror\tcannot read: {e}")
                }
            }
            Ok(bytes) => {
                let (ok, line) = describe(file, &bytes, as_json);
                all_ok &= ok;
                line
            }
        };
        if writeln!(out, "{line}").is_err() {
            return ExitCode::from(1);
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One output line for one file, and whether it parsed.
fn describe(file: &str, bytes: &[u8], as_json: bool) -> (bool, String) {
    let msg = match Message::parse(bytes) {
        Ok(m) => m,
        Err(e) => {
            let what = format!("{e} (answer {})", e.status());
            return (false, if as_json { json::error(file, &what) } else { format!("{file}\terror\t{what}") });
        }
    };
    if let Err(e) = validate(&msg) {
        let what = if msg.is_request() { format!("{e} (answer {})", e.status()) } else { format!("{e} (discard)") };
        return (false, if as_json { json::error(file, &what) } else { format!("{file}\terror\t{what}") });
    }
    if as_json {
        return (true, json::message(file, &msg));
    }
    let summary = match msg.start_line() {
        StartLine::Request(r) => format!("request {} {}", r.method, r.uri),
        StartLine::Response(s) => format!("response {} {}", s.code, s.reason()),
    };
    (true, format!("{file}\tok\t{summary}"))
}
