//! The SQLite store (sqlx, bundled SQLite).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use promptkit_core::{
    AppendOutcome, BoxFuture, Conversation, ConversationInfo, ExpectedVersion, ListOptions,
    Message, Page, SortOrder, StateError, StateStore, Summary,
};
use serde_json::{Map, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};

use crate::common::{self, ConversationRow, from_json, from_millis, to_i64, to_json, to_u64};

/// The embedded migrations (`migrations/sqlite`), run by [`SqliteStore::open`].
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Settings of a [`SqliteStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// The database file; created (with its parent directory) on first use. `None` keeps
    /// the database in memory for the life of the store.
    pub path: Option<PathBuf>,
    /// Connections in the pool (readers run in parallel; writers are serialised).
    pub max_connections: u32,
    /// How long a writer waits for another process's write lock (SQLite's busy handler).
    /// A write still refused as busy after that is retried a few times with a growing pause
    /// (about a second in all) before it fails.
    pub busy_timeout: Duration,
    /// `synchronous=FULL` instead of `NORMAL`: with WAL, `NORMAL` survives a process crash
    /// but may lose the last commits on power loss; `FULL` survives both, slower.
    pub durable: bool,
    /// Sliding time-to-live: every read and write of a conversation pushes its expiry this far
    /// out; a conversation idle for longer behaves as missing and is deleted when next touched
    /// or swept. `None` (the default) keeps conversations until deleted.
    pub ttl: Option<Duration>,
}

impl SqliteConfig {
    /// A file database at `path`.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            path: Some(path.into()),
            max_connections: 4,
            busy_timeout: Duration::from_secs(5),
            durable: false,
            ttl: None,
        }
    }

    /// A private in-memory database (one connection).
    pub fn in_memory() -> Self {
        Self {
            path: None,
            max_connections: 1,
            busy_timeout: Duration::from_secs(5),
            durable: false,
            ttl: None,
        }
    }

    /// Sets `synchronous=FULL` (see [`durable`](Self::durable)).
    #[must_use]
    pub fn with_durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Sets the pool size (at least 1).
    #[must_use]
    pub fn with_max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections.max(1);
        self
    }

    /// Sets the sliding time-to-live (at least one millisecond; see [`ttl`](Self::ttl)).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl.max(Duration::from_millis(1)));
        self
    }

    /// Sets how long a writer waits for another process's write lock (see
    /// [`busy_timeout`](Self::busy_timeout)).
    #[must_use]
    pub fn with_busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self
    }
}

/// A [`StateStore`] in an SQLite database: the embedded default.
///
/// The file is created on first use, opened in WAL mode, and migrated automatically. Each
/// conversation is a row with its version, metadata and summaries; each message a row with
/// its JSON form, position and id (unique per conversation, which makes appends
/// idempotent). Every write runs in one `BEGIN IMMEDIATE` transaction, so it is atomic and
/// writers from several processes serialise on SQLite's lock.
///
/// With a [TTL](SqliteConfig::ttl), each conversation row carries an expiry that every read
/// and write pushes out (reads then run as write transactions). An expired conversation
/// behaves as missing and is deleted when next touched; expired conversations are also swept
/// on open (in short batches) and, at most once a minute, a bounded batch of them inside a
/// write transaction.
///
/// Several processes may share one file: writers wait for each other on SQLite's lock
/// ([`busy_timeout`](SqliteConfig::busy_timeout), then a few bounded retries), migrations run
/// under the write lock so two processes opening a new file at once do not both apply them,
/// and turn leases ([`StateStore::try_lease`]) are rows of a `leases` table, shared by every
/// process on the file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    ttl: Option<Duration>,
    sweep: std::sync::Arc<common::SweepClock>,
    /// Serialises this process's writers so they queue here instead of spinning on
    /// SQLite's busy handler.
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// A write transaction; dropped without [`commit`](Self::commit) it rolls back.
struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    what: &'static str,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTx {
    async fn commit(self) -> Result<(), StateError> {
        self.tx.commit().await.map_err(|e| db_err(self.what, e))
    }
}

fn db_err(what: &str, e: sqlx::Error) -> StateError {
    match e {
        sqlx::Error::PoolClosed => StateError::Closed,
        other => StateError::backend(format!("sqlite: {what}"), other),
    }
}

/// Whether SQLite refused for a lock another connection holds (`SQLITE_BUSY`,
/// `SQLITE_LOCKED` and their extended codes), which a later attempt may not meet.
fn is_busy(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    db.code()
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// Pauses before the retries of a busy operation: SQLite's own busy handler has already
/// waited `busy_timeout` in each attempt, so these only bridge the cases it does not cover
/// (a lock met while a database is being created, migrated or recovered).
const BUSY_RETRY_PAUSES_MS: [u64; 5] = [20, 50, 100, 250, 500];

/// Runs `attempt` until it succeeds, fails with something other than a busy error, or the
/// retries of [`BUSY_RETRY_PAUSES_MS`] are spent.
async fn retry_busy<T, F, Fut>(mut attempt: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    for pause in BUSY_RETRY_PAUSES_MS {
        match attempt().await {
            Err(e) if is_busy(&e) => tokio::time::sleep(Duration::from_millis(pause)).await,
            done => return done,
        }
    }
    attempt().await
}

/// Expired conversations deleted by one sweep statement, so a sweep inside a write
/// transaction stays short however many have expired.
const SWEEP_BATCH: i64 = 100;

/// Batches an opening store sweeps at most (each its own short transaction); the rest go
/// with later writes.
const OPEN_SWEEP_BATCHES: usize = 100;

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` with default settings.
    ///
    /// # Errors
    /// [`StateError::Backend`] when the file cannot be opened or migrated.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StateError> {
        Self::open_with(SqliteConfig::file(path.as_ref())).await
    }

    /// A private in-memory database, for tests.
    ///
    /// # Errors
    /// [`StateError::Backend`] when migrations fail.
    pub async fn in_memory() -> Result<Self, StateError> {
        Self::open_with(SqliteConfig::in_memory()).await
    }

    /// Opens a database with explicit settings.
    ///
    /// # Errors
    /// [`StateError::Backend`] when the file cannot be created, opened or migrated.
    pub async fn open_with(config: SqliteConfig) -> Result<Self, StateError> {
        let base = match &config.path {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StateError::backend(format!("sqlite: creating {}", dir.display()), e)
                    })?;
                }
                SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
            }
            None => SqliteConnectOptions::from_str("sqlite::memory:")
                .map_err(|e| db_err("in-memory options", e))?,
        };
        let options = base
            .foreign_keys(true)
            .busy_timeout(config.busy_timeout)
            .synchronous(if config.durable {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            });
        let mut pool_options =
            SqlitePoolOptions::new().max_connections(config.max_connections.max(1));
        if config.path.is_none() {
            // An in-memory database lives as long as its one connection: keep it open.
            pool_options = pool_options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = retry_busy(|| pool_options.clone().connect_with(options.clone()))
            .await
            .map_err(|e| db_err("opening the database", e))?;
        migrate(&pool).await?;
        let now = common::now_millis().as_unix_millis();
        for _ in 0..OPEN_SWEEP_BATCHES {
            let swept = retry_busy(|| async {
                let mut conn = pool.acquire().await?;
                sweep_batch(&mut conn, now).await
            })
            .await
            .map_err(|e| db_err("sweeping expired conversations", e))?;
            if !swept {
                break;
            }
        }
        let sweep = std::sync::Arc::new(common::SweepClock::default());
        sweep.mark(now);
        Ok(Self {
            pool,
            ttl: config.ttl,
            sweep,
            write_lock: std::sync::Arc::default(),
        })
    }

    /// Closes the pool; later calls fail with [`StateError::Closed`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE`) after this process's earlier writers.
    /// Other processes' writers are waited for here, on SQLite's write lock: once `BEGIN
    /// IMMEDIATE` succeeds, no statement of the transaction can meet a busy database, so a
    /// busy error is retried here and nowhere else.
    async fn begin_write(&self, what: &'static str) -> Result<WriteTx, StateError> {
        let guard = std::sync::Arc::clone(&self.write_lock).lock_owned().await;
        let tx = retry_busy(|| self.pool.begin_with("BEGIN IMMEDIATE"))
            .await
            .map_err(|e| db_err(what, e))?;
        Ok(WriteTx {
            tx,
            what,
            _guard: guard,
        })
    }

    async fn read(
        &self,
        id: &str,
        recent: Option<usize>,
    ) -> Result<Option<Conversation>, StateError> {
        StateError::validate_id(id)?;
        let now = common::now_millis().as_unix_millis();
        if self.ttl.is_none() {
            let mut tx = retry_busy(|| self.pool.begin())
                .await
                .map_err(|e| db_err("load", e))?;
            let conversation = load_in(&mut tx, id, recent, now).await?;
            tx.commit().await.map_err(|e| db_err("load", e))?;
            return Ok(conversation);
        }
        // A read slides the expiry, so it writes.
        let mut w = self.begin_write("load").await?;
        let conn: &mut SqliteConnection = &mut w.tx;
        self.purge(conn, &[id], now, "load").await?;
        self.touch(conn, id, now, "load").await?;
        let conversation = load_in(conn, id, recent, now).await?;
        w.commit().await?;
        Ok(conversation)
    }

    /// The expiry of a conversation touched at `now`.
    fn expiry(&self, now: i64) -> Option<i64> {
        common::expiry(now, self.ttl)
    }

    /// Inside a write transaction: deletes `ids` if they have expired (so they behave as
    /// missing from here on) and, when one is due, sweeps every expired conversation.
    async fn purge(
        &self,
        conn: &mut SqliteConnection,
        ids: &[&str],
        now: i64,
        what: &'static str,
    ) -> Result<(), StateError> {
        if self.sweep.due(now)
            && sweep_batch(&mut *conn, now)
                .await
                .map_err(|e| db_err(what, e))?
        {
            // A full batch: more may have expired, so the next write sweeps again.
            self.sweep.rearm();
        }
        for id in ids {
            sqlx::query(PURGE)
                .bind(*id)
                .bind(now)
                .execute(&mut *conn)
                .await
                .map_err(|e| db_err(what, e))?;
        }
        Ok(())
    }

    /// Inside a write transaction: pushes the expiry of `id` out (a no-op when missing).
    async fn touch(
        &self,
        conn: &mut SqliteConnection,
        id: &str,
        now: i64,
        what: &'static str,
    ) -> Result<(), StateError> {
        sqlx::query(TOUCH)
            .bind(id)
            .bind(self.expiry(now))
            .execute(&mut *conn)
            .await
            .map_err(|e| db_err(what, e))?;
        Ok(())
    }
}

