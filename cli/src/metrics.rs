//! `serve --metrics ADDR` (issue 22): the server's metrics
//! ([`sipline::metrics::Metrics`]) and the process's resident memory in
//! the Prometheus text format (version 0.0.4), at `http://ADDR/metrics`.
//!
//! The exposition is prometheus-client's encoder; the HTTP side is a small
//! handler on the CLI's tokio runtime: one request per connection (HTTP/1.x
//! `GET` or `HEAD`, the head read with httparse, at most 8 KiB within 5 s),
//! answered and closed — all a scraper needs, and nothing a stranger can
//! hold open. The exporter only reads atomics: it never waits on a worker.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use sipline::metrics::{MetricKind, Metrics, Sample};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head and take the answer.
const CLIENT_TIME: Duration = Duration::from_secs(5);
/// Scrapes served at once; more wait to be accepted.
const MAX_CLIENTS: usize = 16;

/// What is exposed: the core's snapshot, and what only the process can
/// see.
#[derive(Debug)]
struct Exposition {
    metrics: Arc<Metrics>,
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in self.metrics.snapshot().families {
            // prometheus-client writes the `_total` of a counter itself.
            let (name, kind) = match family.kind {
                MetricKind::Counter => (family.name.strip_suffix("_total").unwrap_or(family.name), MetricType::Counter),
                MetricKind::Gauge => (family.name, MetricType::Gauge),
            };
            let mut metric = encoder.encode_descriptor(name, family.help, None, kind)?;
            for Sample { labels, value } in &family.samples {
                let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                // No labels: `name value` (no `{}`).
                let mut one = metric.encode_family(&labels)?;
                // Counts as integers (`3`, not `3.0`); fractions as floats.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                match (family.kind, value.fract() == 0.0 && value.abs() < 9.0e15) {
                    (MetricKind::Counter, true) => one.encode_counter::<NoLabelSet, _, f64>(&(*value as u64), None)?,
                    (MetricKind::Counter, false) => one.encode_counter::<NoLabelSet, _, f64>(value, None)?,
                    (MetricKind::Gauge, true) => one.encode_gauge(&(*value as i64))?,
                    (MetricKind::Gauge, false) => one.encode_gauge(value)?,
                }
            }
        }
        if let Some(bytes) = resident_bytes() {
            let mut metric = encoder.encode_descriptor(
                "sipline_process_resident_memory_bytes",
                "Resident set size of the sipline process (/proc/self/statm).",
                None,
                MetricType::Gauge,
            )?;
            metric.encode_gauge(&i64::try_from(bytes).unwrap_or(i64::MAX))?;
        }
        Ok(())
    }
}

/// The process's resident set size in bytes: the second field of
/// `/proc/self/statm` (pages) times the page size; `None` off Linux.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(pages * u64::try_from(rustix::param::page_size()).ok()?)
}

/// The text of one scrape.
fn render(registry: &Registry) -> String {
    let mut text = String::new();
    if prometheus_client::encoding::prometheus_text::encode(&mut text, registry).is_err() {
        // Writing to a String cannot fail; a collector's error would end here.
        text.clear();
    }
    text
}

/// Binds `addr` and serves the metrics there from a task of the current
/// tokio runtime, for as long as it runs; the address bound.
pub(crate) async fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition { metrics }));
    let registry = Arc::new(registry);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { return };
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: try again shortly.
                    tracing::warn!(target: "sipline::metrics", "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let registry = Arc::clone(&registry);
            tokio::spawn(async move {
                if tokio::time::timeout(CLIENT_TIME, answer(stream, &registry)).await.is_err() {
                    tracing::debug!(target: "sipline::metrics", %peer, "scrape timed out");
                }
                drop(permit);
            });
        }
    });
    Ok(bound)
}

/// Reads one request head from `stream` and answers it.
async fn answer(mut stream: TcpStream, registry: &Registry) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let (method, path) = loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let method = request.method.unwrap_or_default().to_owned();
                let path = request.path.unwrap_or_default().to_owned();
                break (method, path);
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                let _ = reply(&mut stream, "431 Request Header Fields Too Large", "text/plain", b"", true).await;
                return;
            }
            Err(_) => {
                let _ = reply(&mut stream, "400 Bad Request", "text/plain", b"bad request\n", true).await;
                return;
            }
        }
    };
    // The query string, if any, is not ours to read.
    let route = path.split('?').next().unwrap_or_default();
    let _ = match (method.as_str(), route) {
        ("GET" | "HEAD", "/metrics") => {
            let body = render(registry);
            let content_type = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
            reply(&mut stream, "200 OK", content_type, body.as_bytes(), method == "GET").await
        }
        (_, "/metrics") => reply(&mut stream, "405 Method Not Allowed", "text/plain", b"GET or HEAD\n", true).await,
        _ => reply(&mut stream, "404 Not Found", "text/plain", b"the metrics are at /metrics\n", true).await,
    };
}

/// Writes a whole response (`body` only if `with_body`), closing after it.
async fn reply(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    with_body: bool,
) -> std::io::Result<()> {
    let mut allow = "";
    if status.starts_with("405") {
        allow = "Allow: GET, HEAD\r\n";
    }
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if with_body {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}
