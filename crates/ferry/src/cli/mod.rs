//! The operator CLI: `ferry <noun> <verb>`, speaking the Kafka protocol to
//! `--brokers` (any Kafka-compatible broker). Tables by default, JSON with
//! `--format json`; errors are one line on stderr and exit code 1.

/// `println!` that ignores a closed stdout (`ferry topic list | head -1`)
/// instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod acl;
pub mod bench;
mod bench_stomp;
mod cluster;
pub mod consume;
pub mod group;
pub mod node;
mod output;
pub mod produce;
mod reassign;
pub mod redis;
pub mod stomp;
pub mod topic;
pub mod user;
pub mod vhost;

use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use ferry_client::{Client, ClientConfig};

pub use acl::AclCmd;
pub use cluster::{ClusterCmd, run as cluster};
pub use consume::ConsumeArgs;
pub use group::GroupCmd;
pub use node::NodeCmd;
pub use produce::ProduceArgs;
pub use redis::RedisCmd;
pub use stomp::StompCmd;
pub use topic::TopicCmd;
pub use user::UserCmd;
pub use vhost::VhostCmd;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON for scripts (consume: one object per line).
    Json,
}

/// How to reach the cluster and how to print.
#[derive(Clone, Debug, Args)]
pub struct ClientArgs {
    /// Kafka bootstrap brokers, comma-separated HOST:PORT.
    #[arg(long, global = true, env = "FERRY_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Time limit for connecting and for each request, in milliseconds.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Log in with SASL as this user (a SASL_PLAINTEXT listener).
    #[arg(long = "user", global = true, env = "FERRY_SASL_USER")]
    pub sasl_user: Option<String>,
    /// The SASL user's password (also `--sasl-password`, the name `ferry
    /// user` takes it by, its `--password` being the user's new one).
    #[arg(
        long = "password",
        alias = "sasl-password",
        global = true,
        env = "FERRY_SASL_PASSWORD",
        requires = "sasl_user"
    )]
    pub sasl_password: Option<String>,
    /// SASL mechanism: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN.
    #[arg(long, global = true, env = "FERRY_SASL_MECHANISM", default_value = "SCRAM-SHA-512")]
    pub sasl_mechanism: String,
}

impl ClientArgs {
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let mut config = ClientConfig::new("ferry-cli", Duration::from_millis(self.timeout_ms.max(1)));
        if let Some(user) = &self.sasl_user {
            config = config.with_sasl(ferry_client::SaslLogin {
                mechanism: self.sasl_mechanism.clone(),
                user: user.clone(),
                password: self.sasl_password.clone().unwrap_or_default(),
            });
        }
        Client::connect(&self.brokers, config).await.with_context(|| format!("brokers {}", self.brokers))
    }
}

/// `k=v` pairs from the command line.
pub fn key_values(items: &[String], what: &str) -> anyhow::Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => anyhow::bail!("{what} {kv:?} is not KEY=VALUE"),
        })
        .collect()
}
