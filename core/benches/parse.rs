//! Parser throughput: `Message::parse` on realistic SIP messages, against
//! `httparse` on an HTTP/1.1 request of about the same size.
//!
//! Groups (every benchmark reports bytes/s through `Throughput::Bytes`;
//! messages/s is the reciprocal of the time per iteration):
//!
//! - `parse`: framing only — start line, header table, body — for each SIP
//!   sample, plus `httparse/http_request` as the reference.
//! - `parse_validate`: parse, then `validate`, which types every known header.
//! - `parse_typed`: parse, then the reads a transaction layer keys on: top
//!   Via branch, From and To tags, Call-ID and CSeq.
//!
//! Run with `cargo bench -p sipline --bench parse`; see BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sipline::message::validate::validate;
use sipline::message::Message;
use std::hint::black_box;

/// The SIP samples, by benchmark name.
const SIP: [(&str, &[u8]); 4] = [
    ("invite_sdp", include_bytes!("data/invite_sdp.sip")),
    ("ok_200", include_bytes!("data/ok_200.sip")),
    ("register_auth", include_bytes!("data/register_auth.sip")),
    ("unauthorized_401", include_bytes!("data/unauthorized_401.sip")),
];

/// The httparse reference input, about the size of `invite_sdp`.
const HTTP_REQUEST: &[u8] = include_bytes!("data/http_request.txt");

fn bytes(input: &[u8]) -> Throughput {
    Throughput::Bytes(u64::try_from(input.len()).expect("sample fits u64"))
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (name, input) in SIP {
        g.throughput(bytes(input));
        g.bench_function(BenchmarkId::new("sipline", name), |b| {
            b.iter(|| {
                let m = Message::parse(black_box(input)).expect("sample parses");
                // Expose the message by reference, as the httparse arm does
                // its header slots, rather than copying it out.
                black_box(&m);
            });
        });
    }
    g.throughput(bytes(HTTP_REQUEST));
    g.bench_function(BenchmarkId::new("httparse", "http_request"), |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let status = req.parse(black_box(HTTP_REQUEST)).expect("request parses");
            // Keep the header slots observable, as sipline's table is.
            black_box(&req);
            status
        });
    });
    g.finish();
}

fn parse_validate(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_validate");
    for (name, input) in SIP {
        g.throughput(bytes(input));
        g.bench_function(BenchmarkId::new("sipline", name), |b| {
            b.iter(|| {
                let m = Message::parse(black_box(input)).expect("sample parses");
                validate(&m).expect("sample is valid");
                black_box(&m);
            });
        });
    }
    g.finish();
}

/// The transaction key (RFC 3261 §17.1.3, §17.2.3) and dialog identifiers.
fn key<'a>(m: &Message<'a>) -> (Option<&'a str>, Option<&'a str>, Option<&'a str>, &'a str, u32) {
    let via = m.via().expect("Via").expect("valid Via");
    let from = m.from().expect("From").expect("valid From");
    let to = m.to().expect("To").expect("valid To");
    let call_id = m.call_id().expect("Call-ID").expect("valid Call-ID");
    let cseq = m.cseq().expect("CSeq").expect("valid CSeq");
    black_box(cseq.method());
    (via.branch(), from.tag(), to.tag(), call_id.as_str(), cseq.seq())
}

fn parse_typed(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_typed");
    for (name, input) in SIP {
        g.throughput(bytes(input));
        g.bench_function(BenchmarkId::new("sipline", name), |b| {
            b.iter(|| key(&Message::parse(black_box(input)).expect("sample parses")));
        });
    }
    g.finish();
}

/// Framing a message from a stream (one read holding it whole, and the
/// same bytes arriving in 100-octet reads) and then parsing it, against
/// parsing it from one datagram.
fn framing(c: &mut Criterion) {
    use sipline::message::{Framed, StreamFramer};
    let mut g = c.benchmark_group("framing");
    let (name, input) = SIP[0];
    g.throughput(bytes(input));
    g.bench_function(BenchmarkId::new("datagram_parse", name), |b| {
        b.iter(|| black_box(Message::parse(black_box(input)).is_ok()));
    });
    g.bench_function(BenchmarkId::new("stream_one_read", name), |b| {
        let mut framer = StreamFramer::default();
        b.iter(|| match framer.advance(black_box(input)) {
            Ok(Framed::Message { len }) => black_box(Message::parse(&input[..len]).is_ok()),
            other => panic!("{other:?}"),
        });
    });
    g.bench_function(BenchmarkId::new("stream_100_octet_reads", name), |b| {
        let mut framer = StreamFramer::default();
        b.iter(|| {
            let mut end = 0;
            loop {
                end = (end + 100).min(input.len());
                match framer.advance(black_box(&input[..end])) {
                    Ok(Framed::NeedMore) => {}
                    Ok(Framed::Message { len }) => break black_box(Message::parse(&input[..len]).is_ok()),
                    other => panic!("{other:?}"),
                }
            }
        });
    });
    g.finish();
}

criterion_group!(benches, parse, parse_validate, parse_typed, framing);
criterion_main!(benches);
