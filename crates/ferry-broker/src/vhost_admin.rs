//! Vhost changes through the controller quorum (the broker side of the
//! admin API's `PUT` and `DELETE /api/vhosts/{name}`; docs/cluster.md,
//! "Vhosts as records"). Every node opens or closes the vhost as it
//! applies the record (`messaging/vhost_records.rs`).

use crate::broker::Broker;
use crate::error::Result;
use crate::metadata::{AmqpRequest, ControllerRequest};

impl Broker {
    /// Creates the vhost `name`; `false`: it existed already (nothing changed).
    pub async fn create_vhost(&self, name: &str) -> Result<bool> {
        let existed = self.metadata().vhosts.contains_key(name);
        self.submit_change(ControllerRequest::Amqp(AmqpRequest::CreateVhost { name: name.to_string() })).await?;
        Ok(!existed)
    }

    /// Deletes the vhost `name` with its exchanges, bindings and queues
    /// (`ResourceNotFound` if there is none).
    pub async fn delete_vhost(&self, name: &str) -> Result<()> {
        self.submit_change(ControllerRequest::Amqp(AmqpRequest::DeleteVhost { name: name.to_string() })).await
    }

    /// The vhosts, by name.
    pub fn vhost_names(&self) -> Vec<String> {
        self.metadata().vhosts.keys().cloned().collect()
    }
}