const SELECT_CONVERSATION: &str = "SELECT user_id, version, metadata, summaries, created_at, updated_at \
     FROM conversations WHERE id = $1 AND (expires_at IS NULL OR expires_at > $2)";
const SELECT_MESSAGES: &str =
    "SELECT body FROM messages WHERE conversation_id = $1 ORDER BY position";
const SELECT_RECENT_MESSAGES: &str = "SELECT body FROM (SELECT position, body FROM messages \
     WHERE conversation_id = $1 ORDER BY position DESC LIMIT $2) ORDER BY position";
const SELECT_VERSION: &str =
    "SELECT version, created_at, message_count FROM conversations WHERE id = $1";
const CREATE_EMPTY: &str = "INSERT INTO conversations (id, user_id, version, created_at, updated_at, \
     expires_at) VALUES ($1, $2, 0, $3, $3, $4) ON CONFLICT (id) DO NOTHING";
const INSERT_MESSAGE: &str = "INSERT INTO messages (conversation_id, position, message_id, body) \
     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
const BUMP: &str = "UPDATE conversations SET version = version + 1, message_count = $2, \
     updated_at = $3, expires_at = $4 WHERE id = $1 RETURNING version";
/// Deletes one conversation if it has expired (`$2` is now).
const PURGE: &str = "DELETE FROM conversations WHERE id = $1 AND expires_at <= $2";
/// Deletes up to `$2` expired conversations (`$1` is now); messages go by cascade.
const SWEEP: &str = "DELETE FROM conversations WHERE id IN \
     (SELECT id FROM conversations WHERE expires_at <= $1 LIMIT $2)";
