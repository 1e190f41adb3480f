//! Typed SDP (RFC 8866) on the session API: a [`Body`] made from a
//! description, and the description read back out of a body or a
//! response (an answer in a 200, early media in a 183), zero-copy.
//!
//! ```
//! use sipline::endpoint::Body;
//! use sipline::sdp::{self, Capabilities, LocalSession};
//!
//! let mut session = LocalSession::new("alice", 1, 1, [192, 0, 2, 10].into());
//! let offer = sdp::offer(&Capabilities::telephony(), &["192.0.2.10:49170".parse()?], &mut session)?;
//! let body = Body::from(&offer);
//! assert_eq!(body.content_type, "application/sdp");
//! let read = body.description().ok_or("not SDP")??;
//! assert_eq!(read.media[0].port, 49170);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::{Body, Response};
use crate::message::Message;
use crate::sdp::{OwnedDescription, SdpError, SessionDescription};

impl From<&OwnedDescription> for Body {
    /// An `application/sdp` body holding `description`.
    fn from(description: &OwnedDescription) -> Body {
        Body::sdp(description.to_string().into_bytes())
    }
}

impl Body {
    /// The description this body holds, parsed in place: `None` if it is
    /// not `application/sdp`.
    pub fn description(&self) -> Option<Result<SessionDescription<'_>, SdpError>> {
        let media = self.content_type.split(';').next().unwrap_or_default().trim();
        media.eq_ignore_ascii_case("application/sdp").then(|| SessionDescription::parse(&self.bytes))
    }
}

impl Response {
    /// The response's body (empty if none).
    pub fn body(&self) -> &[u8] {
        Message::parse(&self.bytes).map_or(&[], |m| m.body())
    }

    /// The SDP the response carries (an answer in a 2xx, early media in a
    /// 183), parsed in place: `None` without an `application/sdp` body.
    pub fn description(&self) -> Option<Result<SessionDescription<'_>, SdpError>> {
        let m = Message::parse(&self.bytes).ok()?;
        let sdp = m.content_type().and_then(Result::ok).is_some_and(|t| t.is("application", "sdp"));
        let body = self.body();
        (sdp && !body.is_empty()).then(|| SessionDescription::parse(body))
    }
}
