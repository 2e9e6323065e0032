//! The permission check the queue-reading front-ends (STOMP, Redis) share:
//! RabbitMQ's three permissions on a named resource of a vhost. The binary
//! supplies the check from the AMQP users, so every protocol grants the same.

use std::net::IpAddr;
use std::sync::Arc;

/// The access an operation needs (RabbitMQ's three permissions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Declare, create or delete.
    Configure,
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

/// Checks a login: (user, password, peer address, vhost) -> the user's
/// [`Authorizer`] there, `None` if refused.
pub type Authenticator = Arc<dyn Fn(&str, &str, IpAddr, &str) -> Option<Authorizer> + Send + Sync>;
