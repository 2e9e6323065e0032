//! InitProducerId: a producer id for an idempotent producer, or for a
//! transactional id from the transaction coordinator (which fences the id's
//! previous producer instance).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::Call;
use crate::errors::{error_code, txn_error_code};
use crate::response::Reply;

pub fn handle(c: &Call, req: InitProducerIdRequest) -> Reply {
    let ids = c.ctx.broker.producer_ids();
    let mut r = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if let Some(id) = req.transactional_id.as_deref() {
        if id.is_empty() {
            r.error_code = ResponseError::InvalidRequest.code();
            return c.reply(ApiKey::InitProducerId, &r);
        }
        let expected = (c.version >= 3 && req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
        let broker = &c.ctx.broker;
        match broker.txns().init_producer(id, req.transaction_timeout_ms, expected, ids, broker.as_ref()) {
            Ok((pid, epoch)) => {
                r.producer_id = ProducerId(pid);
                r.producer_epoch = epoch;
            }
            Err(e) => r.error_code = txn_error_code(e, c.version >= 4),
        }
        return c.reply(ApiKey::InitProducerId, &r);
    }
    // KIP-360 (v3+): a producer that knows its id asks for the next epoch,
    // keeping its id; one that exhausted its epochs gets a new id.
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    let bump = c.version >= 3 && pid >= 0 && epoch >= 0;
    if bump && !ids.issued(pid) {
        r.error_code = ResponseError::InvalidProducerIdMapping.code();
        return c.reply(ApiKey::InitProducerId, &r);
    }
    if bump && epoch < i16::MAX - 1 {
        r.producer_id = ProducerId(pid);
        r.producer_epoch = epoch + 1;
    } else {
        match ids.next() {
            Ok(id) => {
                r.producer_id = ProducerId(id);
                r.producer_epoch = 0;
            }
            Err(e) => r.error_code = error_code(&e),
        }
    }
    c.reply(ApiKey::InitProducerId, &r)
}
