//! The response context of a stateful proxy (RFC 3261 §16.7): what to do
//! with each response a branch receives, and which final response goes
//! upstream once every branch has answered.

use super::code;
use super::forward::rewrite_response;
use crate::message::{HeaderName, Message, StatusCode};

/// One branch of a response context (the index it was created with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BranchId(u32);

impl BranchId {
    /// The branch's index in its context, from 0: what
    /// [`branch_for`](super::branch_for) takes to make each branch differ.
    pub fn index(self) -> u32 {
        self.0
    }
}

/// What the caller does with a response a branch received
/// ([`ResponseContext::on_response`] and friends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Drop it: a 100 Trying (§16.7 step 5: never forwarded), a response
    /// after a final one was sent upstream (except a 2xx), a repeated final
    /// response or an unknown branch.
    Absorb,
    /// Send it upstream now through [`forward_response`](super::forward_response):
    /// a provisional response other than 100, or any 2xx — a 2xx is never
    /// held (§16.7 step 5), even after another final response. After a
    /// 2xx, cancel the branches still pending (§16.7 step 10,
    /// [`ResponseContext::should_cancel_others`]).
    ForwardNow,
    /// Keep it as a candidate: a final non-2xx response while other
    /// branches are pending (§16.7 step 4).
    Hold,
    /// Every branch is done, or a 6xx arrived, and no final response has
    /// gone upstream yet: send the best one (§16.7 step 6). After a 6xx,
    /// also cancel the pending branches
    /// ([`ResponseContext::should_cancel_others`]).
    SendBest(Best),
}

/// The final response §16.7 step 6 chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Best {
    /// The final response this branch received: write it with
    /// [`ResponseContext::write_best`] (our Via removed, 503 turned into
    /// 500, challenges merged).
    Branch(BranchId),
    /// No response to forward: answer the request with this code yourself
    /// — 408 when the chosen outcome is a timeout (§16.8) or no branch
    /// answered at all, 500 for a transport error (§16.9: a 503, made 500
    /// by §16.7 step 6).
    Generate(StatusCode),
}

/// The outcome of one branch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// No final response yet.
    Pending,
    /// A 2xx, forwarded at once and never a candidate.
    Success,
    /// A final non-2xx response: its code, the bytes as received (`None`
    /// for a timeout or transport error standing in for one) and the order
    /// of arrival.
    Final { code: StatusCode, bytes: Option<Vec<u8>>, order: u32 },
}

/// §16.7: the responses of every branch of one forwarded request.
///
/// ```
/// use sipline::message::StatusCode;
/// use sipline::proxy::{Action, Best, ResponseContext};
/// let code = |c| StatusCode::new(c).unwrap();
/// let mut ctx = ResponseContext::new();
/// let (a, b) = (ctx.add_branch().unwrap(), ctx.add_branch().unwrap());
/// assert_eq!(ctx.on_response(a, code(180), b""), Action::ForwardNow);
/// assert_eq!(ctx.on_response(a, code(500), b""), Action::Hold);
/// // 4xx beats 5xx (§16.7 step 6).
/// assert_eq!(ctx.on_response(b, code(404), b""), Action::SendBest(Best::Branch(b)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseContext {
    branches: Vec<Outcome>,
    arrivals: u32,
    /// A final response went upstream (a 2xx, or the best one).
    final_sent: bool,
    /// A 2xx went upstream: there is no best response to choose.
    success_sent: bool,
    /// A 6xx arrived: no new branches (§16.7 step 5).
    closed: bool,
}

/// §16.7 step 6: "the proxy SHOULD give preference to responses that
/// provide information affecting resubmission of this request, such as
/// 401, 407, 415, 420, and 484 if the 4xx class is chosen."
fn is_preferred(code: StatusCode) -> bool {
    matches!(code.as_u16(), 401 | 407 | 415 | 420 | 484)
}

impl ResponseContext {
    /// An empty context.
    pub fn new() -> ResponseContext {
        ResponseContext::default()
    }

