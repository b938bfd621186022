//! One classification of infrastructure failures, used by every path that touches PostgreSQL or
//! RabbitMQ (HTTP handlers, consumers, group writers, the relay, the recording of failures and
//! dead letters), so that each of them decides retry-or-not the same way:
//!
//! | class | what it means | an HTTP request | a message |
//! | --- | --- | --- | --- |
//! | [`FailureClass::Unavailable`] | the dependency cannot be reached or will not take a session | 503 + `Retry-After` | back to its queue, no attempt spent; the consumer parks |
//! | [`FailureClass::Transient`] | the statement lost a race or ran out of time; the same statement may pass now | 503 + `Retry-After` | tried again, no attempt spent |
//! | [`FailureClass::Error`] | a real error (a bug, bad data, a refused declaration) | 500 | an attempt spent |
//!
//! A misconfiguration found at start-up (a bad URL, an unknown database, a certificate that does not
//! verify) is none of these: start-up stops with a message naming the setting.

use sea_orm::{DbErr, RuntimeErr, sqlx};

/// Where a failure comes from, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// The dependency cannot be reached, or refuses sessions: nothing the caller sent is at fault.
    Unavailable,
    /// The statement may pass if run again (serialization failure, deadlock, lock or statement
    /// timeout).
    Transient,
    /// A real error: retrying the same thing gives the same answer.
    Error,
}

impl FailureClass {
    /// Not the fault of the request or message: it costs no attempt and is never a 500.
    pub fn is_infrastructure(self) -> bool {
        matches!(self, Self::Unavailable | Self::Transient)
    }
}

/// Anything whose failures are classified.
pub trait Classify {
    fn class(&self) -> FailureClass;
}

impl Classify for DbErr {
    fn class(&self) -> FailureClass {
        match self {
            // No connection to be had: the pool timed out or closed, or a new connection failed
            // (refused, reset, or the server's FATAL at session start).
            DbErr::ConnectionAcquire(_) => FailureClass::Unavailable,
            DbErr::Conn(RuntimeErr::SqlxError(error)) => match error.class() {
                FailureClass::Transient => FailureClass::Transient,
                _ => FailureClass::Unavailable,
            },
            DbErr::Conn(RuntimeErr::Internal(_)) => FailureClass::Unavailable,
            DbErr::Query(RuntimeErr::SqlxError(error))
            | DbErr::Exec(RuntimeErr::SqlxError(error)) => error.class(),
            other => by_message(&other.to_string()).unwrap_or(FailureClass::Error),
        }
    }
}

impl Classify for sqlx::Error {
    fn class(&self) -> FailureClass {
        use sqlx::Error;
        match self {
            Error::Io(_)
            | Error::Tls(_)
            | Error::PoolTimedOut
            | Error::PoolClosed
            | Error::WorkerCrashed
            | Error::Protocol(_) => FailureClass::Unavailable,
            Error::Database(error) => error
                .code()
                .and_then(|code| by_sqlstate(&code))
                .or_else(|| by_message(error.message()))
                .unwrap_or(FailureClass::Error),
            _ => FailureClass::Error,
        }
    }
}

impl Classify for lapin::Error {
    fn class(&self) -> FailureClass {
        use lapin::ErrorKind;
        match self.kind() {
            ErrorKind::IOError(_)
            | ErrorKind::RuntimeShutdownError(_)
            | ErrorKind::MissingHeartbeatError
            | ErrorKind::InvalidConnectionState(_)
            | ErrorKind::InvalidChannelState(..)
            | ErrorKind::InvalidChannel(_)
            | ErrorKind::ChannelsLimitReached
            | ErrorKind::ParsingError(_) => FailureClass::Unavailable,
            // The broker closed the connection (CONNECTION_FORCED, a node going down): gone.
            // A channel-level refusal (NOT_FOUND, PRECONDITION_FAILED, ACCESS_REFUSED) is real.
            ErrorKind::ProtocolError(_) if self.is_amqp_hard_error() => FailureClass::Unavailable,
            _ => FailureClass::Error,
        }
    }
}

/// The class of a PostgreSQL SQLSTATE, if it is one of the infrastructure ones.
pub fn by_sqlstate(code: &str) -> Option<FailureClass> {
    match code {
        // Class 08: connection exception. Class 53: insufficient resources (too many
        // connections, disk full, out of memory). 57P01-57P05: admin shutdown, crash shutdown,
        // cannot connect now, database dropped, idle session timeout.
        _ if code.starts_with("08") || code.starts_with("53") => Some(FailureClass::Unavailable),
        "57P01" | "57P02" | "57P03" | "57P04" | "57P05" => Some(FailureClass::Unavailable),
        // Serialization failure, deadlock, lock not available, statement cancelled by
        // `statement_timeout` (or by an operator).
        "40001" | "40P01" | "55P03" | "57014" => Some(FailureClass::Transient),
        _ => None,
    }
}

