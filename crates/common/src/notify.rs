//! PostgreSQL LISTEN: one channel's notifications, waking a process when another replica
//! commits. Both services' followers use it; sqlx underneath sea-orm does the protocol.
//!
//! Notifications are a hint, never the only path: they are lost while the connection is down
//! and between a commit and a reconnect, so every user also polls.

use std::time::Duration;

use sea_orm::{
    DatabaseConnection, DbBackend,
    sqlx::postgres::{PgListener, PgPool},
};
use tokio::time::Instant;

/// Wait between attempts to (re)establish a lost LISTEN connection.
const RETRY: Duration = Duration::from_secs(2);

/// The notifications on one channel, over a dedicated connection taken from the pool, which
/// is re-established (every [`RETRY`]) whenever it is lost.
pub struct Notifications {
    pool: PgPool,
    channel: String,
    listener: Option<PgListener>,
    /// When the next connection attempt may be made.
    retry_at: Instant,
}

impl std::fmt::Debug for Notifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifications")
            .field("channel", &self.channel)
            .field("connected", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}

impl Notifications {
    /// Listens on `channel` of `db`'s database; `None` on SQLite, which has no LISTEN (one
    /// process owns the file, so it sees its own commits). Connects on the first [`recv`].
    ///
    /// [`recv`]: Self::recv
    pub fn new(db: &DatabaseConnection, channel: impl Into<String>) -> Option<Self> {
        (db.get_database_backend() == DbBackend::Postgres).then(|| Self {
            pool: db.get_postgres_connection_pool().clone(),
            channel: channel.into(),
            listener: None,
            retry_at: Instant::now(),
        })
    }

    /// The next notification's payload. Never fails: a lost or refused connection is logged
    /// and retried until one is back. Cancel-safe, so it can sit in a `select!` with a poll.
    pub async fn recv(&mut self) -> String {
        loop {
            let listener = match &mut self.listener {
                Some(listener) => listener,
                None => {
                    tokio::time::sleep_until(self.retry_at).await;
                    self.retry_at = Instant::now() + RETRY;
                    match self.connect().await {
                        Ok(listener) => self.listener.insert(listener),
                        Err(err) => {
                            tracing::warn!(channel = %self.channel, error = %err, "cannot listen for notifications; retrying");
                            continue;
                        }
                    }
                }
            };
            match listener.recv().await {
                Ok(notification) => return notification.payload().to_owned(),
                Err(err) => {
                    tracing::warn!(channel = %self.channel, error = %err, "notification listener lost its connection; reconnecting");
                    self.listener = None;
                }
            }
        }
    }

    async fn connect(&self) -> Result<PgListener, sea_orm::sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(&self.channel).await?;
        Ok(listener)
    }
}