    /// A new branch; `None` once a 6xx arrived (§16.7 step 5: "it MUST NOT
    /// create any new branches in this context") or a final response was
    /// sent upstream.
    pub fn add_branch(&mut self) -> Option<BranchId> {
        if self.closed || self.final_sent {
            return None;
        }
        let id = BranchId(u32::try_from(self.branches.len()).ok()?);
        self.branches.push(Outcome::Pending);
        Some(id)
    }

    /// §16.7 step 10 (after a 2xx went upstream) and step 5 (a 6xx): whether
    /// a final response with `code` means the pending branches are to be
    /// cancelled ([`pending`](Self::pending), [`forward_cancel`](super::forward_cancel)).
    pub fn should_cancel_others(code: StatusCode) -> bool {
        code.is_success() || code.class() == 6
    }

    /// The branches without a final response yet.
    pub fn pending(&self) -> impl Iterator<Item = BranchId> + '_ {
        self.branches.iter().zip(0u32..).filter(|(o, _)| **o == Outcome::Pending).map(|(_, i)| BranchId(i))
    }

    /// Whether every branch has its final outcome.
    pub fn is_complete(&self) -> bool {
        self.pending().next().is_none()
    }

    /// §16.7 steps 4–5: a response with status `code` arrived on `branch`;
    /// `response` is the message as received (kept for final non-2xx
    /// responses, which may be chosen later).
    pub fn on_response(&mut self, branch: BranchId, code: StatusCode, response: &[u8]) -> Action {
        let Some(slot) = self.branches.get_mut(branch.0 as usize) else {
            return Action::Absorb;
        };
        // §16.7 step 5: "any 2xx response … MUST be forwarded immediately".
        if code.is_success() {
            if *slot == Outcome::Pending {
                *slot = Outcome::Success;
            }
            self.final_sent = true;
            self.success_sent = true;
            return Action::ForwardNow;
        }
        // §16.7 step 5: "any provisional response other than a 100 (Trying)
        // … MUST be forwarded immediately"; none after a final one went up.
        if code.is_provisional() {
            let forward = code.as_u16() != 100 && *slot == Outcome::Pending && !self.final_sent;
            return if forward { Action::ForwardNow } else { Action::Absorb };
        }
        if *slot != Outcome::Pending {
            return Action::Absorb;
        }
        // §16.7 step 4: keep the final response in the context.
        *slot = Outcome::Final { code, bytes: Some(response.to_vec()), order: self.arrivals };
        self.arrivals = self.arrivals.saturating_add(1);
        if code.class() == 6 {
            // §16.7 step 5: no new branches, and the pending ones are
            // cancelled. The 6xx goes upstream now rather than after the
            // cancelled branches answer: step 6 would choose it anyway
            // ("any 6xx wins over everything but a 2xx", and a later 2xx
            // is still forwarded, step 5), while a branch that never sent
            // a provisional response cannot be cancelled (§9.1) and would
            // hold the caller until its Timer B.
            self.closed = true;
        }
        self.settle()
    }

    /// §16.8: the branch timed out (timer C, or the client transaction's
    /// timeout) — "as though it received a 408 (Request Timeout)".
    pub fn on_timeout(&mut self, branch: BranchId) -> Action {
        self.on_missing(branch, code::REQUEST_TIMEOUT)
    }

    /// §16.9: the branch failed in the transport — "as if a 503 (Service
    /// Unavailable) status code had been received".
    pub fn on_transport_error(&mut self, branch: BranchId) -> Action {
        self.on_missing(branch, code::UNAVAILABLE)
    }

    fn on_missing(&mut self, branch: BranchId, code: StatusCode) -> Action {
        match self.branches.get_mut(branch.0 as usize) {
            Some(slot) if *slot == Outcome::Pending => {
                *slot = Outcome::Final { code, bytes: None, order: self.arrivals };
                self.arrivals = self.arrivals.saturating_add(1);
                self.settle()
            }
            _ => Action::Absorb,
        }
    }

    /// After a branch's final non-2xx outcome: hold it, or send the best.
    fn settle(&mut self) -> Action {
        if self.final_sent {
            return Action::Absorb;
        }
        if !self.is_complete() && !self.closed {
            return Action::Hold;
        }
        self.final_sent = true;
        Action::SendBest(self.choose())
    }

    /// §16.7 step 6 over the final non-2xx outcomes.
    fn choose(&self) -> Best {
        // Rank: a 6xx first ("any 6xx wins over everything but a 2xx"),
        // then the lowest class; within 4xx the preferred codes; a response
        // received before a timeout or transport error standing in for one;
        // then the order of arrival.
        let rank = |code: StatusCode, real: bool, order: u32| {
            let class = if code.class() == 6 { 0 } else { code.class() };
            (class, !(code.class() == 4 && is_preferred(code)), !real, order)
        };
        let best = self
            .branches
            .iter()
            .zip(0u32..)
            .filter_map(|(o, i)| match o {
                Outcome::Final { code, bytes, order } => Some((rank(*code, bytes.is_some(), *order), i, *code, bytes)),
                _ => None,
            })
            .min_by_key(|(r, ..)| *r);
        match best {
            // §16.7 step 6: "If there are no final responses in the context,
            // the proxy MUST send a 408 (Request Timeout) response".
            None => Best::Generate(code::REQUEST_TIMEOUT),
            Some((_, i, _, Some(_))) => Best::Branch(BranchId(i)),
            // §16.7 step 6: a 503 becomes 500.
            Some((_, _, c, None)) if c == code::UNAVAILABLE => Best::Generate(code::SERVER_ERROR),
            Some((_, _, c, None)) => Best::Generate(c),
        }
    }

    /// §16.7 step 6: the best final response, once every branch is done
    /// or a 6xx arrived; `None` while branches are pending or after a 2xx
    /// went upstream.
    pub fn best(&self) -> Option<Best> {
        ((self.is_complete() || self.closed) && !self.success_sent).then(|| self.choose())
    }

    /// The status the final response of branch `id` had; `None` while
    /// it has none (or `id` is not one of ours).
    pub fn final_status(&self, id: BranchId) -> Option<StatusCode> {
        match self.branches.get(id.0 as usize)? {
            Outcome::Final { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The bytes to send upstream for [`Best::Branch`]: the chosen
    /// response with our Via removed (§16.7 step 9), a 503 made 500
    /// (step 6), and for a 401 or 407 every WWW-Authenticate and
    /// Proxy-Authenticate value of the other 401 and 407 responses added
    /// without modification (step 7). `None` while there is no best
    /// response, for [`Best::Generate`], or if the stored response has no
    /// Via below ours.
    pub fn write_best(&self) -> Option<Vec<u8>> {
        let Best::Branch(id) = self.best()? else { return None };
        let Some(Outcome::Final { code, bytes: Some(bytes), .. }) = self.branches.get(id.0 as usize) else {
            return None;
        };
        let chosen = Message::parse(bytes).ok()?;
        let status = (*code == code::UNAVAILABLE).then_some(code::SERVER_ERROR);
        // §16.7 step 7: "collect any WWW-Authenticate and Proxy-Authenticate
        // header field values from all other 401 and 407 responses received
        // so far in this response context and add them to this response
        // without modification before forwarding."
        let challenged = |c: &StatusCode| matches!(c.as_u16(), 401 | 407);
        let others: Vec<Message<'_>> = if challenged(code) {
            self.branches
                .iter()
                .zip(0u32..)
                .filter(|(_, i)| *i != id.0)
                .filter_map(|(o, _)| match o {
                    Outcome::Final { code, bytes: Some(b), .. } if challenged(code) => Message::parse(b).ok(),
                    _ => None,
                })
                .collect()
        } else {
            Vec::new()
        };
        let extra: Vec<(&str, &[u8])> = others
            .iter()
            .flat_map(|m| m.headers().iter())
            .filter(|h| matches!(h.kind(), HeaderName::WwwAuthenticate | HeaderName::ProxyAuthenticate))
            .map(|h| (h.kind().as_str(), h.value()))
            .collect();
        rewrite_response(&chosen, status, &extra)
    }
}
