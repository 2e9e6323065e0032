//! User and ACL changes through the controller quorum (the broker side of
//! AlterUserScramCredentials, CreateAcls and DeleteAcls, and of the
//! bootstrap users a node imports at its first start).

use crate::broker::Broker;
use crate::error::Result;
use crate::metadata::ControllerRequest;
use crate::security::{AclBinding, ScramCredential, ScramMechanism};

impl Broker {
    /// Sets `user`'s credential for its mechanism (creating the user).
    pub async fn upsert_scram_credential(&self, user: &str, credential: ScramCredential) -> Result<()> {
        self.submit_change(ControllerRequest::UpsertScramCredential { user: user.to_string(), credential }).await
    }

    /// Removes `user`'s credential for `mechanism`.
    pub async fn delete_scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Result<()> {
        self.submit_change(ControllerRequest::DeleteScramCredential { user: user.to_string(), mechanism }).await
    }

    /// Adds ACLs (present ones stay).
    pub async fn create_acls(&self, bindings: Vec<AclBinding>) -> Result<()> {
        self.submit_change(ControllerRequest::CreateAcls { bindings }).await
    }

    /// Removes ACLs (absent ones are skipped).
    pub async fn delete_acls(&self, bindings: Vec<AclBinding>) -> Result<()> {
        self.submit_change(ControllerRequest::DeleteAcls { bindings }).await
    }

    /// The credential `user` has for `mechanism`, from the image.
    pub fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.metadata().users.get(user)?.get(&mechanism).cloned()
    }
}
