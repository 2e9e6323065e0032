//! TLS settings of `ferry serve`: `--tls-cert`, `--tls-key`,
//! `--tls-client-ca`, `--tls-principal-mapping` and the `[tls]` section;
//! listener lists (`HOST:PORT,tls://HOST:PORT`) and the rule that a TLS
//! listener needs a certificate.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Deserialize;

use ferry_tls::{Listen, PrincipalMapper, TlsFiles};

/// `[tls]` in the TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub principal_mapping: Option<String>,
}

/// The TLS flags, each also an environment variable.
#[derive(Debug, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first) for every tls:// / wss:// listener;
    /// reloaded on SIGHUP or when the file changes.
    #[arg(long, env = "FERRY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FERRY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: TLS clients must present a certificate they signed.
    #[arg(long, env = "FERRY_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Client certificate subject -> principal, Kafka's ssl.principal.mapping.rules
    /// syntax (RULE:pattern/replacement/[LU],...,DEFAULT).
    #[arg(long, env = "FERRY_TLS_PRINCIPAL_MAPPING")]
    pub tls_principal_mapping: Option<String>,
}

/// The resolved TLS settings.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub files: TlsFiles,
    pub mapper: PrincipalMapper,
}

/// `None` when no certificate is configured.
pub fn resolve(args: &TlsArgs, file: TlsSection) -> anyhow::Result<Option<TlsSettings>> {
    let cert = args.tls_cert.clone().or(file.cert);
    let key = args.tls_key.clone().or(file.key);
    let client_ca = args.tls_client_ca.clone().or(file.client_ca);
    let rules = args.tls_principal_mapping.clone().or(file.principal_mapping).unwrap_or_default();
    let mapper = PrincipalMapper::parse(&rules).context("--tls-principal-mapping")?;
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsSettings { files: TlsFiles { cert, key, client_ca }, mapper })),
        (None, None) if client_ca.is_none() => Ok(None),
        (None, None) => bail!("--tls-client-ca needs --tls-cert and --tls-key"),
        (Some(_), None) => bail!("--tls-cert needs --tls-key"),
        (None, Some(_)) => bail!("--tls-key needs --tls-cert"),
    }
}

/// A listener list: `off` (or empty) for none, `default` when not given.
pub fn listeners(value: Option<String>, default: &[Listen], what: &str) -> anyhow::Result<Vec<Listen>> {
    match value {
        None => Ok(default.to_vec()),
        Some(v) if v.trim().is_empty() || v.trim() == "off" => Ok(Vec::new()),
        Some(v) => ferry_tls::parse_listeners(&v).with_context(|| format!("{what} address {v:?}")),
    }
}

/// A TLS listener without a certificate refuses to start.
pub fn check(tls: Option<&TlsSettings>, lists: &[(&[Listen], &str)]) -> anyhow::Result<()> {
    if tls.is_some() {
        return Ok(());
    }
    for (list, flag) in lists {
        if let Some(l) = list.iter().find(|l| l.tls) {
            bail!("{flag} {l} is a TLS listener: give --tls-cert and --tls-key (or [tls] cert and key)");
        }
    }
    Ok(())
}
