//! What a failure may say outside the process. `/health` and `/ready` say why a dependency is
//! not ready, but an error's own text can name a user, a host or a database ("password
//! authentication failed for user ..."): these descriptions are built from the error's kind and
//! code only, and the broker's reply texts, the one free text kept, are scrubbed of every part of
//! the configured URL. The full error goes to the log.

use sea_orm::{DbErr, RuntimeErr, sqlx};

/// Why PostgreSQL did not answer, without names.
pub fn database(error: &DbErr) -> String {
    match error {
        DbErr::ConnectionAcquire(_) => "no connection from the pool in time".to_owned(),
        DbErr::Conn(RuntimeErr::SqlxError(error))
        | DbErr::Query(RuntimeErr::SqlxError(error))
        | DbErr::Exec(RuntimeErr::SqlxError(error)) => sqlx_error(error),
        _ => "error (the service log has it)".to_owned(),
    }
}

fn sqlx_error(error: &sqlx::Error) -> String {
    use sqlx::Error;
    match error {
        Error::Io(error) => io_error(error),
        Error::Tls(_) => "TLS handshake failed".to_owned(),
        Error::PoolTimedOut => "no connection from the pool in time".to_owned(),
        Error::PoolClosed => "the connection pool is closed".to_owned(),
        Error::Protocol(_) => "protocol error".to_owned(),
        Error::Database(error) => {
            let code = error
                .code()
                .map(|code| code.into_owned())
                .unwrap_or_default();
            let message = error.message();
            let what = match code.as_str() {
                "28P01" | "28000" => "refuses the credentials",
                "3D000" => "the database does not exist",
                "53300" => "too many connections",
                "57P01" | "57P02" => "terminated the session",
                "57P03" => "does not accept connections now",
                "57014" => "statement cancelled (timeout)",
                _ if message.contains("not currently accepting connections") => {
                    "does not accept connections now"
                }
                _ if message.contains("too many connections") => "too many connections",
                _ => "error",
            };
            if code.is_empty() {
                what.to_owned()
            } else {
                format!("{what} (SQLSTATE {code})")
            }
        }
        _ => "error (the service log has it)".to_owned(),
    }
}

fn io_error(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => "connection refused",
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            "connection reset"
        }
        ErrorKind::TimedOut => "timed out",
        ErrorKind::UnexpectedEof => "connection closed",
        _ => "cannot connect (the service log says why)",
    }
    .to_owned()
}

/// Why RabbitMQ did not answer, without names: an I/O failure by its kind, a refused login or
/// virtual host by its code only, any other refusal with the broker's reply text scrubbed of the
/// parts of `url`.
pub fn broker(error: &lapin::Error, url: &str) -> String {
    use lapin::ErrorKind;
    match error.kind() {
        ErrorKind::IOError(error) => io_error(error),
        ErrorKind::ProtocolError(error) => match error.get_id() {
            // ACCESS_REFUSED, NOT_ALLOWED: their texts name the user and the virtual host.
            403 | 530 => format!(
                "the broker refused the credentials or the virtual host (reply code {})",
                error.get_id()
            ),
            _ => scrub(error.get_message().as_str(), url),
        },
        ErrorKind::MissingHeartbeatError => "missed heartbeats".to_owned(),
        ErrorKind::InvalidConnectionState(_) => "the connection is closed".to_owned(),
        _ => "error (the service log has it)".to_owned(),
    }
}

/// `text` with the user, password, host and path of `url` replaced by `***`.
pub fn scrub(text: &str, url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return text.to_owned();
    };
    let decoded = |part: &str| {
        url::form_urlencoded::parse(format!("x={part}").as_bytes())
            .next()
            .map(|(_, value)| value.into_owned())
            .unwrap_or_default()
    };
    let mut secrets = vec![
        parsed.username().to_owned(),
        decoded(parsed.username()),
        parsed.password().unwrap_or_default().to_owned(),
        decoded(parsed.password().unwrap_or_default()),
        parsed.host_str().unwrap_or_default().to_owned(),
    ];
    secrets.retain(|secret| secret.len() > 1);
    // Longest first, so that a part inside another is not left half-replaced.
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    let mut text = text.to_owned();
    for secret in secrets {
        text = text.replace(&secret, "***");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_removes_every_part_of_the_url() {
        let url = "amqp://order%2Dsvc:s3cret@rabbit.internal:5672/%2f";
        let text = "NOT_ALLOWED - vhost / for user 'order-svc' (s3cret) on rabbit.internal";
        let scrubbed = scrub(text, url);
        assert!(!scrubbed.contains("order-svc"), "{scrubbed}");
        assert!(!scrubbed.contains("s3cret"), "{scrubbed}");
        assert!(!scrubbed.contains("rabbit.internal"), "{scrubbed}");
        assert!(scrubbed.starts_with("NOT_ALLOWED - vhost / for user '***'"));
    }

    #[test]
    fn io_failures_are_described_by_their_kind() {
        let error = lapin::Error::from(std::io::Error::other(
            "failed to lookup rabbit.internal for user alice",
        ));
        let described = broker(&error, "amqp://alice:pw@rabbit.internal/%2f");
        assert!(!described.contains("alice") && !described.contains("rabbit.internal"));
        let refused =
            lapin::Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(broker(&refused, ""), "connection refused");
    }
}