/// Deletes up to `$2` expired leases (`$1` is now).
const SWEEP_LEASES: &str = "DELETE FROM leases WHERE id IN \
     (SELECT id FROM leases WHERE expires_at <= $1 LIMIT $2)";
/// Takes or renews a lease in one statement: inserted when free, updated when expired or
/// already `$2`'s, untouched (no row changed) when another token holds it.
const TAKE_LEASE: &str = "INSERT INTO leases (id, token, expires_at) VALUES ($1, $2, $3 + $4) \
     ON CONFLICT (id) DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at \
     WHERE leases.token = excluded.token OR leases.expires_at <= $3";
const RELEASE_LEASE: &str = "DELETE FROM leases WHERE id = $1 AND token = $2";

/// Sweeps one batch of expired conversations and leases; returns whether either batch was
/// full (more may be left).
async fn sweep_batch(conn: &mut SqliteConnection, now: i64) -> Result<bool, sqlx::Error> {
    let conversations = sqlx::query(SWEEP)
        .bind(now)
        .bind(SWEEP_BATCH)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let leases = sqlx::query(SWEEP_LEASES)
        .bind(now)
        .bind(SWEEP_BATCH)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let full = u64::try_from(SWEEP_BATCH).unwrap_or(u64::MAX);
    Ok(conversations >= full || leases >= full)
}

