//! Locating a SIP server (RFC 3263 §4) with name lookups as outputs: the
//! core says "resolve this name", the runtime answers, the core orders
//! the answers. NAPTR is not used: the transport is already known from
//! the URI or the endpoint's default (§4.1 allows that), so the lookups
//! are SRV (§4.2, when the host is a name with no port) and A/AAAA.

use super::layer::{Output, Peer, TransportEvent};
use super::target::{Target, Transport};
use crate::rng::Rng;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// A name-resolution handle: the one [`super::TransportLayer::resolve`]
/// returns, or one in an [`Output::Resolve`] the runtime answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(u32);

/// Which records to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lookup {
    /// A and AAAA records of a host name.
    Ip,
    /// SRV records of a service name such as `_sip._udp.example.com`
    /// (answer [`Answer::Srv`], or [`Answer::NotFound`] if there are none
    /// or the runtime cannot look SRV records up).
    Srv,
}

/// One SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is tried first.
    pub priority: u16,
    /// Relative weight among records of one priority.
    pub weight: u16,
    /// The port.
    pub port: u16,
    /// The host name to look up next.
    pub target: String,
}

/// The runtime's answer to an [`Output::Resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// Addresses (for [`Lookup::Ip`]), in the resolver's order.
    Ips(Vec<IpAddr>),
    /// SRV records (for [`Lookup::Srv`]), in any order.
    Srv(Vec<SrvRecord>),
    /// No such records.
    NotFound,
    /// The lookup failed (timeout, server failure…).
    Failed(String),
}

/// Why a name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The name has no usable records.
    #[error("{0} has no SIP server records")]
    NotFound(String),
    /// The resolver failed.
    #[error("resolving {name} failed: {reason}")]
    Failed {
        /// The name.
        name: String,
        /// The runtime's words.
        reason: String,
    },
}

enum Stage {
    Srv,
    Ips { port: u16 },
    Targets { slots: Vec<(u16, Option<Vec<IpAddr>>)>, waiting: usize },
}

struct Job {
    transport: Transport,
    host: String,
    default_port: u16,
    stage: Stage,
    failure: Option<String>,
}

/// Resolutions in progress.
#[derive(Default)]
pub(crate) struct Resolver {
    next: u32,
    jobs: BTreeMap<QueryId, Job>,
    /// Runtime query → (job, SRV target slot).
    asked: BTreeMap<QueryId, (QueryId, Option<usize>)>,
}

impl Resolver {
    /// Drops the storage of emptied tables (after a burst; see `shed`).
    pub(crate) fn shed(&mut self) {
        crate::shed::shed(&mut self.jobs);
        crate::shed::shed(&mut self.asked);
    }

    fn id(&mut self) -> QueryId {
        self.next = self.next.wrapping_add(1);
        QueryId(self.next)
    }

    fn ask(&mut self, job: QueryId, slot: Option<usize>, name: String, lookup: Lookup, out: &mut Vec<Output>) {
        let query = self.id();
        self.asked.insert(query, (job, slot));
        out.push(Output::Resolve { query, name, lookup });
    }

    pub(crate) fn start(&mut self, target: &Target) -> (QueryId, Vec<Output>) {
        let job = self.id();
        let mut out = Vec::new();
        if let Some(addr) = target.socket_addr() {
            let peers = vec![peer(target.transport, &target.host, addr, true)];
            out.push(Output::Event(TransportEvent::Resolved { query: job, result: Ok(peers) }));
            return (job, out);
        }
        let stage = if target.srv { Stage::Srv } else { Stage::Ips { port: target.port } };
        let name = if target.srv { srv_name(target.transport, &target.host) } else { target.host.clone() };
        let lookup = if target.srv { Lookup::Srv } else { Lookup::Ip };
        self.jobs.insert(
            job,
            Job {
                transport: target.transport,
                host: target.host.clone(),
                default_port: target.port,
                stage,
                failure: None,
            },
        );
        self.ask(job, None, name, lookup, &mut out);
        (job, out)
    }

