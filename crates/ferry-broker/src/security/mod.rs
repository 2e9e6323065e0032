//! Security: who a connection is ([`Principal`]), how it proves it
//! ([`ScramCredential`], the SCRAM server in [`scram`], PLAIN checked
//! against the same stored credential, OAUTHBEARER JWTs checked against a
//! JWKS in [`oauthbearer`], the file reloaded by [`JwksFile`]), and what it may do (Kafka's ACL
//! model in [`acl`], checked by the one [`Authorizer`] every front-end
//! uses). Users and ACLs live in the cluster metadata
//! ([`MetadataImage::users`](crate::metadata::MetadataImage) and
//! `acls`), so every node of a cluster decides the same. docs/security.md
//! describes the model and how the other protocols map onto it.

pub mod acl;
mod authorizer;
mod credentials;
mod gatekeeper;
mod jwks_file;
mod login_limiter;
pub mod mqtt_filter;
pub mod oauthbearer;
mod plain;
mod principal;
pub mod regex;
pub mod scram;
pub mod vhost_permissions;

pub use acl::{
    AclBinding, AclEntry, AclFilter, AclSet, Operation, PatternType, Permission, ResourcePattern, ResourceType,
};
pub use authorizer::{AclSource, Authorizer, AuthorizerConfig};
pub use credentials::{ScramCredential, ScramMechanism, UserCredentials};
pub use gatekeeper::{Gatekeeper, UserSource};
pub use jwks_file::JwksFile;
pub use login_limiter::LoginLimiter;
pub use oauthbearer::{JwtValidator, OAuthError};
pub use plain::{PlainError, parse_plain};
pub use principal::Principal;
