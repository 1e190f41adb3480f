//! `sipline serve --metrics ADDR` (issue 22), as an operator runs it: a
//! user registers with `sipline register`, and a scrape over HTTP (ureq, a
//! real client) gets the Prometheus text format (checked line by line
//! against the format's grammar) with the binding, the registrations and
//! the process's memory in it. Loopback only; every wait is bounded.

// Counts are whole numbers, exact in an f64: compared exactly.
#![allow(clippy::float_cmp)]

mod support;

use sipline_tests::kamailio::{TempDir, DOMAIN};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::Listener;

/// A metric's labels, sorted by name.
type Labels = Vec<(String, String)>;

/// One scrape, parsed: (name, labels) → value, and the family types.
#[derive(Debug)]
struct Exposition {
    samples: BTreeMap<(String, Labels), f64>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut labels: Labels = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        labels.sort();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Reads `{k="v",…}` at the start of `s`; the labels and the rest.
fn labels(s: &str) -> Result<(Labels, &str), String> {
    let mut out = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            out.sort();
            return Ok((out, r));
        }
        let (key, r) = rest.split_once("=\"").ok_or("a label without =\"")?;
        if !is_name(key) || key.starts_with("__") {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("newline in a label value".into()),
                (_, c) => value.push(c),
            }
        };
        out.push((key.to_owned(), value));
        rest = &r[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Parses `text` as the Prometheus text exposition format (0.0.4): HELP
/// and TYPE lines before their family's samples, once each; sample names,
/// label sets and values well formed; no sample twice.
fn parse(text: &str) -> Result<Exposition, String> {
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    let mut helps = BTreeMap::new();
    if !text.ends_with('\n') {
        return Err("the last line has no line feed".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !is_name(name) || !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at("bad TYPE".into()));
                    }
                    if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(at("a second TYPE".into()));
                    }
                    if samples.keys().any(|(s, _): &(String, Labels)| s == name) {
                        return Err(at("TYPE after the samples".into()));
                    }
                }
                (Some("HELP"), Some(name), help) => {
                    let first = helps.insert(name.to_owned(), help.unwrap_or("").to_owned()).is_none();
                    if !(is_name(name) && first) {
                        return Err(at("bad or second HELP".into()));
                    }
                }
                _ => {} // any other comment
            }
            continue;
        }
        let end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..end];
        if !is_name(name) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) =
            if line[end..].starts_with('{') { labels(&line[end..]).map_err(at)? } else { (Vec::new(), &line[end..]) };
        let mut fields = rest.strip_prefix(' ').ok_or_else(|| at("no space before the value".into()))?.split(' ');
        let value = match fields.next().unwrap_or_default() {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|e| at(format!("value: {e}")))?,
        };
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|e| at(format!("timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        if !types.contains_key(name) {
            return Err(at("a sample before its TYPE".into()));
        }
        if samples.insert((name.to_owned(), labels), value).is_some() {
            return Err(at("the same sample twice".into()));
        }
    }
    if let Some(name) = types.keys().find(|t| !helps.contains_key(*t)) {
        return Err(format!("{name} has no HELP"));
    }
    Ok(Exposition { samples, types })
}

/// GETs `url`: its status, Content-Type and body.
fn get(url: &str) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = response.body_mut().read_to_string().unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
    (status, content_type, body)
}

