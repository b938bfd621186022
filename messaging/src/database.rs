//! Connecting to PostgreSQL: the service's database is created if missing, then the caller runs
//! its migrations. TLS (rustls) is what the URL's `sslmode` says, as with libpq: `require`
//! (encrypted, the server not checked), `verify-ca` (its certificate signed by `sslrootcert`, a CA
//! file), `verify-full` (and issued for the host); a URL without `sslmode` connects without TLS
//! (`disable`), never silently half-way (`prefer`).

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, Statement};

use crate::settings::DatabaseSettings;

/// SQLSTATE of `CREATE DATABASE` when the database exists (another instance won the race).
const DUPLICATE_DATABASE: &str = "42P04";

#[derive(Debug, thiserror::Error)]
pub enum DatabaseSetupError {
    #[error("database URL has no database name")]
    NoDatabaseName,
    #[error("database name {0:?} must be letters, digits and underscores")]
    BadDatabaseName(String),
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// Splits `postgres://host/db?x` into (`postgres://host/postgres?x`, `db`).
fn maintenance_url(url: &str) -> Result<(String, String), DatabaseSetupError> {
    let (without_query, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (server, name) = without_query
        .rsplit_once('/')
        .filter(|(server, name)| {
            server.contains("://") && !server.ends_with('/') && !name.is_empty()
        })
        .ok_or(DatabaseSetupError::NoDatabaseName)?;
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(DatabaseSetupError::BadDatabaseName(name.to_owned()));
    }
    let mut maintenance = format!("{server}/postgres");
    if let Some(query) = query {
        maintenance.push('?');
        maintenance.push_str(query);
    }
    Ok((maintenance, name.to_owned()))
}

/// `url` with `sslmode=disable` when it names no `sslmode`.
pub fn with_ssl_mode(url: &str) -> String {
    let query = url.split_once('?').map(|(_, query)| query).unwrap_or("");
    if query.split('&').any(|pair| pair.starts_with("sslmode=")) {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&sslmode=disable")
    } else {
        format!("{url}?sslmode=disable")
    }
}

/// Creates the database named in `url` unless it exists.
pub async fn create_database_if_missing(url: &str) -> Result<(), DatabaseSetupError> {
    let (maintenance, name) = maintenance_url(&with_ssl_mode(url))?;
    let mut options = ConnectOptions::new(maintenance);
    options.max_connections(1).sqlx_logging(false);
    let server = Database::connect(options).await?;
    let exists = server
        .query_one_raw(Statement::from_sql_and_values(
            server.get_database_backend(),
            "SELECT 1 FROM pg_database WHERE datname = $1",
            [name.clone().into()],
        ))
        .await?
        .is_some();
    if !exists {
        // The name was checked above: letters, digits and underscores only.
        match server
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
        {
            Ok(_) => tracing::info!(database = %name, "database created"),
            Err(error)
                if error.to_string().contains(DUPLICATE_DATABASE)
                    || error.to_string().contains("already exists") => {}
            Err(error) => return Err(error.into()),
        }
    }
    server.close().await?;
    Ok(())
}

/// sea-orm's error for an error of a statement run on the pool directly (the group statements,
/// which bind arrays: one SQL text whatever the group size, so PostgreSQL parses and plans each
/// once per connection). Mapped as sea-orm maps its own, so [`crate::failure::Classify`] reads both alike.
pub fn from_sqlx(error: sea_orm::sqlx::Error) -> DbErr {
    use sea_orm::sqlx::Error;
    use sea_orm::{ConnAcquireErr, RuntimeErr};
    match error {
        Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
        other => DbErr::Query(RuntimeErr::SqlxError(std::sync::Arc::new(other))),
    }
}

/// Creates the database if needed and opens the pool.
pub async fn connect(
    settings: &DatabaseSettings,
) -> Result<DatabaseConnection, DatabaseSetupError> {
    create_database_if_missing(settings.url.expose()).await?;
    let mut options = ConnectOptions::new(with_ssl_mode(settings.url.expose()));
    options
        .max_connections(settings.max_connections)
        .min_connections(1)
        .acquire_timeout(settings.acquire_timeout)
        .connect_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    if !settings.ping_after_idle.is_zero() {
        // sqlx pings every connection it hands out unless told otherwise: a round trip per
        // statement. A connection in use a moment ago is alive; a dead one (say, after a
        // PostgreSQL restart) fails its statement as unavailable (`crate::failure`).
        options.test_before_acquire_if_idle_for(settings.ping_after_idle);
    }
    Ok(Database::connect(options).await?)
}

/// The read-only pool of the API's reads: `read_max_connections` sessions, each with
/// `default_transaction_read_only`, `statement_timeout` and no parallel workers, so that reads can
/// neither write, nor run for long, nor take the connections or the cores the writers need.
/// Connects lazily.
pub async fn connect_reads(settings: &DatabaseSettings) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(with_ssl_mode(settings.url.expose()));
    let timeout = format!("{}ms", settings.read_statement_timeout.as_millis());
    options
        .max_connections(settings.read_max_connections)
        .min_connections(0)
        .acquire_timeout(settings.acquire_timeout)
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy(true)
        .sqlx_logging(false)
        .map_sqlx_postgres_opts(move |options| {
            options.options([
                ("statement_timeout", timeout.as_str()),
                ("default_transaction_read_only", "on"),
                // One core per read at most: a scan does not fan out over every core.
                ("max_parallel_workers_per_gather", "0"),
            ])
        });
    if !settings.ping_after_idle.is_zero() {
        options.test_before_acquire_if_idle_for(settings.ping_after_idle);
    }
    Database::connect(options).await
}

/// Drops the database named in `url`, closing its sessions (test clean-up).
pub async fn drop_database(url: &str) -> Result<(), DatabaseSetupError> {
    let (maintenance, name) = maintenance_url(url)?;
    let mut options = ConnectOptions::new(maintenance);
    options.max_connections(1).sqlx_logging(false);
    let server = Database::connect(options).await?;
    server
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await?;
    server.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_maintenance_url_keeps_server_and_options() {
        let (url, name) = maintenance_url("postgres://u@h:5432/orders?sslmode=disable").unwrap();
        assert_eq!(url, "postgres://u@h:5432/postgres?sslmode=disable");
        assert_eq!(name, "orders");
    }

    #[test]
    fn a_url_without_sslmode_connects_without_tls() {
        assert_eq!(
            with_ssl_mode("postgres://h/db"),
            "postgres://h/db?sslmode=disable"
        );
        assert_eq!(
            with_ssl_mode("postgres://h/db?application_name=x"),
            "postgres://h/db?application_name=x&sslmode=disable"
        );
        let verified = "postgres://h/db?sslmode=verify-full&sslrootcert=/ca.pem";
        assert_eq!(with_ssl_mode(verified), verified);
    }

    #[test]
    fn a_url_without_database_is_refused() {
        assert!(maintenance_url("postgres://u@h:5432").is_err());
        assert!(maintenance_url("postgres://u@h:5432/").is_err());
    }

    #[test]
    fn odd_database_names_are_refused() {
        assert!(matches!(
            maintenance_url("postgres://h/x\";drop"),
            Err(DatabaseSetupError::BadDatabaseName(_))
        ));
    }
}
