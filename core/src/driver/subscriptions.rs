//! The subscription commands of [`Handle`] (RFC 6665, RFC 3515): each
//! crosses the command channel to the driver, which runs it on the
//! endpoint and answers.

use super::{Command, Handle};
use crate::endpoint::{Body, Endpoint, SendError, SessionId, SubState, Subscribe, SubscriptionError, SubscriptionId};
use futures_channel::oneshot;
use std::future::Future;
use std::time::Instant;

/// A subscription command's arguments, owned to cross the channel.
pub(super) enum SubscriptionAction {
    Unsubscribe,
    Accept { state: SubState, body: Option<Body> },
    Reject { code: u16, reason: String },
    Notify { state: SubState, body: Option<Body> },
    Terminate { reason: String, body: Option<Body> },
    AcceptRefer,
    ReferProgress { code: u16, reason: String },
}

impl SubscriptionAction {
    pub(super) fn name(&self) -> &'static str {
        match self {
            SubscriptionAction::Unsubscribe => "Unsubscribe",
            SubscriptionAction::Accept { .. } => "AcceptSubscription",
            SubscriptionAction::Reject { .. } => "RejectSubscription",
            SubscriptionAction::Notify { .. } => "Notify",
            SubscriptionAction::Terminate { .. } => "TerminateSubscription",
            SubscriptionAction::AcceptRefer => "AcceptRefer",
            SubscriptionAction::ReferProgress { .. } => "ReferProgress",
        }
    }

    /// Runs the command on `ep`.
    pub(super) fn run(self, ep: &mut Endpoint, now: Instant, s: SubscriptionId) -> Result<(), SubscriptionError> {
        match self {
            SubscriptionAction::Unsubscribe => ep.unsubscribe(now, s),
            SubscriptionAction::Accept { state, body } => ep.accept_subscription(now, s, state, body),
            SubscriptionAction::Reject { code, reason } => ep.reject_subscription(now, s, code, &reason),
            SubscriptionAction::Notify { state, body } => ep.notify(now, s, state, body),
            SubscriptionAction::Terminate { reason, body } => ep.terminate_subscription(now, s, &reason, body),
            SubscriptionAction::AcceptRefer => ep.accept_refer(now, s),
            SubscriptionAction::ReferProgress { code, reason } => ep.refer_progress(now, s, code, &reason),
        }
    }
}

impl Handle {
    /// Subscribes to an event package at a target; see
    /// [`Endpoint::subscribe`]. Its NOTIFYs come as
    /// [`Event::Subscription`](crate::endpoint::Event::Subscription).
    ///
    /// ```text
    /// let watching = endpoint.subscribe(Subscribe::new("sip:bob@127.0.0.1:5060", "presence")).await?;
    /// while let Some(Event::Subscription { event: SubscriptionEvent::Notified(n), .. }) = events.next().await {
    ///     println!("{:?}", n.state);
    /// }
    /// ```
    pub fn subscribe(
        &self,
        sub: Subscribe,
    ) -> impl Future<Output = Result<SubscriptionId, SendError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.commands.unbounded_send(Command::Subscribe { sub: Box::new(sub), reply }).is_ok();
        async move {
            if !queued {
                return Err(SendError::ShuttingDown);
            }
            answer.await.unwrap_or(Err(SendError::ShuttingDown))
        }
    }

    /// Asks the peer of `session` to call `refer_to` (a blind transfer);
    /// see [`Endpoint::refer`].
    pub fn refer(
        &self,
        session: SessionId,
        refer_to: &str,
    ) -> impl Future<Output = Result<SubscriptionId, SubscriptionError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let command = Command::Refer { session, refer_to: refer_to.to_owned(), reply };
        let queued = self.commands.unbounded_send(command).is_ok();
        async move {
            if !queued {
                return Err(SubscriptionError::Send(SendError::ShuttingDown));
            }
            answer.await.unwrap_or(Err(SubscriptionError::Send(SendError::ShuttingDown)))
        }
    }

    fn subscription_command(
        &self,
        subscription: SubscriptionId,
        action: SubscriptionAction,
    ) -> impl Future<Output = Result<(), SubscriptionError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.commands.unbounded_send(Command::Subscription { subscription, action, reply }).is_ok();
        async move {
            // A stopped driver has ended every subscription.
            if !queued {
                return Err(SubscriptionError::Unknown);
            }
            answer.await.unwrap_or(Err(SubscriptionError::Unknown))
        }
    }

    /// Ends a subscription of ours; see [`Endpoint::unsubscribe`].
    pub fn unsubscribe(
        &self,
        subscription: SubscriptionId,
    ) -> impl Future<Output = Result<(), SubscriptionError>> + Send + 'static {
        self.subscription_command(subscription, SubscriptionAction::Unsubscribe)
    }

    /// Accepts an incoming subscription and sends its first NOTIFY; see
    /// [`Endpoint::accept_subscription`].
    pub fn accept_subscription(
        &self,
        subscription: SubscriptionId,
        state: SubState,
        body: Option<Body>,
    ) -> impl Future<Output = Result<(), SubscriptionError>> + Send + 'static {
        self.subscription_command(subscription, SubscriptionAction::Accept { state, body })
    }

    /// Refuses an incoming subscription (or REFER); see
    /// [`Endpoint::reject_subscription`].
    pub fn reject_subscription(
        &self,
        subscription: SubscriptionId,
        code: u16,
        reason: &str,
    ) -> impl Future<Output = Result<(), SubscriptionError>> + Send + 'static {
        self.subscription_command(subscription, SubscriptionAction::Reject { code, reason: reason.to_owned() })
    }

    /// Tells a subscriber a new state; see [`Endpoint::notify`].
    pub fn notify(
        &self,
        subscription: SubscriptionId,
        state: SubState,
        body: Option<Body>,
    ) -> impl Future<Output = Result<(), SubscriptionError>> + Send + 'static {
        self.subscription_command(subscription, SubscriptionAction::Notify { state, body })
    }

    /// Ends a subscription we serve; see
    /// [`Endpoint::terminate_subscription`].
    pub fn terminate_subscription(
        &self,
        subscription: SubscriptionId,
        reason: &str,
        body: Option<Body>,
    ) -> impl Future<Output = Result<(), SubscriptionError>> + Send + 'static {
        self.subscription_command(subscription, SubscriptionAction::Terminate { reason: reason.to_owned(), body })
    }

    /// Accepts a transfer (202, then `SIP/2.0 100 Trying`); see
    /// [`Endpoint::accept_refer`].
    pub fn accept_refer(
        &self,
        subscription: SubscriptionId,
    ) -> impl Future<Output = Result<(), SubscriptionError>> + Send + 'static {
        self.subscription_command(subscription, SubscriptionAction::AcceptRefer)
    }

    /// Reports the progress of the call a transfer asked for; see
    /// [`Endpoint::refer_progress`].
    pub fn refer_progress(
        &self,
        subscription: SubscriptionId,
        code: u16,
        reason: &str,
    ) -> impl Future<Output = Result<(), SubscriptionError>> + Send + 'static {
        self.subscription_command(subscription, SubscriptionAction::ReferProgress { code, reason: reason.to_owned() })
    }
}