/// Scrapes `url` until `ready` holds (bounded), the last scrape parsed.
fn scrape_until(url: &str, what: &str, ready: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, content_type, body) = get(url);
        assert_eq!(status, 200, "{body}");
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        let parsed = parse(&body).unwrap_or_else(|e| panic!("not the text format: {e}\n{body}"));
        if ready(&parsed) {
            return parsed;
        }
        assert!(Instant::now() < deadline, "{what}: never so; last scrape:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_exposes_its_metrics_over_http() {
    let dir = TempDir::new("sipline-metrics");
    let users = support::users_file(&dir);
    let mut serve = Listener::start(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--domain",
        DOMAIN,
        "--users",
        &users,
        "--workers",
        "2",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let line = serve.lines_starting("metrics http://", 1).remove(0);
    let url = line.strip_prefix("metrics ").expect("the URL").to_owned();
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"), "{url}");
    let udp = serve.bound("udp");
    serve.lines_starting("serving ", 1);

    // Before anyone registered: the families are there, at 0.
    let before = scrape_until(&url, "the first scrape", |_| true);
    assert_eq!(before.get("sipline_registrar_bindings", &[]), Some(0.0));
    assert_eq!(before.get("sipline_registrations_total", &[("result", "ok")]), Some(0.0));
    assert_eq!(before.types.get("sipline_registrations_total").map(String::as_str), Some("counter"));
    assert_eq!(before.types.get("sipline_registrar_bindings").map(String::as_str), Some("gauge"));
    // One queue gauge per worker.
    for worker in ["0", "1"] {
        assert!(before.get("sipline_worker_queue_delay_seconds", &[("worker", worker)]).is_some(), "{before:?}");
    }

    let aor = format!("sip:alice@{DOMAIN}");
    let registrar = format!("sip:{udp}");
    let mut register = Listener::start(&[
        "register",
        &aor,
        "--registrar",
        &registrar,
        "--user",
        "alice",
        "--password",
        "alicepw",
        "--bind",
        "127.0.0.1:0",
    ]);
    register.lines_starting("registration: registered as ", 1);

    let after = scrape_until(&url, "one binding", |e| e.get("sipline_registrar_bindings", &[]) == Some(1.0));
    assert!(after.get("sipline_registrations_total", &[("result", "ok")]).unwrap_or(0.0) >= 1.0, "{after:?}");
    assert!(after.get("sipline_registrations_total", &[("result", "challenged")]).unwrap_or(0.0) >= 1.0);
    assert!(after.get("sipline_requests_received_total", &[("method", "REGISTER")]).unwrap_or(0.0) >= 2.0);
    assert!(after.get("sipline_responses_sent_total", &[("class", "2xx")]).unwrap_or(0.0) >= 1.0);
    assert_eq!(after.get("sipline_registrar_aors", &[]), Some(1.0));
    let memory = after.get("sipline_process_resident_memory_bytes", &[]).expect("memory");
    assert!(memory > 1_000_000.0, "a running server holds more than 1 MB: {memory}");
    let auth_failures = after.get("sipline_auth_failures_total", &[]);
    assert_eq!(auth_failures, Some(0.0), "alice's password was right");

    // Other paths and methods are refused; the server goes on.
    let base = url.strip_suffix("/metrics").expect("a base");
    assert_eq!(get(&format!("{base}/")).0, 404);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let posted = agent.post(&url).send("x").expect("POST");
    assert_eq!(posted.status().as_u16(), 405);
    assert!(parse(&get(&url).2).is_ok());
}

#[test]
fn a_metrics_address_that_cannot_be_bound_fails_serve() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let mut serve = Listener::start(&["serve", "--bind", "127.0.0.1:0", "--metrics", &addr]);
    let line = serve.lines_starting("--metrics ", 1).remove(0);
    assert!(line.starts_with(&format!("--metrics {addr}: ")), "{line}");
    // And a malformed one is a usage error (clap's).
    let mut bad = Listener::start(&["serve", "--metrics", "localhost"]);
    let line = bad.lines_starting("error: invalid value 'localhost' for '--metrics", 1).remove(0);
    assert!(line.contains("invalid socket address"), "{line}");
}

#[test]
fn the_parser_refuses_what_is_not_the_format() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\\\"\"} 1\nb 2\n";
    assert!(parse(ok).is_err(), "b has no TYPE");
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\\\"\"} 1\n";
    assert_eq!(parse(ok).unwrap().get("a_total", &[("k", "v\"")]), Some(1.0));
    assert!(parse("# HELP a A.\n# TYPE a gauge\na{k=\"v} 1\n").is_err());
    assert!(parse("# HELP a A.\n# TYPE a gauge\na 1 2 3\n").is_err());
    assert!(parse("# HELP a A.\n# TYPE a gauge\na one\n").is_err());
    assert!(parse("# HELP a A.\n# TYPE a gauge\na 1\na 2\n").is_err());
    assert!(parse("# TYPE a gauge\na 1\n").is_err(), "no HELP");
}
