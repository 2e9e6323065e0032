//! The methods clients send, numbered for the request metrics
//! (`ferry_requests_total{protocol="amqp", api="basic.publish"}`).
//!
//! The handshake (connection.start-ok, tune-ok, open) is not counted: it
//! happens once per connection, counted by `ferry_connections_accepted`.

/// (class id, method id, name) of every method a client sends after the
/// handshake; the position in this table is the metrics API number.
const METHODS: &[(u16, u16, &str)] = &[
    (10, 50, "connection.close"),
    (10, 51, "connection.close-ok"),
    (10, 60, "connection.blocked"),
    (10, 61, "connection.unblocked"),
    (10, 70, "connection.update-secret"),
    (20, 10, "channel.open"),
    (20, 20, "channel.flow"),
    (20, 21, "channel.flow-ok"),
    (20, 40, "channel.close"),
    (20, 41, "channel.close-ok"),
    (30, 10, "access.request"),
    (40, 10, "exchange.declare"),
    (40, 20, "exchange.delete"),
    (40, 30, "exchange.bind"),
    (40, 40, "exchange.unbind"),
    (50, 10, "queue.declare"),
    (50, 20, "queue.bind"),
    (50, 30, "queue.purge"),
    (50, 40, "queue.delete"),
    (50, 50, "queue.unbind"),
    (60, 10, "basic.qos"),
    (60, 20, "basic.consume"),
    (60, 30, "basic.cancel"),
    (60, 40, "basic.publish"),
    (60, 70, "basic.get"),
    (60, 80, "basic.ack"),
    (60, 90, "basic.reject"),
    (60, 100, "basic.recover-async"),
    (60, 110, "basic.recover"),
    (60, 120, "basic.nack"),
    (85, 10, "confirm.select"),
    (90, 10, "tx.select"),
    (90, 20, "tx.commit"),
    (90, 30, "tx.rollback"),
];

/// The API number of basic.publish, observed when its content is complete.
pub const BASIC_PUBLISH: usize = 23;

/// (API number, name) of every counted method, for `ProtocolMetrics::new`.
pub fn method_names() -> Vec<(usize, &'static str)> {
    METHODS.iter().enumerate().map(|(i, &(_, _, name))| (i, name)).collect()
}

/// The API number of a method; `usize::MAX` (not counted) if it is not one.
pub fn method_index(class: u16, method: u16) -> usize {
    METHODS.iter().position(|&(c, m, _)| c == class && m == method).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_numbered_by_position() {
        assert_eq!(METHODS[BASIC_PUBLISH].2, "basic.publish");
        assert_eq!(method_index(60, 40), BASIC_PUBLISH);
        assert_eq!(method_index(50, 10), 15);
        assert_eq!(method_index(10, 11), usize::MAX);
        assert_eq!(method_names().len(), METHODS.len());
    }
}