/// What a server's message says when its code alone does not: `ALLOW_CONNECTIONS false` answers
/// 55000 "database ... is not currently accepting connections".
fn by_message(message: &str) -> Option<FailureClass> {
    const UNAVAILABLE: [&str; 5] = [
        "not currently accepting connections",
        "too many connections",
        "the database system is shutting down",
        "the database system is starting up",
        "the database system is in recovery mode",
    ];
    UNAVAILABLE
        .iter()
        .any(|needle| message.contains(needle))
        .then_some(FailureClass::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn sqlstates_are_classified_by_the_table() {
        let table = [
            ("08000", Some(FailureClass::Unavailable)),
            ("08006", Some(FailureClass::Unavailable)),
            ("08P01", Some(FailureClass::Unavailable)),
            ("53000", Some(FailureClass::Unavailable)),
            ("53100", Some(FailureClass::Unavailable)),
            ("53200", Some(FailureClass::Unavailable)),
            ("53300", Some(FailureClass::Unavailable)),
            ("57P01", Some(FailureClass::Unavailable)),
            ("57P02", Some(FailureClass::Unavailable)),
            ("57P03", Some(FailureClass::Unavailable)),
            ("57P04", Some(FailureClass::Unavailable)),
            ("57P05", Some(FailureClass::Unavailable)),
            ("40001", Some(FailureClass::Transient)),
            ("40P01", Some(FailureClass::Transient)),
            ("55P03", Some(FailureClass::Transient)),
            ("57014", Some(FailureClass::Transient)),
            // Real errors: unique violation, undefined table, syntax, numeric overflow, the
            // generic 55000 without its message.
            ("23505", None),
            ("42P01", None),
            ("42601", None),
            ("22003", None),
            ("55000", None),
            ("57000", None),
        ];
        for (code, class) in table {
            assert_eq!(by_sqlstate(code), class, "{code}");
        }
    }

    #[test]
    fn a_refused_session_is_recognised_by_its_message() {
        assert_eq!(
            by_message("database \"orders\" is not currently accepting connections"),
            Some(FailureClass::Unavailable)
        );
        assert_eq!(
            by_message("too many connections for role \"x\""),
            Some(FailureClass::Unavailable)
        );
        assert_eq!(by_message("duplicate key value"), None);
    }

    #[test]
    fn database_errors_by_kind() {
        use sea_orm::ConnAcquireErr;
        use sqlx::Error;
        let query = |error: Error| DbErr::Query(RuntimeErr::SqlxError(Arc::new(error)));
        let io = |kind| Error::Io(std::io::Error::new(kind, "boom"));
        let table = [
            (
                query(io(std::io::ErrorKind::ConnectionReset)),
                FailureClass::Unavailable,
            ),
            (
                query(io(std::io::ErrorKind::ConnectionRefused)),
                FailureClass::Unavailable,
            ),
            (
                query(io(std::io::ErrorKind::UnexpectedEof)),
                FailureClass::Unavailable,
            ),
            (query(Error::PoolTimedOut), FailureClass::Unavailable),
            (query(Error::PoolClosed), FailureClass::Unavailable),
            (query(Error::WorkerCrashed), FailureClass::Unavailable),
            (
                query(Error::Protocol("unexpected message".into())),
                FailureClass::Unavailable,
            ),
            (
                DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
                FailureClass::Unavailable,
            ),
            (
                DbErr::Conn(RuntimeErr::SqlxError(Arc::new(io(
                    std::io::ErrorKind::ConnectionRefused,
                )))),
                FailureClass::Unavailable,
            ),
            (query(Error::RowNotFound), FailureClass::Error),
            (
                query(Error::ColumnNotFound("id".into())),
                FailureClass::Error,
            ),
            (DbErr::Custom("a bug".into()), FailureClass::Error),
            (DbErr::RecordNotFound("x".into()), FailureClass::Error),
        ];
        for (error, class) in table {
            assert_eq!(error.class(), class, "{error}");
        }
    }

    #[test]
    fn broker_errors_by_kind() {
        let io = lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert_eq!(io.class(), FailureClass::Unavailable);
        let heartbeat = lapin::Error::from(lapin::ErrorKind::MissingHeartbeatError);
        assert_eq!(heartbeat.class(), FailureClass::Unavailable);
        let serialisation = lapin::Error::from(lapin::ErrorKind::FutureCompleted);
        assert_eq!(serialisation.class(), FailureClass::Error);
    }

    #[test]
    fn only_unavailable_and_transient_are_infrastructure() {
        assert!(FailureClass::Unavailable.is_infrastructure());
        assert!(FailureClass::Transient.is_infrastructure());
        assert!(!FailureClass::Error.is_infrastructure());
    }
}