/// Runs the migrations inside one `BEGIN IMMEDIATE` transaction (each migration is a
/// savepoint in it), so processes opening one new file at once apply them one after the
/// other instead of racing (sqlx takes no lock on SQLite).
async fn migrate(pool: &SqlitePool) -> Result<(), StateError> {
    let failed = |e| StateError::backend("sqlite: running migrations", e);
    let mut tx = retry_busy(|| pool.begin_with("BEGIN IMMEDIATE"))
        .await
        .map_err(|e| db_err("running migrations", e))?;
    MIGRATOR.run(&mut *tx).await.map_err(failed)?;
    tx.commit()
        .await
        .map_err(|e| db_err("running migrations", e))
}
/// Sets the expiry of one conversation.
const TOUCH: &str = "UPDATE conversations SET expires_at = $2 WHERE id = $1";

/// Loads a conversation that has not expired at `now`.
async fn load_in(
    conn: &mut SqliteConnection,
    id: &str,
    recent: Option<usize>,
    now: i64,
) -> Result<Option<Conversation>, StateError> {
    let Some(row) = sqlx::query(SELECT_CONVERSATION)
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| db_err("load", e))?
    else {
        return Ok(None);
    };
    let stored = ConversationRow {
        user_id: row.get(0),
        version: row.get(1),
        metadata: row.get(2),
        summaries: row.get(3),
        created_at: row.get(4),
        updated_at: row.get(5),
    };
    let bodies: Vec<String> = match recent {
        None => {
            sqlx::query_scalar(SELECT_MESSAGES)
                .bind(id)
                .fetch_all(&mut *conn)
                .await
        }
        Some(n) => {
            sqlx::query_scalar(SELECT_RECENT_MESSAGES)
                .bind(id)
                .bind(to_i64(n))
                .fetch_all(&mut *conn)
                .await
        }
    }
    .map_err(|e| db_err("load messages", e))?;
    stored.into_conversation(id, &bodies).map(Some)
}

/// Inserts `messages` from `position` on, skipping ids already stored; returns how many
/// were inserted.
async fn insert_messages(
    conn: &mut SqliteConnection,
    id: &str,
    mut position: i64,
    messages: &[&Message],
) -> Result<usize, StateError> {
    let mut inserted = 0;
    for m in messages {
        let done = sqlx::query(INSERT_MESSAGE)
            .bind(id)
            .bind(position)
            .bind(m.id.as_deref())
            .bind(to_json(id, m)?)
            .execute(&mut *conn)
            .await
            .map_err(|e| db_err("insert message", e))?;
        if done.rows_affected() == 1 {
            position += 1;
            inserted += 1;
        }
    }
    Ok(inserted)
}

const LIST_SQL: [&str; 4] = [
    "SELECT id, user_id, message_count, version, created_at, updated_at FROM conversations \
     WHERE ($1 IS NULL OR user_id = $1) AND (expires_at IS NULL OR expires_at > $4) ORDER BY updated_at DESC, id LIMIT $2 OFFSET $3",
    "SELECT id, user_id, message_count, version, created_at, updated_at FROM conversations \
     WHERE ($1 IS NULL OR user_id = $1) AND (expires_at IS NULL OR expires_at > $4) ORDER BY updated_at ASC, id LIMIT $2 OFFSET $3",
    "SELECT id, user_id, message_count, version, created_at, updated_at FROM conversations \
     WHERE ($1 IS NULL OR user_id = $1) AND (expires_at IS NULL OR expires_at > $4) ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
    "SELECT id, user_id, message_count, version, created_at, updated_at FROM conversations \
     WHERE ($1 IS NULL OR user_id = $1) AND (expires_at IS NULL OR expires_at > $4) ORDER BY created_at ASC, id LIMIT $2 OFFSET $3",
];

