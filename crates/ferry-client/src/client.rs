//! The client handle: connections to the brokers of one cluster, opened on
//! first use and found by node id from the last Metadata answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::conn::Connection;
use crate::error::ClientError;
use crate::lock;

/// How the client presents itself and how long it waits.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The client id in every request header (brokers log it; group
    /// descriptions show it).
    pub client_id: String,
    /// Bound on opening a connection and on waiting for each answer.
    pub timeout: Duration,
    /// Log in with SASL on every connection (a SASL_PLAINTEXT listener).
    pub sasl: Option<crate::sasl::SaslLogin>,
}

impl ClientConfig {
    /// A client called `client_id` that waits up to `timeout`.
    pub fn new(client_id: impl Into<String>, timeout: Duration) -> ClientConfig {
        ClientConfig { client_id: client_id.into(), timeout, sasl: None }
    }

    /// The same, logging in with `login` on every connection.
    #[must_use]
    pub fn with_sasl(mut self, login: crate::sasl::SaslLogin) -> ClientConfig {
        self.sasl = Some(login);
        self
    }
}

/// Connections to the brokers of one cluster.
pub struct Client {
    config: ClientConfig,
    bootstrap: Arc<Connection>,
    /// node id -> address, from the last Metadata answer.
    brokers: Mutex<HashMap<i32, String>>,
    conns: tokio::sync::Mutex<HashMap<i32, Arc<Connection>>>,
}

impl Client {
    /// Connects to the first reachable of the comma-separated `brokers` and
    /// learns the cluster's brokers from it.
    pub async fn connect(brokers: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let mut last = ClientError::NoBrokers;
        for addr in brokers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match Connection::connect(addr, &config).await {
                Ok(c) => {
                    let client = Client {
                        config,
                        bootstrap: Arc::new(c),
                        brokers: Mutex::new(HashMap::new()),
                        conns: tokio::sync::Mutex::new(HashMap::new()),
                    };
                    client.metadata(Some(&[])).await?;
                    return Ok(client);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The bootstrap connection (any broker answers admin requests on one node).
    pub fn any(&self) -> &Arc<Connection> {
        &self.bootstrap
    }

    /// A connection to broker `node`, opened on first use and then shared.
    pub async fn node(&self, node: i32) -> Result<Arc<Connection>, ClientError> {
        let mut conns = self.conns.lock().await;
        // A connection the broker closed (it stopped or restarted) is
        // opened again.
        if let Some(c) = conns.get(&node).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let addr = self.address(node)?;
        let conn = if addr == self.bootstrap.addr() {
            self.bootstrap.clone()
        } else {
            Arc::new(Connection::connect(&addr, &self.config).await?)
        };
        conns.insert(node, conn.clone());
        Ok(conn)
    }

    /// A new connection of its own to broker `node` (e.g. one per benchmark
    /// producer, so their requests do not queue behind each other).
    pub async fn dedicated(&self, node: i32) -> Result<Connection, ClientError> {
        let addr = self.address(node)?;
        Connection::connect(&addr, &self.config).await
    }

    /// Broker `node`'s address as the last Metadata answer gave it.
    fn address(&self, node: i32) -> Result<String, ClientError> {
        lock(&self.brokers).get(&node).cloned().ok_or(ClientError::UnknownBroker(node))
    }

    /// Remembers the brokers' addresses (from a Metadata answer).
    pub(crate) fn learn_brokers(&self, brokers: impl IntoIterator<Item = (i32, String)>) {
        lock(&self.brokers).extend(brokers);
    }
}
