//! Event notification headers (RFC 6665 §8.2): Event and Subscription-State.

use super::super::grammar::{token, PResult};
use super::super::params::{ParamSyntax, Params};
use super::{whole, HeaderValue};

/// `Event: event-type *( SEMI event-param )` (RFC 6665 §8.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    package: &'a str,
    params: Params<'a>,
}

impl<'a> Event<'a> {
    /// The event package with templates (`presence`, `presence.winfo`).
    pub fn package(&self) -> &'a str {
        self.package
    }
    /// The `id` parameter that tells subscriptions in one dialog apart.
    pub fn id(&self) -> Option<&'a str> {
        self.params.value("id")
    }
    /// All parameters.
    pub fn params(&self) -> Params<'a> {
        self.params
    }
}

fn token_params(i: &[u8]) -> PResult<'_, (&str, Params<'_>)> {
    let (r, t) = token(i)?;
    let (r, p) = Params::parse(r, ParamSyntax::Header)?;
    Ok((r, (t, p)))
}

impl<'a> HeaderValue<'a> for Event<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        let (package, params) = whole(value, token_params)?;
        Some(Event { package, params })
    }
}

/// The `substate-value` of Subscription-State.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubState<'a> {
    /// `active`
    Active,
    /// `pending`
    Pending,
    /// `terminated`
    Terminated,
    /// An extension value.
    Other(&'a str),
}

/// `Subscription-State: substate-value *( SEMI subexp-params )`
/// (RFC 6665 §8.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionState<'a> {
    state: SubState<'a>,
    params: Params<'a>,
}

impl<'a> SubscriptionState<'a> {
    /// The state.
    pub fn state(&self) -> SubState<'a> {
        self.state
    }
    /// The `reason` parameter (`deactivated`, `timeout`, …).
    pub fn reason(&self) -> Option<&'a str> {
        self.params.value("reason")
    }
    /// The `expires` parameter, seconds.
    pub fn expires(&self) -> Option<u32> {
        self.params.value("expires")?.parse().ok()
    }
    /// The `retry-after` parameter, seconds.
    pub fn retry_after(&self) -> Option<u32> {
        self.params.value("retry-after")?.parse().ok()
    }
    /// All parameters.
    pub fn params(&self) -> Params<'a> {
        self.params
    }
}

impl<'a> HeaderValue<'a> for SubscriptionState<'a> {
    fn parse_value(value: &'a [u8]) -> Option<Self> {
        let (s, params) = whole(value, token_params)?;
        let state = if s.eq_ignore_ascii_case("active") {
            SubState::Active
        } else if s.eq_ignore_ascii_case("pending") {
            SubState::Pending
        } else if s.eq_ignore_ascii_case("terminated") {
            SubState::Terminated
        } else {
            SubState::Other(s)
        };
        for n in ["expires", "retry-after"] {
            if params.get(n).is_some_and(|p| p.value().is_none_or(|v| v.parse::<u32>().is_err())) {
                return None;
            }
        }
        Some(SubscriptionState { state, params })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_and_state() {
        let e = Event::parse_value(b"presence.winfo;id=42").unwrap();
        assert_eq!(e.package(), "presence.winfo");
        assert_eq!(e.id(), Some("42"));
        let s = SubscriptionState::parse_value(b"terminated;reason=timeout;retry-after=30").unwrap();
        assert_eq!(s.state(), SubState::Terminated);
        assert_eq!(s.reason(), Some("timeout"));
        assert_eq!(s.retry_after(), Some(30));
        assert!(SubscriptionState::parse_value(b"active;expires=soon").is_none());
        assert!(Event::parse_value(b"").is_none());
    }
}
