//! Operator actions, one INFO line each under the target `audit`, with the same fields every
//! time: `subject` (who: an operator JWT's `sub`, [`STATIC_TOKEN`] for the static operator token,
//! [`LOOPBACK`](crate::auth::LOOPBACK) for a loopback client without a token, [`COMMAND_LINE`] for
//! the services' `dead-letters` commands), `action`, and what it acted on: `queue` and `count`
//! (how many) for dead letters, `order_id` for an operator's change to one order. A refused
//! attempt is a WARN line of the same target with `outcome` `refused` and the client's address.
//! Find them all with `grep '"target":"audit"'` or a log query on `target = audit`.

use std::net::IpAddr;

/// The subject of a request carrying the configured operator token.
pub const STATIC_TOKEN: &str = "static-token";
/// The subject of an operator command run on the service's host.
pub const COMMAND_LINE: &str = "command-line";

/// The actions, the same over HTTP and from the command line.
pub const LIST_DEAD_LETTERS: &str = "list dead letters";
pub const REPLAY_DEAD_LETTERS: &str = "replay dead letters";
/// An operator cancelled a customer's order.
pub const CANCEL_ORDER: &str = "cancel order";

/// `subject` did `action` on `queue`, to `count` messages.
pub fn operator_action(subject: &str, action: &str, queue: &str, count: usize) {
    tracing::info!(
        target: "audit",
        subject,
        action,
        queue,
        count,
        outcome = "done",
        "operator action"
    );
}

/// `subject` did `action` to the order `order_id`.
pub fn order_action(subject: &str, action: &str, order_id: uuid::Uuid) {
    tracing::info!(
        target: "audit",
        subject,
        action,
        order_id = %order_id,
        outcome = "done",
        "operator action"
    );
}

/// A request for `action` was refused before it did anything (`reason`: no or a wrong token,
/// operator endpoints disabled).
pub fn refused(action: &str, client: Option<IpAddr>, reason: &str) {
    tracing::warn!(
        target: "audit",
        action,
        client = client.map(|ip| ip.to_string()),
        outcome = "refused",
        reason,
        "operator action refused"
    );
}
