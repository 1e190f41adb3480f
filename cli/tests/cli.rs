//! The `sipline parse` command end to end: output lines, JSON and exit codes.

use std::process::Command;

fn sipline(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sipline"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn one_line_per_file_and_exit_status() {
    let (code, out) = sipline(&["parse", "samples/invite.sip", "samples/ok.sip"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "samples/invite.sip\tok\trequest INVITE sip:bob@example.com\nsamples/ok.sip\tok\tresponse 200 OK\n"
    );
    let (code, out) = sipline(&["parse", "samples/ok.sip", "samples/truncated.sip", "no/such/file"]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "samples/ok.sip\tok\tresponse 200 OK");
    assert_eq!(
        lines[1],
        "samples/truncated.sip\terror\tbody truncated: Content-Length 10, 5 octets present (answer 400)"
    );
    assert!(lines[2].starts_with("no/such/file\terror\tcannot read:"));
}

#[test]
fn torture_vectors_through_the_cli() {
    let (code, out) = sipline(&["parse", "tests/corpus/rfc4475/badvers.dat", "tests/corpus/rfc4475/insuf.dat"]);
    assert_eq!(code, 1);
    assert!(out.contains("badvers.dat\terror\tSIP version not supported (answer 505)"), "{out}");
    assert!(out.contains("insuf.dat\terror\tmissing Call-ID header (answer 400)"), "{out}");
    // Binary bodies with NULs are read exactly.
    let (code, out) = sipline(&["parse", "tests/corpus/rfc4475/mpart01.dat"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn json_output() {
    let (code, out) = sipline(&["parse", "--json", "samples/invite.sip"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("{\"file\":\"samples/invite.sip\",\"ok\":true,\"kind\":\"request\",\"method\":\"INVITE\""),
        "{out}"
    );
    assert!(out.contains("\"branch\":\"z9hG4bK74bf9\""), "{out}");
    assert!(out.contains("\"parsed\":{\"seq\":1,\"method\":\"INVITE\"}"), "{out}");
    assert_eq!(out.lines().count(), 1);
    let (code, out) = sipline(&["parse", "--json", "samples/truncated.sip"]);
    assert_eq!(code, 1);
    assert!(out.contains("\"ok\":false"));
}

#[test]
fn usage_errors() {
    assert_eq!(sipline(&[]).0, 2);
    assert_eq!(sipline(&["parse"]).0, 2);
    assert_eq!(sipline(&["parse", "--bogus", "x"]).0, 2);
}
