//! The command line itself (issue 22): `--version`, `--help`, options
//! refused by the subcommands they are not for, shell completions, and
//! `serve --config FILE` (the example file, the command line overriding
//! it, relative paths, and the errors a bad file gives).

mod support;

use sipline_tests::kamailio::TempDir;
use std::process::{Command, Output};
use support::Listener;

/// The repository's example configuration.
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/serve.example.toml");

fn sipline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sipline")).args(args).env_remove("SIPLINE_PASSWORD").output().expect("run sipline")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_and_help_exit_0() {
    for (args, name) in
        [(&["--version"][..], "sipline"), (&["-V"], "sipline"), (&["serve", "--version"], "sipline-serve")]
    {
        let out = sipline(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert_eq!(text(&out.stdout).trim(), format!("{name} {}", env!("CARGO_PKG_VERSION")), "{args:?}");
    }
    for command in ["parse", "serve", "listen", "register", "message", "call", "subscribe", "completions"] {
        for help in ["-h", "--help"] {
            let out = sipline(&[command, help]);
            assert_eq!(out.status.code(), Some(0), "{command} {help}");
            let said = text(&out.stdout);
            assert!(said.contains(&format!("Usage: sipline {command}")), "{command} {help}:\n{said}");
            assert!(said.contains("Examples:\n  sipline "), "{command} {help}: no examples:\n{said}");
        }
    }
    let out = sipline(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let said = text(&out.stdout);
    for command in ["parse", "serve", "listen", "register", "message", "call", "subscribe", "completions"] {
        assert!(said.contains(&format!("\n  {command} ")), "{command} not listed:\n{said}");
    }
    // No command at all: the help, as a usage error.
    let out = sipline(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Usage: sipline <COMMAND>"), "{}", text(&out.stderr));
}

/// The password from the environment is named in the help, never shown.
#[test]
fn help_hides_the_password_from_the_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_sipline"))
        .args(["message", "--help"])
        .env("SIPLINE_PASSWORD", "hunter2-not-shown")
        .output()
        .expect("run sipline");
    assert_eq!(out.status.code(), Some(0));
    let said = text(&out.stdout);
    assert!(said.contains("[env: SIPLINE_PASSWORD]"), "{said}");
    assert!(!said.contains("hunter2"), "{said}");
}

/// Each subcommand takes its own options only: another's is a usage
/// error (2), in clap's words, naming the option.
#[test]
fn options_of_other_commands_are_refused() {
    for (args, wrong) in [
        (&["message", "--workers", "2", "sip:x@127.0.0.1", "hi"][..], "--workers"),
        (&["message", "sip:x@127.0.0.1", "hi", "--answer"], "--answer"),
        (&["call", "sip:x@127.0.0.1", "--answer"], "--answer"),
        (
            &["register", "sip:x@127.0.0.1", "--registrar", "sip:127.0.0.1", "--require-client-cert"],
            "--require-client-cert",
        ),
        (&["listen", "--registrar", "sip:127.0.0.1"], "--registrar"),
        (&["listen", "--tls-self-signed"], "--tls-self-signed"),
        (&["serve", "--transport", "tcp"], "--transport"),
        (&["serve", "--password", "x"], "--password"),
        (&["subscribe", "sip:x@127.0.0.1", "--event", "presence", "--hangup-after", "1"], "--hangup-after"),
        (&["parse", "--verbose", "samples/ok.sip"], "--verbose"),
    ] {
        let out = sipline(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with(&format!("error: unexpected argument '{wrong}' found")), "{args:?}: {err}");
        assert!(err.contains(&format!("Usage: sipline {} ", args[0])), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// Values are checked before anything starts: a usage error naming the
/// option and what it takes.
#[test]
fn bad_values_are_usage_errors() {
    for (args, said) in [
        (&["serve", "--workers", "0"][..], "at least 1"),
        (&["serve", "--bind", "127.0.0.1:65536"], "--bind <ADDR>"),
        (&["serve", "--flood-limit", "fast"], "RATE[/BURST] or off"),
        (&["serve", "--overload-delay", "five"], "MS or off"),
        (&["serve", "--digest", "md5,sha-1"], "\"sha-1\" is not md5 or sha-256"),
        (&["serve", "--location", "memcached://x"], "memory or redis://HOST:PORT[/DB]"),
        (&["serve", "--ban", "forever"], "not a number of seconds"),
        (&["listen", "--transport", "sctp"], "[possible values: udp, tcp, tls]"),
        (&["call", "sip:x@127.0.0.1", "--hold-after", "soon"], "--hold-after <SECS>"),
        (&["call", "sip:x@127.0.0.1", "--transfer-after", "1"], "--transfer-to <URI>"),
        (&["call", "sip:x@127.0.0.1", "--content-type", "text/plain"], "--body <FILE>"),
        (&["message", "sip:x@127.0.0.1", "hi", "--registrar", "sip:a", "--proxy", "sip:b"], "cannot be used with"),
        (&["message", "sip:x@127.0.0.1", "hi", "--cert", "c.pem"], "--key <FILE>"),
        (&["register", "sip:x@127.0.0.1"], "--registrar <URI>"),
        (&["completions", "tcsh"], "possible values"),
    ] {
        let out = sipline(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains(said), "{args:?}: no {said:?} in {err}");
    }
}

#[test]
fn completions_for_each_shell() {
    for (shell, mark) in [("bash", "complete -F"), ("zsh", "#compdef sipline"), ("fish", "complete -c sipline")] {
        let out = sipline(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        assert!(script.contains(mark), "{shell}: no {mark:?}");
        // The subcommands' own options are completed.
        for option in ["hangup-after", "tls-self-signed", "password-file", "config"] {
            assert!(script.contains(option), "{shell}: no {option}");
        }
    }
}

/// `sipline serve` with `args`, until it says it is serving: that line.
fn serving(args: &[&str]) -> (Listener, String) {
    let mut serve = Listener::start(args);
    let line = serve.lines_starting("serving ", 1).remove(0);
    (serve, line)
}

/// The example file runs as it is (but on a free port), and the command
/// line overrides it option by option.
#[test]
fn serve_runs_the_example_file_with_overrides() {
    let (mut serve, line) = serving(&["serve", "--config", EXAMPLE, "--bind", "127.0.0.1:0"]);
    // domain and workers from the file, the address from the command line.
    assert!(line.starts_with("serving example.test: registrar and proxy"), "{line}");
    assert!(line.contains(", 2 workers;"), "{line}");
    let udp = serve.bound("udp");
    assert!(udp.ip().is_loopback() && udp.port() != 5060, "{udp}");
    drop(serve);

    let args = ["serve", "--config", EXAMPLE, "--bind", "127.0.0.1:0", "--domain", "override.test", "--workers", "1"];
    let (_serve, line) = serving(&args);
    assert!(line.starts_with("serving override.test: registrar and proxy"), "{line}");
    assert!(!line.contains("workers"), "one worker: {line}");
}

/// Paths in the file are taken from its folder; switches and values of
/// the file apply (`quiet`, `tls-self-signed`).
#[test]
fn serve_takes_paths_relative_to_the_file() {
    let dir = TempDir::new("sipline-config");
    dir.write("users.txt", "alice:alicepw\n");
    let config = dir.write(
        "serve.toml",
        "domain = \"files.test\"\nbind = \"127.0.0.1:0\"\nusers = \"users.txt\"\nworkers = 1\ntls-self-signed = true\n",
    );
    let config = config.to_str().expect("utf-8 path");
    let (mut serve, _) = serving(&["serve", "--config", config]);
    serve.drain();
    assert!(!serve.seen.iter().any(|l| l.contains("demo account")), "the users file was not read: {:#?}", serve.seen);
    // tls-self-signed = true: a TLS listener beside UDP and TCP.
    let tls = serve.bound("tls");
    assert!(tls.ip().is_loopback());
    let ca = serve.lines_starting("tls: self-signed certificate for files.test", 1).remove(0);
    let _ = std::fs::remove_file(ca.rsplit(' ').next().expect("a path"));
}

/// A file that is not TOML, or has a key that is no option, or a value
/// an option refuses, is a usage error naming the problem.
#[test]
fn bad_config_files_are_usage_errors() {
    let dir = TempDir::new("sipline-config-bad");
    for (name, content, said) in [
        ("syntax.toml", "domain = \"a.test\"\nworkers = \n", "line 2"),
        ("unknown.toml", "domain = \"a.test\"\nbogus-option = 1\n", "unknown field `bogus-option`"),
        ("nested.toml", "config = \"other.toml\"\n", "unknown field `config`"),
        ("workers.toml", "workers = 0\n", "nonzero"),
        ("flood.toml", "flood-limit = \"fast\"\n", "RATE[/BURST] or off"),
        ("type.toml", "min-expires = \"soon\"\n", "min-expires"),
    ] {
        let path = dir.write(name, content);
        let path = path.to_str().expect("utf-8 path");
        let out = sipline(&["serve", "--config", path, "--bind", "127.0.0.1:0"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.starts_with(&format!("error: --config {path}: ")), "{name}: {err}");
        assert!(err.contains(said), "{name}: no {said:?} in {err}");
        assert!(err.contains("Usage: sipline serve"), "{name}: {err}");
        assert!(!text(&out.stdout).contains("serving"), "{name}");
    }
    let out = sipline(&["serve", "--config", "/no/such/sipline.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("error: --config /no/such/sipline.toml: "), "{}", text(&out.stderr));
}
