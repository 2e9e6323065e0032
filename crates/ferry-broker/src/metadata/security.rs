//! The records of the user and ACL requests, shared by the quorum
//! controller (`ferry-cluster`) and the test controller, so both validate
//! alike.

use super::{ControllerRequest, MetadataError, MetadataImage, MetadataRecord};
use crate::security::ScramMechanism;

/// Longest user name accepted.
const MAX_USER_NAME: usize = 256;

/// The records carrying out a user or ACL request against `image`; `None`
/// for the other requests.
pub fn security_change(
    image: &MetadataImage,
    request: &ControllerRequest,
) -> Option<Result<Vec<MetadataRecord>, MetadataError>> {
    let records = match request {
        ControllerRequest::UpsertScramCredential { user, credential } => (|| {
            check_user_name(user)?;
            let iterations = credential.iterations;
            if !(ScramMechanism::MIN_ITERATIONS..=ScramMechanism::MAX_ITERATIONS).contains(&iterations) {
                return Err(MetadataError::InvalidRequest(format!(
                    "{iterations} iterations ({} to {} allowed)",
                    ScramMechanism::MIN_ITERATIONS,
                    ScramMechanism::MAX_ITERATIONS
                )));
            }
            let len = credential.mechanism.output_len();
            if credential.stored_key.len() != len || credential.server_key.len() != len || credential.salt.is_empty() {
                return Err(MetadataError::InvalidRequest("malformed SCRAM credential".into()));
            }
            Ok(vec![MetadataRecord::UpsertScramCredential { user: user.clone(), credential: credential.clone() }])
        })(),
        ControllerRequest::DeleteScramCredential { user, mechanism } => {
            if image.users.get(user).is_some_and(|c| c.contains_key(mechanism)) {
                Ok(vec![MetadataRecord::DeleteScramCredential { user: user.clone(), mechanism: *mechanism }])
            } else {
                Err(MetadataError::ResourceNotFound(format!("no {} credential for {user}", mechanism.name())))
            }
        }
        ControllerRequest::CreateAcls { bindings } => Ok(bindings
            .iter()
            .filter(|b| !image.acls.contains(b))
            .map(|b| MetadataRecord::CreateAcl(b.clone()))
            .collect()),
        ControllerRequest::DeleteAcls { bindings } => Ok(bindings
            .iter()
            .filter(|b| image.acls.contains(b))
            .map(|b| MetadataRecord::DeleteAcl(b.clone()))
            .collect()),
        _ => return None,
    };
    Some(records)
}

/// Non-empty, bounded, printable (Kafka refuses empty names).
fn check_user_name(user: &str) -> Result<(), MetadataError> {
    if user.is_empty() || user.len() > MAX_USER_NAME || user.chars().any(char::is_control) {
        return Err(MetadataError::InvalidRequest(format!("invalid user name {user:?}")));
    }
    Ok(())
}
