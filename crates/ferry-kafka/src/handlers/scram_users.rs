//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554):
//! the users of the metadata image. Describing needs Describe on the
//! cluster, altering Alter. The client sends salted passwords, never
//! passwords; Ferry stores only the derived SCRAM keys.

use std::collections::BTreeSet;

use ferry_broker::security::{Operation, ResourceType, ScramCredential, ScramMechanism};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::Call;
use crate::errors::{counted_code, denied_code, error_code};
use crate::response::Reply;

pub fn describe(c: &Call, req: DescribeUserScramCredentialsRequest) -> Reply {
    if !c.allowed_cluster(Operation::Describe) {
        let body = DescribeUserScramCredentialsResponse::default().with_error_code(denied_code(ResourceType::Cluster));
        return c.reply(ApiKey::DescribeUserScramCredentials, &body);
    }
    let image = c.ctx.broker.metadata();
    let names: Vec<String> = match &req.users {
        Some(users) if !users.is_empty() => users.iter().map(|u| u.name.to_string()).collect(),
        _ => image.users.keys().cloned().collect(),
    };
    let mut seen = BTreeSet::new();
    let duplicates: BTreeSet<&String> = names.iter().filter(|n| !seen.insert(*n)).collect();
    let mut done = BTreeSet::new();
    let results = names
        .iter()
        .filter(|n| done.insert(*n))
        .map(|name| {
            let r = DescribeUserScramCredentialsResult::default().with_user(StrBytes::from_string(name.clone()));
            if duplicates.contains(name) {
                return r
                    .with_error_code(counted_code(E::DuplicateResource.code()))
                    .with_error_message(Some(StrBytes::from_string(format!("user {name} named twice"))));
            }
            match image.users.get(name) {
                Some(creds) => r.with_credential_infos(
                    creds
                        .values()
                        .map(|c| {
                            CredentialInfo::default()
                                .with_mechanism(c.mechanism.kafka_code())
                                .with_iterations(i32::try_from(c.iterations).unwrap_or(i32::MAX))
                        })
                        .collect(),
                ),
                None => r
                    .with_error_code(counted_code(E::ResourceNotFound.code()))
                    .with_error_message(Some(StrBytes::from_string(format!("no credentials for user {name}")))),
            }
        })
        .collect();
    c.reply(
        ApiKey::DescribeUserScramCredentials,
        &DescribeUserScramCredentialsResponse::default().with_results(results),
    )
}

pub async fn alter(c: Call, req: AlterUserScramCredentialsRequest) -> Reply {
    let users: BTreeSet<String> = req
        .deletions
        .iter()
        .map(|d| d.name.to_string())
        .chain(req.upsertions.iter().map(|u| u.name.to_string()))
        .collect();
    let result = |user: &str, code: i16, message: Option<String>| {
        AlterUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.to_string()))
            .with_error_code(code)
            .with_error_message(message.map(StrBytes::from_string))
    };
    if !c.allowed_cluster(Operation::Alter) {
        let code = denied_code(ResourceType::Cluster);
        let results = users.iter().map(|u| result(u, code, None)).collect();
        return c.reply(
            ApiKey::AlterUserScramCredentials,
            &AlterUserScramCredentialsResponse::default().with_results(results),
        );
    }
    let mut results = Vec::with_capacity(users.len());
    for user in &users {
        let deletions: Vec<_> = req.deletions.iter().filter(|d| *d.name == **user).collect();
        let upsertions: Vec<_> = req.upsertions.iter().filter(|u| *u.name == **user).collect();
        let mechanisms: Vec<i8> =
            deletions.iter().map(|d| d.mechanism).chain(upsertions.iter().map(|u| u.mechanism)).collect();
        let failure = if user.is_empty() {
            Some((E::UnacceptableCredential, "empty user name".to_string()))
        } else if mechanisms.iter().any(|m| ScramMechanism::from_kafka_code(*m).is_none()) {
            Some((E::UnsupportedSaslMechanism, "unknown SCRAM mechanism".to_string()))
        } else if (1..mechanisms.len()).any(|i| mechanisms[i..].contains(&mechanisms[i - 1])) {
            Some((E::DuplicateResource, "a mechanism named twice for the user".to_string()))
        } else if let Some(u) = upsertions.iter().find(|u| {
            !(i64::from(ScramMechanism::MIN_ITERATIONS)..=i64::from(ScramMechanism::MAX_ITERATIONS))
                .contains(&i64::from(u.iterations))
        }) {
            Some((E::UnacceptableCredential, format!("{} iterations (4096 to 16384 allowed)", u.iterations)))
        } else if upsertions.iter().any(|u| {
            ScramMechanism::from_kafka_code(u.mechanism).is_some_and(|m| u.salted_password.len() != m.output_len())
                || u.salt.is_empty()
        }) {
            Some((E::UnacceptableCredential, "salt or salted password of the wrong length".to_string()))
        } else {
            None
        };
        if let Some((code, message)) = failure {
            results.push(result(user, counted_code(code.code()), Some(message)));
            continue;
        }
        let mut outcome = Ok(());
        for d in &deletions {
            let m = ScramMechanism::from_kafka_code(d.mechanism).unwrap_or(ScramMechanism::Sha256);
            outcome = c.ctx.broker.delete_scram_credential(user, m).await;
            if outcome.is_err() {
                break;
            }
        }
        if outcome.is_ok() {
            for u in &upsertions {
                let m = ScramMechanism::from_kafka_code(u.mechanism).unwrap_or(ScramMechanism::Sha256);
                let iterations = u32::try_from(u.iterations).unwrap_or(ScramMechanism::MIN_ITERATIONS);
                let credential = ScramCredential::from_salted_password(m, &u.salt, iterations, &u.salted_password);
                outcome = c.ctx.broker.upsert_scram_credential(user, credential).await;
                if outcome.is_err() {
                    break;
                }
            }
        }
        results.push(match outcome {
            Ok(()) => {
                tracing::info!(principal = %c.principal, user, "SCRAM credentials altered");
                result(user, 0, None)
            }
            Err(e) => result(user, error_code(&e), Some(e.to_string())),
        });
    }
    c.reply(ApiKey::AlterUserScramCredentials, &AlterUserScramCredentialsResponse::default().with_results(results))
}
