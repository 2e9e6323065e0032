//! `ferry user create|passwd|delete|list`: SCRAM users, through
//! AlterUserScramCredentials / DescribeUserScramCredentials on a running
//! cluster, or with `--data-dir` before the node's first start (the node
//! imports them; see `bootstrap_users.rs`). Passwords never travel: the
//! CLI sends salted passwords, as Kafka's tools do.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ferry_broker::security::ScramMechanism;
use ferry_client::check;
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::output::{json, table};
use super::{ClientArgs, Format};

#[derive(Debug, Subcommand)]
pub enum UserVerb {
    /// Create a user (or set its password): SCRAM credentials for both mechanisms.
    Create(Password),
    /// Change a user's password.
    Passwd(Password),
    /// Delete a user (every credential).
    Delete {
        /// User name.
        name: String,
    },
    /// List users and their mechanisms.
    List,
}

#[derive(Debug, Args)]
pub struct Password {
    /// User name.
    pub name: String,
    /// The user's (new) password.
    #[arg(long)]
    pub password: String,
    /// Only this mechanism (default: SCRAM-SHA-256 and SCRAM-SHA-512).
    #[arg(long)]
    pub mechanism: Option<String>,
    /// PBKDF2 iterations (4096 to 16384).
    #[arg(long, default_value_t = 4096)]
    pub iterations: u32,
}

#[derive(Debug, Args)]
pub struct UserCmd {
    #[command(subcommand)]
    pub verb: UserVerb,
    /// Offline: write the user for the node with this data directory to
    /// import at its next start (no broker needed).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Kafka bootstrap brokers, comma-separated HOST:PORT.
    #[arg(long, global = true, env = "FERRY_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Time limit for connecting and for each request, in milliseconds.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Log in with SASL as this user.
    #[arg(long = "user", global = true, env = "FERRY_SASL_USER")]
    pub sasl_user: Option<String>,
    /// The login's password (`--password` is the user's new one here).
    #[arg(long = "sasl-password", global = true, env = "FERRY_SASL_PASSWORD")]
    pub sasl_password: Option<String>,
    /// SASL mechanism of the login.
    #[arg(long, global = true, env = "FERRY_SASL_MECHANISM", default_value = "SCRAM-SHA-512")]
    pub sasl_mechanism: String,
}

impl UserCmd {
    fn client_args(&self) -> ClientArgs {
        ClientArgs {
            brokers: self.brokers.clone(),
            format: self.format,
            timeout_ms: self.timeout_ms,
            sasl_user: self.sasl_user.clone(),
            sasl_password: self.sasl_password.clone(),
            sasl_mechanism: self.sasl_mechanism.clone(),
        }
    }
}

fn mechanisms(m: Option<&str>) -> anyhow::Result<Vec<ScramMechanism>> {
    match m {
        None => Ok(ScramMechanism::ALL.to_vec()),
        Some(name) => {
            Ok(vec![ScramMechanism::from_name(name).with_context(|| format!("unknown SCRAM mechanism {name:?}"))?])
        }
    }
}