fn order_index(order: SortOrder) -> usize {
    match order {
        SortOrder::UpdatedAsc => 1,
        SortOrder::CreatedDesc => 2,
        SortOrder::CreatedAsc => 3,
        // `SortOrder` is non-exhaustive in spirit: unknown orders fall back to the default.
        _ => 0,
    }
}

impl StateStore for SqliteStore {
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Conversation>, StateError>> {
        Box::pin(self.read(id, None))
    }

    fn load_recent<'a>(
        &'a self,
        id: &'a str,
        n: usize,
    ) -> BoxFuture<'a, Result<Option<Conversation>, StateError>> {
        Box::pin(self.read(id, Some(n)))
    }

    fn save<'a>(
        &'a self,
        conversation: &'a Conversation,
        expected: ExpectedVersion,
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(async move {
            let id = conversation.id.as_str();
            common::validate_conversation(conversation)?;
            let metadata = to_json(id, &conversation.metadata)?;
            let summaries = to_json(id, &conversation.summaries)?;
            {
                let mut w = self.begin_write("save").await?;
                let conn: &mut SqliteConnection = &mut w.tx;
                let value = async {
                    let now = common::now_millis().as_unix_millis();
                    self.purge(conn, &[id], now, "save").await?;
                    let stored: Option<(i64, i64, i64)> = sqlx::query_as(SELECT_VERSION)
                        .bind(id)
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(|e| db_err("save", e))?;
                    let stored_version = stored.map(|s| to_u64(id, s.0)).transpose()?;
                    common::check_expected(id, expected, stored_version)?;
                    let created_at = stored.map_or(now, |s| s.1);
                    let version = stored.map_or(0, |s| s.0) + 1;
                    sqlx::query(
                        "INSERT INTO conversations (id, user_id, version, message_count, metadata, \
                         summaries, created_at, updated_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, \
                         version = excluded.version, message_count = excluded.message_count, \
                         metadata = excluded.metadata, summaries = excluded.summaries, \
                         updated_at = excluded.updated_at, expires_at = excluded.expires_at",
                    )
                    .bind(id)
                    .bind(conversation.user_id.as_deref())
                    .bind(version)
                    .bind(to_i64(conversation.messages.len()))
                    .bind(metadata)
                    .bind(summaries)
                    .bind(created_at)
                    .bind(now)
                    .bind(self.expiry(now))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| db_err("save", e))?;
                    sqlx::query("DELETE FROM messages WHERE conversation_id = $1")
                        .bind(id)
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| db_err("save", e))?;
                    let all: Vec<&Message> = conversation.messages.iter().collect();
                    insert_messages(conn, id, 0, &all).await?;
                    to_u64(id, version)
                }
                .await?;
                w.commit().await?;
                Ok(value)
            }
        })
    }

    fn append<'a>(
        &'a self,
        id: &'a str,
        user_id: Option<&'a str>,
        messages: &'a [Message],
    ) -> BoxFuture<'a, Result<AppendOutcome, StateError>> {
        self.append_if(id, user_id, messages, ExpectedVersion::Any)
    }

    fn append_if<'a>(
        &'a self,
        id: &'a str,
        user_id: Option<&'a str>,
        messages: &'a [Message],
        expected: ExpectedVersion,
    ) -> BoxFuture<'a, Result<AppendOutcome, StateError>> {
        Box::pin(async move {
            common::validate_append(id, user_id, messages)?;
            // Ids repeated within the batch are dropped here; ids already stored are
            // skipped by the unique index.
            let batch = common::fresh_messages(messages, |_| false);
            let mut w = self.begin_write("append").await?;
            let conn: &mut SqliteConnection = &mut w.tx;
            let now = common::now_millis().as_unix_millis();
            self.purge(conn, &[id], now, "append").await?;
            let created = sqlx::query(CREATE_EMPTY)
                .bind(id)
                .bind(user_id)
                .bind(now)
                .bind(self.expiry(now))
                .execute(&mut *conn)
                .await
                .map_err(|e| db_err("append", e))?
                .rows_affected()
                == 1;
            let (version, _, count): (i64, i64, i64) = sqlx::query_as(SELECT_VERSION)
                .bind(id)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| db_err("append", e))?;
            // On a conflict `w` is dropped, which rolls back the row just created.
            let stored = (!created).then(|| to_u64(id, version)).transpose()?;
            common::check_expected(id, expected, stored)?;
            let appended = insert_messages(conn, id, count, &batch).await?;
            let total = count + to_i64(appended);
            let version = if created || appended > 0 {
                sqlx::query_scalar(BUMP)
                    .bind(id)
                    .bind(total)
                    .bind(now)
                    .bind(self.expiry(now))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| db_err("append", e))?
            } else {
                self.touch(conn, id, now, "append").await?;
                version
            };
            w.commit().await?;
            Ok(AppendOutcome {
                appended,
                total: usize::try_from(total).unwrap_or(usize::MAX),
                version: to_u64(id, version)?,
            })
        })
    }

    fn try_lease<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            StateError::validate_lease(id, token)?;
            let ttl_ms = i64::try_from(common::ttl_millis(ttl)).unwrap_or(i64::MAX);
            let mut w = self.begin_write("try_lease").await?;
            // Processes sharing a file share a host, so the local clock is the same for all.
            let now = common::now_millis().as_unix_millis();
            let taken = sqlx::query(TAKE_LEASE)
                .bind(id)
                .bind(token)
                .bind(now)
                .bind(ttl_ms)
                .execute(&mut *w.tx)
                .await
                .map_err(|e| db_err("try_lease", e))?
                .rows_affected()
                == 1;
            w.commit().await?;
            Ok(taken)
        })
    }

    fn release_lease<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            StateError::validate_lease(id, token)?;
            let mut w = self.begin_write("release_lease").await?;
            sqlx::query(RELEASE_LEASE)
                .bind(id)
                .bind(token)
                .execute(&mut *w.tx)
                .await
                .map_err(|e| db_err("release_lease", e))?;
            w.commit().await
        })
    }

    fn fork<'a>(
        &'a self,
        source_id: &'a str,
        new_id: &'a str,
    ) -> BoxFuture<'a, Result<Conversation, StateError>> {
        Box::pin(async move {
            StateError::validate_id(source_id)?;
            StateError::validate_id(new_id)?;
            {
                let mut w = self.begin_write("fork").await?;
                let conn: &mut SqliteConnection = &mut w.tx;
                let value = async {
                    let now = common::now_millis().as_unix_millis();
                    self.purge(conn, &[source_id, new_id], now, "fork").await?;
                    let exists = |id: &'a str| sqlx::query("SELECT 1 FROM conversations WHERE id = $1").bind(id);
                    if exists(source_id).fetch_optional(&mut *conn).await.map_err(|e| db_err("fork", e))?.is_none() {
                        return Err(StateError::NotFound { id: source_id.to_owned() });
                    }
                    if exists(new_id).fetch_optional(&mut *conn).await.map_err(|e| db_err("fork", e))?.is_some() {
                        return Err(StateError::AlreadyExists { id: new_id.to_owned() });
                    }
                    if self.ttl.is_some() {
                        // Reading the source slides its expiry.
                        self.touch(conn, source_id, now, "fork").await?;
                    }
                    sqlx::query(
                        "INSERT INTO conversations (id, user_id, version, message_count, metadata, \
                         summaries, created_at, updated_at, expires_at) SELECT $2, user_id, 1, \
                         message_count, metadata, summaries, $3, $3, $4 FROM conversations \
                         WHERE id = $1",
                    )
                    .bind(source_id)
                    .bind(new_id)
                    .bind(now)
                    .bind(self.expiry(now))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| db_err("fork", e))?;
                    sqlx::query(
                        "INSERT INTO messages (conversation_id, position, message_id, body) \
                         SELECT $2, position, message_id, body FROM messages WHERE conversation_id = $1",
                    )
                    .bind(source_id)
                    .bind(new_id)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| db_err("fork", e))?;
                    load_in(conn, new_id, None, now).await?.ok_or_else(|| StateError::NotFound {
                        id: new_id.to_owned(),
                    })
                }.await?;
                w.commit().await?;
                Ok(value)
            }
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            StateError::validate_id(id)?;
            {
                let mut w = self.begin_write("delete").await?;
                let conn: &mut SqliteConnection = &mut w.tx;
                let value = async {
                    let now = common::now_millis().as_unix_millis();
                    // An expired conversation is already gone: deleting it reports `false`.
                    self.purge(conn, &[id], now, "delete").await?;
                    let done = sqlx::query("DELETE FROM conversations WHERE id = $1")
                        .bind(id)
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| db_err("delete", e))?;
                    Ok(done.rows_affected() > 0)
                }
                .await?;
                w.commit().await?;
                Ok(value)
            }
        })
    }

    fn list<'a>(
        &'a self,
        options: &'a ListOptions,
    ) -> BoxFuture<'a, Result<Page<ConversationInfo>, StateError>> {
        Box::pin(async move {
            if common::impossible_owner(options) {
                return Ok(common::empty_page());
            }
            let user = options.user_id.as_deref();
            let now = common::now_millis().as_unix_millis();
            let mut tx = retry_busy(|| self.pool.begin())
                .await
                .map_err(|e| db_err("list", e))?;
            let total: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM conversations WHERE ($1 IS NULL OR user_id = $1) \
                 AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(user)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db_err("list", e))?;
            let rows = sqlx::query(LIST_SQL[order_index(options.order)])
                .bind(user)
                .bind(to_i64(common::page_size(options.limit)))
                .bind(to_i64(options.offset))
                .bind(now)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| db_err("list", e))?;
            tx.commit().await.map_err(|e| db_err("list", e))?;
            let items = rows
                .iter()
                .map(|row| {
                    let id: String = row.get(0);
                    Ok(ConversationInfo {
                        user_id: row.get(1),
                        message_count: to_u64(&id, row.get(2))?,
                        version: to_u64(&id, row.get(3))?,
                        created_at: Some(from_millis(&id, row.get(4))?),
                        updated_at: Some(from_millis(&id, row.get(5))?),
                        id,
                    })
                })
                .collect::<Result<Vec<_>, StateError>>()?;
            Ok(Page {
                items,
                total: u64::try_from(total).unwrap_or(0),
            })
        })
    }

    fn merge_metadata<'a>(
        &'a self,
        id: &'a str,
        entries: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(async move {
            StateError::validate_id(id)?;
            {
                let mut w = self.begin_write("merge_metadata").await?;
                let conn: &mut SqliteConnection = &mut w.tx;
                let value = async {
                    let now = common::now_millis().as_unix_millis();
                    self.purge(conn, &[id], now, "merge_metadata").await?;
                    sqlx::query(CREATE_EMPTY)
                        .bind(id)
                        .bind(None::<&str>)
                        .bind(now)
                        .bind(self.expiry(now))
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| db_err("merge_metadata", e))?;
                    let stored: String =
                        sqlx::query_scalar("SELECT metadata FROM conversations WHERE id = $1")
                            .bind(id)
                            .fetch_one(&mut *conn)
                            .await
                            .map_err(|e| db_err("merge_metadata", e))?;
                    let mut metadata: Map<String, Value> = from_json(id, &stored)?;
                    common::merge_metadata(&mut metadata, entries);
                    let version: i64 = sqlx::query_scalar(
                        "UPDATE conversations SET metadata = $2, version = version + 1, \
                         updated_at = $3, expires_at = $4 WHERE id = $1 RETURNING version",
                    )
                    .bind(id)
                    .bind(to_json(id, &metadata)?)
                    .bind(now)
                    .bind(self.expiry(now))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| db_err("merge_metadata", e))?;
                    to_u64(id, version)
                }
                .await?;
                w.commit().await?;
                Ok(value)
            }
        })
    }

    fn add_summary<'a>(
        &'a self,
        id: &'a str,
        summary: &'a Summary,
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(async move {
            StateError::validate_id(id)?;
            {
                let mut w = self.begin_write("add_summary").await?;
                let conn: &mut SqliteConnection = &mut w.tx;
                let value = async {
                    let now = common::now_millis().as_unix_millis();
                    self.purge(conn, &[id], now, "add_summary").await?;
                    let Some(stored): Option<String> =
                        sqlx::query_scalar("SELECT summaries FROM conversations WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&mut *conn)
                            .await
                            .map_err(|e| db_err("add_summary", e))?
                    else {
                        return Err(StateError::NotFound { id: id.to_owned() });
                    };
                    let mut summaries: Vec<Summary> = from_json(id, &stored)?;
                    summaries.push(summary.clone());
                    let version: i64 = sqlx::query_scalar(
                        "UPDATE conversations SET summaries = $2, version = version + 1, \
                         updated_at = $3, expires_at = $4 WHERE id = $1 RETURNING version",
                    )
                    .bind(id)
                    .bind(to_json(id, &summaries)?)
                    .bind(now)
                    .bind(self.expiry(now))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| db_err("add_summary", e))?;
                    to_u64(id, version)
                }
                .await?;
                w.commit().await?;
                Ok(value)
            }
        })
    }
}
