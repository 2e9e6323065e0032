//! The permission check the queue-reading front-ends (AMQP, STOMP, Redis)
//! share: RabbitMQ's permissions on a named resource of a vhost. The
//! [`Gatekeeper`](crate::security::Gatekeeper) supplies it from the one
//! user store and authorizer, so every protocol grants the same.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// The access an operation needs (RabbitMQ's three permissions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Declare or create (RabbitMQ's configure; ACL operation Create).
    Configure,
    /// Delete (RabbitMQ's configure too; ACL operation Delete).
    Delete,
    /// Publish or append, bind a queue.
    Write,
    /// Consume or read, bind from an exchange.
    Read,
}

/// What a logged-in user may touch on its vhost: (access, kind, name) ->
/// allowed. Kinds are `"queue"`, `"exchange"` (the default exchange is
/// `amq.default`, Kafka topics are `kafka:<topic>`) and `"topic"` (a Kafka
/// topic by its own name, checked as the exchange `kafka:<topic>`).
pub type Authorizer = Arc<dyn Fn(Access, &str, &str) -> bool + Send + Sync>;

/// A refused login: how long to wait before answering (the per-address
/// login limiter's delay; zero when the refusal is not a wrong password).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Wait this long before telling the client.
    pub delay: Duration,
}

/// Checks a login: (user, password, peer address, vhost) -> the user's
/// [`Authorizer`] there, or why not.
pub type Authenticator = Arc<dyn Fn(&str, &str, IpAddr, &str) -> Result<Authorizer, Refused> + Send + Sync>;
