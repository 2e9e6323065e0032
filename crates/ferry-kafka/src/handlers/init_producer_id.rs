//! InitProducerId: a producer id for an idempotent producer, or for a
//! transactional id from the transaction coordinator (which fences the id's
//! previous producer instance).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use ferry_broker::metadata::CoordinatorKind;

use super::Call;
use super::coordinator::coordinates;
use crate::errors::{denied_code, error_code, txn_error_code};
use crate::response::Reply;
use ferry_broker::security::{Operation, ResourceType};

/// InitProducerId. Ids come from this node's block, topped up from the
/// controller first if it is used up; the transaction coordinator's
/// blocking work runs off the async workers.
pub async fn handle(c: Call, req: InitProducerIdRequest) -> Reply {
    let broker = c.ctx.broker.clone();
    let mut r = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if let Some(id) = req.transactional_id.as_deref() {
        if id.is_empty() {
            r.error_code = ResponseError::InvalidRequest.code();
            return c.reply(ApiKey::InitProducerId, &r);
        }
        if !c.allowed(Operation::Write, ResourceType::TransactionalId, id) {
            r.error_code = denied_code(ResourceType::TransactionalId);
            return c.reply(ApiKey::InitProducerId, &r);
        }
        if !coordinates(&c, CoordinatorKind::Transaction, id) {
            r.error_code = ResponseError::NotCoordinator.code();
            return c.reply(ApiKey::InitProducerId, &r);
        }
        if let Err(e) = broker.reserve_producer_ids().await {
            r.error_code = txn_error_code(ferry_broker::txn::TxnError::CoordinatorNotAvailable, c.version >= 4);
            tracing::debug!(error = %e, "no producer id block");
            return c.reply(ApiKey::InitProducerId, &r);
        }
        return match tokio::task::spawn_blocking(move || transactional(&c, req)).await {
            Ok(reply) => reply,
            Err(_) => Reply::Close("InitProducerId task failed".into()),
        };
    }
    // An idempotent producer: IdempotentWrite on the cluster, or Write on
    // some topic (KIP-679, so producers with topic ACLs work by default).
    if !c.allowed_cluster(Operation::IdempotentWrite) && !c.allowed_any(Operation::Write, ResourceType::Topic) {
        r.error_code = denied_code(ResourceType::Cluster);
        return c.reply(ApiKey::InitProducerId, &r);
    }
    // KIP-360 (v3+): a producer that knows its id asks for the next epoch,
    // keeping its id; one that exhausted its epochs gets a new id.
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    let bump = c.version >= 3 && pid >= 0 && epoch >= 0;
    if bump && !broker.producer_id_issued(pid) {
        r.error_code = ResponseError::InvalidProducerIdMapping.code();
        return c.reply(ApiKey::InitProducerId, &r);
    }
    if bump && epoch < i16::MAX - 1 {
        r.producer_id = ProducerId(pid);
        r.producer_epoch = epoch + 1;
    } else {
        match broker.next_producer_id().await {
            Ok(id) => {
                r.producer_id = ProducerId(id);
                r.producer_epoch = 0;
            }
            Err(e) => r.error_code = error_code(&e),
        }
    }
    c.reply(ApiKey::InitProducerId, &r)
}

/// InitProducerId for a transactional id, on a blocking thread.
fn transactional(c: &Call, req: InitProducerIdRequest) -> Reply {
    let broker = &c.ctx.broker;
    let mut r = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    let id = req.transactional_id.as_ref().map_or("", |i| &**i);
    let expected = (c.version >= 3 && req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
    match broker.txns().init_producer(id, req.transaction_timeout_ms, expected, broker.producer_ids(), broker.as_ref())
    {
        Ok((pid, epoch)) => {
            r.producer_id = ProducerId(pid);
            r.producer_epoch = epoch;
        }
        Err(e) => r.error_code = txn_error_code(e, c.version >= 4),
    }
    c.reply(ApiKey::InitProducerId, &r)
}
