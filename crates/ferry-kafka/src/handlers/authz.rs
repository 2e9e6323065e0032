//! Authorization of a request: the connection's principal, its address,
//! and the one authorizer. Without security configured every check passes
//! (no SASL listener: everything as before authorization existed).

use ferry_broker::security::acl::CLUSTER_NAME;
use ferry_broker::security::{Operation, ResourceType};

use super::Call;

impl Call {
    /// Whether authorization is on for this listener.
    pub fn secured(&self) -> bool {
        self.ctx.config.security.is_some()
    }

    /// The client's IP address as ACLs name hosts.
    pub fn host(&self) -> &str {
        self.peer.trim_start_matches('/')
    }

    /// May the connection do `op` on resource `name` of `rt`?
    pub fn allowed(&self, op: Operation, rt: ResourceType, name: &str) -> bool {
        match &self.ctx.config.security {
            None => true,
            Some(s) => {
                let ok = s.authorizer.authorize(&self.principal, self.host(), op, rt, name);
                if !ok {
                    tracing::debug!(principal = %self.principal, host = self.host(), ?op, ?rt, name, "denied");
                }
                ok
            }
        }
    }

    /// May the connection do `op` on the cluster?
    pub fn allowed_cluster(&self, op: Operation) -> bool {
        self.allowed(op, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// May the connection do `op` on some resource of `rt` (KIP-679)?
    pub fn allowed_any(&self, op: Operation, rt: ResourceType) -> bool {
        match &self.ctx.config.security {
            None => true,
            Some(s) => s.authorizer.authorize_any(&self.principal, self.host(), op, rt),
        }
    }
}
