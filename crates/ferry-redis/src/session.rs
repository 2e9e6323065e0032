//! One client's state: protocol version, login, name, subscriptions.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{CmdResult, CommandError};
use crate::pubsub::{Subscriber, Subscriptions};
use crate::server::{Access, Authorizer, Server};

/// What a connection's commands read and change.
pub(crate) struct Session {
    /// What all connections share.
    pub server: Arc<Server>,
    /// CLIENT ID; also the owner id of the queues it declares.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// RESP3 after `HELLO 3`.
    pub resp3: bool,
    /// CLIENT SETNAME.
    pub name: Option<Bytes>,
    /// The logged-in user and what it may do; `None` before AUTH when
    /// there is no default login.
    pub authorize: Option<Authorizer>,
    /// The logged-in user's name.
    pub user: String,
    /// How long to hold the reply to a refused AUTH (LoginLimiter).
    pub login_delay: std::time::Duration,
    /// Channels, patterns and shard channels subscribed to.
    pub subs: Subscriptions,
    /// Where pub/sub messages for this connection arrive.
    pub subscriber: Arc<Subscriber>,
}

impl Session {
    /// Refuses unless the user may `access` the object `(kind, name)`.
    pub(crate) fn check(&self, access: Access, kind: &str, name: &str) -> CmdResult<()> {
        match &self.authorize {
            Some(allowed) if allowed(access, kind, name) => Ok(()),
            _ => Err(CommandError::Reply(format!(
                "NOPERM User {} has no permissions to access the '{name}' {}",
                self.user,
                if kind == "queue" { "key" } else { kind }
            ))),
        }
    }

    /// Logs `user` in (AUTH, HELLO ... AUTH).
    pub(crate) fn login(&mut self, user: &str, password: &str) -> CmdResult<()> {
        let vhost = &self.server.config.vhost;
        match (self.server.authenticate)(user, password, self.peer.ip(), vhost) {
            Ok(a) => {
                self.authorize = Some(a);
                self.user = user.to_string();
                Ok(())
            }
            Err(refused) => {
                // The connection waits this long before answering.
                self.login_delay = refused.delay;
                Err(CommandError::Reply("WRONGPASS invalid username-password pair or user is disabled.".into()))
            }
        }
    }
}