pub async fn run(cmd: UserCmd) -> anyhow::Result<()> {
    if let Some(dir) = &cmd.data_dir {
        return offline(&cmd, dir);
    }
    let client = cmd.client_args().connect().await?;
    let conn = client.any();
    match &cmd.verb {
        UserVerb::Create(p) | UserVerb::Passwd(p) => {
            check_iterations(p.iterations)?;
            let upsertions = mechanisms(p.mechanism.as_deref())?
                .into_iter()
                .map(|m| {
                    let salt: [u8; 32] = rand::random();
                    ScramCredentialUpsertion::default()
                        .with_name(StrBytes::from_string(p.name.clone()))
                        .with_mechanism(m.kafka_code())
                        .with_iterations(i32::try_from(p.iterations).unwrap_or(4096))
                        .with_salt(bytes::Bytes::copy_from_slice(&salt))
                        .with_salted_password(bytes::Bytes::from(m.salted_password(
                            p.password.as_bytes(),
                            &salt,
                            p.iterations,
                        )))
                })
                .collect();
            alter(conn, AlterUserScramCredentialsRequest::default().with_upsertions(upsertions)).await?;
            say!("user {} saved", p.name);
        }
        UserVerb::Delete { name } => {
            let found = describe(conn, Some(name)).await?;
            let deletions = found
                .into_iter()
                .flat_map(|(_, ms)| ms)
                .map(|(m, _)| {
                    ScramCredentialDeletion::default().with_name(StrBytes::from_string(name.clone())).with_mechanism(m)
                })
                .collect();
            alter(conn, AlterUserScramCredentialsRequest::default().with_deletions(deletions)).await?;
            say!("user {name} deleted");
        }
        UserVerb::List => {
            let users = describe(conn, None).await?;
            let name = |code: i8| ScramMechanism::from_kafka_code(code).map_or("?", ScramMechanism::name);
            match cmd.format {
                Format::Json => json(&json!(
                    users
                        .iter()
                        .map(|(u, ms)| json!({
                            "user": u,
                            "mechanisms": ms.iter().map(|(m, i)| json!({"mechanism": name(*m), "iterations": i})).collect::<Vec<_>>(),
                        }))
                        .collect::<Vec<_>>()
                )),
                Format::Table => table(
                    &["USER", "MECHANISMS"],
                    users
                        .iter()
                        .map(|(u, ms)| {
                            vec![u.clone(), ms.iter().map(|(m, _)| name(*m)).collect::<Vec<_>>().join(",")]
                        })
                        .collect(),
                ),
            }
        }
    }
    Ok(())
}

fn check_iterations(i: u32) -> anyhow::Result<()> {
    if !(ScramMechanism::MIN_ITERATIONS..=ScramMechanism::MAX_ITERATIONS).contains(&i) {
        bail!("--iterations must be 4096 to 16384");
    }
    Ok(())
}

fn offline(cmd: &UserCmd, dir: &std::path::Path) -> anyhow::Result<()> {
    match &cmd.verb {
        UserVerb::Create(p) | UserVerb::Passwd(p) => {
            check_iterations(p.iterations)?;
            if p.mechanism.is_some() {
                bail!("--data-dir creates both SCRAM credentials; leave out --mechanism");
            }
            crate::bootstrap_users::add(dir, &p.name, &p.password, p.iterations)?;
            say!("user {} written to {} (imported at the node's next start)", p.name, dir.display());
        }
        UserVerb::List => {
            for u in crate::bootstrap_users::list(dir)? {
                say!("{u}");
            }
        }
        UserVerb::Delete { .. } => bail!("delete works on a running cluster (--brokers)"),
    }
    Ok(())
}

/// (user, [(mechanism code, iterations)]) of the named user or all.
async fn describe(
    conn: &ferry_client::Connection,
    user: Option<&String>,
) -> anyhow::Result<Vec<(String, Vec<(i8, i32)>)>> {
    let req = DescribeUserScramCredentialsRequest::default()
        .with_users(user.map(|u| vec![UserName::default().with_name(StrBytes::from_string(u.clone()))]));
    let r = conn.send(req, 0).await?;
    check(r.error_code, || "DescribeUserScramCredentials".into())?;
    let mut out = Vec::new();
    for res in r.results {
        check(res.error_code, || format!("user {}", res.user.as_str()))?;
        out.push((res.user.to_string(), res.credential_infos.iter().map(|c| (c.mechanism, c.iterations)).collect()));
    }
    Ok(out)
}

async fn alter(conn: &ferry_client::Connection, req: AlterUserScramCredentialsRequest) -> anyhow::Result<()> {
    let r = conn.send(req, 0).await?;
    for res in r.results {
        let message = res.error_message.as_ref().map(ToString::to_string).unwrap_or_default();
        check(res.error_code, || format!("user {} {message}", res.user.as_str()))?;
    }
    Ok(())
}