    pub(crate) fn answer(&mut self, query: QueryId, answer: Answer, rng: &mut Rng) -> Vec<Output> {
        let mut out = Vec::new();
        let Some((job_id, slot)) = self.asked.remove(&query) else { return out };
        let Some(job) = self.jobs.get_mut(&job_id) else { return out };
        if let Answer::Failed(reason) = &answer {
            job.failure = Some(reason.clone());
        }
        let mut done = None;
        match &mut job.stage {
            Stage::Srv => match answer {
                Answer::Srv(records) if records.iter().any(|r| r.target != ".") => {
                    let ordered = order_srv(records, rng);
                    let slots = ordered.iter().map(|r| (r.port, None)).collect();
                    job.stage = Stage::Targets { slots, waiting: ordered.len() };
                    for (i, r) in ordered.into_iter().enumerate() {
                        self.ask(job_id, Some(i), r.target, Lookup::Ip, &mut out);
                    }
                }
                // §4.2: no SRV records — A/AAAA on the host, default port.
                _ => {
                    let port = job.default_port;
                    let host = job.host.clone();
                    job.stage = Stage::Ips { port };
                    self.ask(job_id, None, host, Lookup::Ip, &mut out);
                }
            },
            Stage::Ips { port } => {
                let ips = if let Answer::Ips(ips) = answer { ips } else { Vec::new() };
                done = Some(ips.into_iter().map(|ip| SocketAddr::new(ip, *port)).collect::<Vec<_>>());
            }
            Stage::Targets { slots, waiting } => {
                if let Some(s) = slot.and_then(|i| slots.get_mut(i)) {
                    if s.1.is_none() {
                        *waiting -= 1;
                    }
                    s.1 = Some(if let Answer::Ips(ips) = answer { ips } else { Vec::new() });
                }
                if *waiting == 0 {
                    let addrs = slots
                        .iter()
                        .flat_map(|(port, ips)| ips.iter().flatten().map(|ip| SocketAddr::new(*ip, *port)))
                        .collect();
                    done = Some(addrs);
                }
            }
        }
        if let Some(mut addrs) = done {
            // An address named twice (two SRV records for one host, say)
            // is tried once, where it came first (§4.3 moves on to the
            // next element, not the same one again).
            let mut seen = std::collections::BTreeSet::new();
            addrs.retain(|a| seen.insert(*a));
            if let Some(job) = self.jobs.remove(&job_id) {
                let result = if addrs.is_empty() {
                    Err(match job.failure {
                        Some(reason) => ResolveError::Failed { name: job.host, reason },
                        None => ResolveError::NotFound(job.host),
                    })
                } else {
                    Ok(addrs.into_iter().map(|a| peer(job.transport, &job.host, a, false)).collect())
                };
                out.push(Output::Event(TransportEvent::Resolved { query: job_id, result }));
            }
        }
        out
    }
}

fn peer(transport: Transport, host: &str, remote: SocketAddr, literal: bool) -> Peer {
    let mut p = Peer::new(transport, remote);
    if transport == Transport::Tls && !literal {
        p.server_name = Some(Arc::from(host));
    }
    p
}

/// §4.2: `_sips._tcp` for TLS, `_sip._tcp` for TCP, `_sip._udp` for UDP.
fn srv_name(transport: Transport, host: &str) -> String {
    let service = match transport {
        Transport::Tls => "_sips._tcp",
        Transport::Tcp => "_sip._tcp",
        Transport::Udp => "_sip._udp",
    };
    format!("{service}.{host}")
}

