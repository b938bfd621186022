//! PostgreSQL outages as production meets them, made on one test's own database while the server
//! runs, so that tests using them still run in parallel: sessions cut, sessions refused with a
//! FATAL error at start, the role's connection limit reached, statements cancelled by
//! `statement_timeout`. (The server stopped is the chaos tests' business: it stops everyone's.)

use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, TransactionTrait,
};

use super::database_server;

/// A role of the test's own, with `LOGIN` and `CREATEDB`, so a service can connect as a user
/// that is not a superuser (whose connection limit applies). Dropped when the value is: declare it
/// before the service that uses it, so the service and its database go first.
pub struct TestRole {
    pub name: String,
}

impl TestRole {
    pub async fn create(name: &str) -> Self {
        admin()
            .await
            .execute_unprepared(&format!("CREATE ROLE \"{name}\" LOGIN CREATEDB"))
            .await
            .expect("create the test role");
        Self {
            name: name.to_owned(),
        }
    }

    /// Settings for database `database`, connecting as this role.
    pub fn database_settings(
        &self,
        database: &str,
    ) -> service_kit::configuration::DatabaseSettings {
        let server = database_server();
        let (scheme, rest) = server.split_once("://").expect("a URL");
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let mut settings = super::database_settings(database);
        settings.url = service_kit::configuration::Secret::new(format!(
            "{scheme}://{}@{host}/{database}",
            self.name
        ));
        settings
    }
}

impl Drop for TestRole {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let admin = admin().await;
                let _ = admin
                    .execute_unprepared(&format!("DROP ROLE IF EXISTS \"{name}\""))
                    .await;
            });
        })
        .join();
    }
}

/// How the database stops taking work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseOutage {
    /// Every session of the database is ended (`pg_terminate_backend`: SQLSTATE 57P01 on the
    /// statement in flight, a broken socket on the next); new sessions are accepted.
    SessionsTerminated,
    /// `ALLOW_CONNECTIONS false`, then every session ended: the server accepts TCP connections and
    /// refuses each session with FATAL 55000 "... is not currently accepting connections", as a
    /// database being failed over or shut down does.
    ConnectionsRefused,
    /// The role `role` (the service's) gets `CONNECTION LIMIT 0`, then its sessions are ended:
    /// FATAL 53300 "too many connections for role", as a full connection table answers.
    ConnectionLimitZero { role: String },
    /// New sessions get `statement_timeout` and `table` is locked by a transaction that stays
    /// open: every statement on the table is cancelled (SQLSTATE 57014) while the server answers
    /// pings, as a stuck migration or a long lock does.
    StatementTimeout { table: String },
}

/// An outage in progress; [`ActiveOutage::end`] ends it.
pub struct ActiveOutage {
    database: String,
    outage: DatabaseOutage,
    /// The session holding the lock of a statement-timeout outage.
    lock: Option<(DatabaseConnection, DatabaseTransaction)>,
}

/// A superuser session on the server's maintenance database.
async fn admin() -> DatabaseConnection {
    Database::connect(format!("{}/postgres", database_server()))
        .await
        .expect("connect to the maintenance database")
}

async fn terminate(admin: &DatabaseConnection, database: &str, role: Option<&str>) {
    let role_filter = role.map_or(String::new(), |role| format!(" AND usename = '{role}'"));
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{database}' AND pid <> pg_backend_pid(){role_filter}"
        ))
        .await
        .expect("terminate the sessions");
}

impl DatabaseOutage {
    /// Starts the outage on `database` (a name: letters, digits and underscores).
    pub async fn begin(&self, database: &str) -> ActiveOutage {
        assert!(
            database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        );
        let admin = admin().await;
        let mut lock = None;
        match self {
            Self::SessionsTerminated => terminate(&admin, database, None).await,
            Self::ConnectionsRefused => {
                admin
                    .execute_unprepared(&format!(
                        "ALTER DATABASE \"{database}\" WITH ALLOW_CONNECTIONS false"
                    ))
                    .await
                    .expect("refuse connections");
                terminate(&admin, database, None).await;
            }
            Self::ConnectionLimitZero { role } => {
                admin
                    .execute_unprepared(&format!("ALTER ROLE \"{role}\" CONNECTION LIMIT 0"))
                    .await
                    .expect("limit the role");
                terminate(&admin, database, Some(role)).await;
            }
            Self::StatementTimeout { table } => {
                let holder = Database::connect(format!("{}/{database}", database_server()))
                    .await
                    .expect("connect to hold the lock");
                let txn = holder.begin().await.expect("begin");
                txn.execute_unprepared("SET LOCAL statement_timeout = 0")
                    .await
                    .expect("no timeout for the holder");
                txn.execute_unprepared(&format!("LOCK TABLE \"{table}\" IN ACCESS EXCLUSIVE MODE"))
                    .await
                    .expect("lock the table");
                admin
                    .execute_unprepared(&format!(
                        "ALTER DATABASE \"{database}\" SET statement_timeout = '200ms'"
                    ))
                    .await
                    .expect("set statement_timeout");
                // The service's sessions start again, with the timeout; the holder's is kept.
                let holder_pid: i32 = {
                    let row = txn
                        .query_one_raw(sea_orm::Statement::from_string(
                            txn.get_database_backend(),
                            "SELECT pg_backend_pid()",
                        ))
                        .await
                        .expect("pid")
                        .expect("a row");
                    row.try_get_by_index(0).expect("pid")
                };
                admin
                    .execute_unprepared(&format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = '{database}' AND pid <> {holder_pid}"
                    ))
                    .await
                    .expect("terminate the sessions");
                lock = Some((holder, txn));
            }
        }
        ActiveOutage {
            database: database.to_owned(),
            outage: self.clone(),
            lock,
        }
    }
}

impl ActiveOutage {
    /// Ends the outage: the database takes sessions and statements again.
    pub async fn end(self) {
        let admin = admin().await;
        let database = &self.database;
        match &self.outage {
            DatabaseOutage::SessionsTerminated => {}
            DatabaseOutage::ConnectionsRefused => {
                admin
                    .execute_unprepared(&format!(
                        "ALTER DATABASE \"{database}\" WITH ALLOW_CONNECTIONS true"
                    ))
                    .await
                    .expect("allow connections");
            }
            DatabaseOutage::ConnectionLimitZero { role } => {
                admin
                    .execute_unprepared(&format!("ALTER ROLE \"{role}\" CONNECTION LIMIT -1"))
                    .await
                    .expect("lift the limit");
            }
            DatabaseOutage::StatementTimeout { .. } => {
                admin
                    .execute_unprepared(&format!(
                        "ALTER DATABASE \"{database}\" RESET statement_timeout"
                    ))
                    .await
                    .expect("reset statement_timeout");
                if let Some((holder, txn)) = self.lock {
                    txn.rollback().await.expect("release the lock");
                    let _ = holder.close().await;
                }
            }
        }
    }
}
