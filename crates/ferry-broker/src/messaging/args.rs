//! Queue arguments (RabbitMQ's `x-` names) that change queue behaviour.

use super::exchange::{HeaderValue, Headers};

/// What a full queue does with a new message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest ready messages.
    #[default]
    DropHead,
    /// Refuse the new message (publisher confirm: nack).
    RejectPublish,
    /// Refuse it and dead-letter it.
    RejectPublishDlx,
}

/// The parsed `x-` arguments of one queue; `None` = no limit / not set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueArgs {
    /// `x-message-ttl`, ms.
    pub message_ttl: Option<u64>,
    /// `x-expires`: delete the queue after this long unused, ms.
    pub expires: Option<u64>,
    /// `x-max-length`: most ready messages kept.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`: most bytes of ready message bodies kept.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`: what happens when a length limit is reached.
    pub overflow: Overflow,
    /// `x-dead-letter-exchange`: where dropped, expired or rejected messages go.
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`: routing key for dead-lettered messages
    /// (default: the message's own).
    pub dead_letter_routing_key: Option<String>,
    /// `x-delivery-limit`: returned more often than this, a message is
    /// dead-lettered (or dropped) instead of redelivered.
    pub delivery_limit: Option<u32>,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
    /// `x-max-priority` (1..=255).
    pub max_priority: Option<u8>,
    /// `x-kafka-topic`: the queue is fed from this Kafka topic.
    pub kafka_topic: Option<String>,
    /// `x-kafka-start = "earliest"`: feed from the topic's start rather
    /// than its end at declaration.
    pub kafka_start_earliest: bool,
    /// `x-retry-delays = "100,200,400"` (ms): a message rejected without
    /// requeue comes back after the next delay; once they are used up it
    /// is dead-lettered (or dropped).
    pub retry_delays: Vec<u64>,
}

impl QueueArgs {
    /// Parses and validates; the error names the offending argument.
    pub fn parse(args: &Headers) -> Result<QueueArgs, String> {
        let mut a = QueueArgs::default();
        let non_negative = |k: &str, v: &HeaderValue| -> Result<u64, String> {
            v.as_int().and_then(|i| u64::try_from(i).ok()).ok_or_else(|| format!("invalid arg '{k}': {v:?}"))
        };
        for (k, v) in args {
            match k.as_str() {
                "x-message-ttl" => a.message_ttl = Some(non_negative(k, v)?),
                "x-expires" => {
                    let ms = non_negative(k, v)?;
                    if ms == 0 {
                        return Err(format!("invalid arg '{k}': 0 (must be positive)"));
                    }
                    a.expires = Some(ms);
                }
                "x-max-length" => a.max_length = Some(non_negative(k, v)?),
                "x-max-length-bytes" => a.max_length_bytes = Some(non_negative(k, v)?),
                "x-overflow" => {
                    a.overflow = match v.as_str() {
                        Some("drop-head") => Overflow::DropHead,
                        Some("reject-publish") => Overflow::RejectPublish,
                        Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                        _ => return Err(format!("invalid arg '{k}': {v:?}")),
                    }
                }
                "x-dead-letter-exchange" => {
                    a.dead_letter_exchange =
                        Some(v.as_str().ok_or_else(|| format!("invalid arg '{k}': {v:?}"))?.to_string());
                }
                "x-dead-letter-routing-key" => {
                    a.dead_letter_routing_key =
                        Some(v.as_str().ok_or_else(|| format!("invalid arg '{k}': {v:?}"))?.to_string());
                }
                "x-delivery-limit" => {
                    a.delivery_limit = Some(u32::try_from(non_negative(k, v)?).unwrap_or(u32::MAX));
                }
                "x-single-active-consumer" => match v {
                    HeaderValue::Bool(b) => a.single_active_consumer = *b,
                    _ => return Err(format!("invalid arg '{k}': {v:?}")),
                },
                "x-max-priority" => {
                    let p = non_negative(k, v)?;
                    if p == 0 || p > 255 {
                        return Err(format!("invalid arg '{k}': {p} (1 to 255)"));
                    }
                    a.max_priority = Some(p as u8);
                }
                "x-kafka-topic" => {
                    a.kafka_topic = Some(v.as_str().ok_or_else(|| format!("invalid arg '{k}': {v:?}"))?.to_string());
                }
                "x-retry-delays" => {
                    let bad = || format!("invalid arg '{k}': {v:?} (comma-separated milliseconds)");
                    let text = v.as_str().ok_or_else(bad)?;
                    a.retry_delays = text
                        .split(',')
                        .map(|d| d.trim().parse::<u64>().map_err(|_| bad()))
                        .collect::<Result<Vec<_>, _>>()?;
                }
                "x-kafka-start" => match v.as_str() {
                    Some("earliest") => a.kafka_start_earliest = true,
                    Some("latest") => a.kafka_start_earliest = false,
                    _ => return Err(format!("invalid arg '{k}': {v:?} (earliest or latest)")),
                },
                _ => {}
            }
        }
        if a.dead_letter_routing_key.is_some() && a.dead_letter_exchange.is_none() {
            return Err("invalid arg 'x-dead-letter-routing-key': needs x-dead-letter-exchange".into());
        }
        Ok(a)
    }

    /// Whether a length limit (`x-max-length` or `x-max-length-bytes`) is set.
    pub fn limited(&self) -> bool {
        self.max_length.is_some() || self.max_length_bytes.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let h = |pairs: &[(&str, HeaderValue)]| -> Headers {
            pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
        };
        let a = QueueArgs::parse(&h(&[
            ("x-message-ttl", HeaderValue::Int(500)),
            ("x-max-length", HeaderValue::Int(3)),
            ("x-overflow", HeaderValue::Str("reject-publish".into())),
            ("x-dead-letter-exchange", HeaderValue::Bytes(b"dlx".to_vec())),
            ("x-delivery-limit", HeaderValue::Int(2)),
            ("x-single-active-consumer", HeaderValue::Bool(true)),
        ]))
        .unwrap();
        assert_eq!(a.message_ttl, Some(500));
        assert_eq!(a.overflow, Overflow::RejectPublish);
        assert_eq!(a.dead_letter_exchange.as_deref(), Some("dlx"));
        assert!(a.single_active_consumer && a.limited());
        assert!(QueueArgs::parse(&h(&[("x-message-ttl", HeaderValue::Int(-1))])).is_err());
        assert!(QueueArgs::parse(&h(&[("x-overflow", HeaderValue::Str("explode".into()))])).is_err());
        assert!(QueueArgs::parse(&h(&[("x-max-priority", HeaderValue::Int(300))])).is_err());
        assert!(QueueArgs::parse(&h(&[("x-dead-letter-routing-key", HeaderValue::Str("k".into()))])).is_err());
    }
}