/// RFC 2782: lowest priority first; within one priority, a weighted random
/// order (records of weight 0 first in the running sum, so they are rarely
/// picked before the others).
fn order_srv(mut records: Vec<SrvRecord>, rng: &mut Rng) -> Vec<SrvRecord> {
    records.retain(|r| r.target != ".");
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut ordered = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let priority = records[0].priority;
        let end = records.iter().position(|r| r.priority != priority).unwrap_or(records.len());
        let mut group: Vec<SrvRecord> = records.drain(..end).collect();
        while !group.is_empty() {
            let total: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
            let pick = if total == 0 { 0 } else { rng.next_u64() % (total + 1) };
            let mut running = 0;
            let mut chosen = group.len() - 1;
            for (i, r) in group.iter().enumerate() {
                running += u64::from(r.weight);
                if running >= pick {
                    chosen = i;
                    break;
                }
            }
            ordered.push(group.remove(chosen));
        }
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Uri;
    use crate::transport::target_for;

    fn target(uri: &str) -> Target {
        target_for(&Uri::parse(uri).unwrap(), Transport::Udp).unwrap()
    }

    fn asked(out: &[Output]) -> Vec<(QueryId, String, Lookup)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Resolve { query, name, lookup } => Some((*query, name.clone(), *lookup)),
                _ => None,
            })
            .collect()
    }

    fn resolved(out: &[Output]) -> Option<Result<Vec<SocketAddr>, ResolveError>> {
        out.iter().find_map(|o| match o {
            Output::Event(TransportEvent::Resolved { result, .. }) => {
                Some(result.clone().map(|p| p.into_iter().map(|p| p.remote).collect()))
            }
            _ => None,
        })
    }

    #[test]
    fn literals_resolve_at_once_and_ports_skip_srv_4_2() {
        let mut r = Resolver::default();
        let (_, out) = r.start(&target("sip:bob@192.0.2.4:5070"));
        assert_eq!(resolved(&out), Some(Ok(vec!["192.0.2.4:5070".parse().unwrap()])));
        let (_, out) = r.start(&target("sip:bob@example.com:5070;transport=tcp"));
        let q = asked(&out);
        assert_eq!((q[0].1.as_str(), q[0].2), ("example.com", Lookup::Ip));
        let out = r.answer(q[0].0, Answer::Ips(vec!["192.0.2.5".parse().unwrap()]), &mut Rng::new(1));
        assert_eq!(resolved(&out), Some(Ok(vec!["192.0.2.5:5070".parse().unwrap()])));
    }

    #[test]
    fn srv_first_then_targets_in_priority_order_4_2() {
        let mut r = Resolver::default();
        let mut rng = Rng::new(3);
        let (job, out) = r.start(&target("sips:bob@example.com"));
        let q = asked(&out);
        assert_eq!((q[0].1.as_str(), q[0].2), ("_sips._tcp.example.com", Lookup::Srv));
        let srv = |priority, port, target: &str| SrvRecord { priority, weight: 10, port, target: target.into() };
        let out = r.answer(
            q[0].0,
            Answer::Srv(vec![srv(20, 5071, "b.example.com"), srv(10, 5061, "a.example.com")]),
            &mut rng,
        );
        let q = asked(&out);
        assert_eq!(q.iter().map(|x| x.1.as_str()).collect::<Vec<_>>(), ["a.example.com", "b.example.com"]);
        // Answers in any order; the result keeps the SRV order.
        assert!(r.answer(q[1].0, Answer::Ips(vec!["192.0.2.2".parse().unwrap()]), &mut rng).is_empty());
        let out = r.answer(q[0].0, Answer::Ips(vec!["192.0.2.1".parse().unwrap()]), &mut rng);
        match &out[..] {
            [Output::Event(TransportEvent::Resolved { query, result: Ok(peers) })] => {
                assert_eq!(*query, job);
                let addrs: Vec<_> = peers.iter().map(|p| p.remote.to_string()).collect();
                assert_eq!(addrs, ["192.0.2.1:5061", "192.0.2.2:5071"]);
                // RFC 5922: the certificate must name the URI's host.
                assert!(peers.iter().all(|p| p.server_name.as_deref() == Some("example.com")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_srv_falls_back_to_a_records_and_failures_are_typed() {
        let mut r = Resolver::default();
        let mut rng = Rng::new(3);
        let (_, out) = r.start(&target("sip:bob@example.com"));
        let q = asked(&out);
        assert_eq!(q[0].1, "_sip._udp.example.com");
        let out = r.answer(q[0].0, Answer::NotFound, &mut rng);
        let q = asked(&out);
        assert_eq!((q[0].1.as_str(), q[0].2), ("example.com", Lookup::Ip));
        let out = r.answer(q[0].0, Answer::NotFound, &mut rng);
        assert_eq!(resolved(&out), Some(Err(ResolveError::NotFound("example.com".into()))));
        let (_, out) = r.start(&target("sip:bob@example.com:5060"));
        let out = r.answer(asked(&out)[0].0, Answer::Failed("timeout".into()), &mut rng);
        assert_eq!(
            resolved(&out),
            Some(Err(ResolveError::Failed { name: "example.com".into(), reason: "timeout".into() }))
        );
        // A stale or unknown query is ignored.
        assert!(r.answer(QueryId(999), Answer::NotFound, &mut rng).is_empty());
    }

    #[test]
    fn an_address_named_twice_is_tried_once_4_3() {
        let mut r = Resolver::default();
        let mut rng = Rng::new(5);
        let (_, out) = r.start(&target("sip:bob@example.com"));
        let srv = |priority, target: &str| SrvRecord { priority, weight: 0, port: 5060, target: target.into() };
        let out = r.answer(asked(&out)[0].0, Answer::Srv(vec![srv(10, "a"), srv(20, "b")]), &mut rng);
        let q = asked(&out);
        let ip = |s: &str| Answer::Ips(vec![s.parse().unwrap()]);
        assert!(r.answer(q[0].0, ip("192.0.2.1"), &mut rng).is_empty());
        let out = r.answer(q[1].0, ip("192.0.2.1"), &mut rng);
        assert_eq!(resolved(&out), Some(Ok(vec!["192.0.2.1:5060".parse().unwrap()])));
    }

    #[test]
    fn priorities_are_never_mixed_whatever_the_weights_2782() {
        let mut rng = Rng::new(21);
        let rec = |priority, weight, target: &str| SrvRecord { priority, weight, port: 5060, target: target.into() };
        for _ in 0..500 {
            let order = order_srv(
                vec![
                    rec(20, 1000, "late"),
                    rec(10, 0, "zero"),
                    rec(10, 5, "small"),
                    rec(30, 0, "."),
                    rec(5, 1, "first"),
                ],
                &mut rng,
            );
            let names: Vec<&str> = order.iter().map(|r| r.target.as_str()).collect();
            assert_eq!(names[0], "first");
            assert_eq!(names[3], "late");
            assert_eq!(names.len(), 4, "the \".\" target means no service (RFC 2782)");
        }
    }

    #[test]
    fn weights_share_the_first_place_2782() {
        let mut rng = Rng::new(9);
        let rec = |weight, target: &str| SrvRecord { priority: 1, weight, port: 5060, target: target.into() };
        let mut first_heavy = 0;
        for _ in 0..1000 {
            let order = order_srv(vec![rec(10, "light"), rec(90, "heavy"), rec(0, "zero")], &mut rng);
            assert_eq!(order.len(), 3);
            if order[0].target == "heavy" {
                first_heavy += 1;
            }
        }
        assert!((800..980).contains(&first_heavy), "heavy first {first_heavy}/1000");
    }
}
