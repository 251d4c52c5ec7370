//! The Postgres store (sqlx pool).

use std::collections::HashSet;
use std::time::Duration;

use promptkit_core::{
    AppendOutcome, BoxFuture, Conversation, ConversationInfo, ExpectedVersion, ListOptions,
    Message, Page, SortOrder, StateError, StateStore, Summary,
};
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Row};
use std::str::FromStr;

use crate::common::{self, ConversationRow, from_json, from_millis, to_i64, to_json, to_u64};

/// The embedded migrations (`migrations/postgres`), run by [`PostgresStore::connect`].
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Settings of a [`PostgresStore`]. Its `Debug` form hides the password of the URL.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// Connection URL, for example `postgres://user:password@host:5432/database`.
    pub url: String,
    /// Schema holding the tables (created if missing); `None` uses the server's
    /// `search_path` (normally `public`). Letters, digits and `_` only.
    pub schema: Option<String>,
    /// Pool size.
    pub max_connections: u32,
    /// How long to wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// Sliding time-to-live: every read and write of a conversation pushes its expiry this far
    /// out; a conversation idle for longer behaves as missing and is deleted when next touched
    /// or swept. `None` (the default) keeps conversations until deleted.
    pub ttl: Option<Duration>,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &crate::redact_url(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl PostgresConfig {
    /// Default settings for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            ttl: None,
        }
    }

    /// Keeps the tables in `schema`.
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Sets the pool size (at least 1).
    #[must_use]
    pub fn with_max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections.max(1);
        self
    }

    /// Sets how long to wait for a pooled connection.
    #[must_use]
    pub fn with_acquire_timeout(mut self, acquire_timeout: Duration) -> Self {
        self.acquire_timeout = acquire_timeout;
        self
    }

    /// Sets the sliding time-to-live (at least one millisecond; see [`ttl`](Self::ttl)).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl.max(Duration::from_millis(1)));
        self
    }
}

/// A [`StateStore`] in Postgres, safe for many processes sharing one database.
///
/// Same layout as the SQLite store (a conversation row with its version; one row per
/// message holding its JSON text, unique by message id). JSON is stored as text, not JSONB,
/// because JSONB refuses U+0000, which model output and tool results may hold. Writes run in one transaction that first locks the
/// conversation row (`SELECT ... FOR UPDATE`), so concurrent appends and saves from any
/// number of processes serialise per conversation, never globally. Migrations run on
/// connect under sqlx's advisory lock.
///
/// With a [TTL](PostgresConfig::ttl), each conversation row carries an expiry that every
/// read and write pushes out (a read then locks and updates the row). An expired conversation
/// behaves as missing and is deleted when next touched; expired conversations are also
/// swept on connect (in batches) and, at most once a minute per store, a bounded batch of
/// them inside a write transaction (skipping rows other transactions hold).
///
/// Turn leases ([`StateStore::try_lease`]) are rows of a `leases` table taken with one
/// `INSERT ... ON CONFLICT DO UPDATE ... WHERE` statement and timed by the server's clock,
/// so every process on the database agrees on them. They are not advisory locks, which
/// belong to a session and would be lost or leaked with a pooled connection.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    ttl: Option<Duration>,
    sweep: std::sync::Arc<common::SweepClock>,
}

fn db_err(what: &str, e: sqlx::Error) -> StateError {
    match e {
        sqlx::Error::PoolClosed => StateError::Closed,
        other => StateError::backend(format!("postgres: {what}"), other),
    }
}

fn valid_schema(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit())
}

impl PostgresStore {
    /// Connects to `url` with default settings and runs migrations.
    ///
    /// # Errors
    /// [`StateError::Backend`] when the server is unreachable or migrations fail.
    pub async fn connect(url: &str) -> Result<Self, StateError> {
        Self::connect_with(PostgresConfig::new(url)).await
    }

    /// Connects with explicit settings and runs migrations.
    ///
    /// # Errors
    /// [`StateError::Backend`] when the URL or schema is invalid, the server is
    /// unreachable, or migrations fail.
    pub async fn connect_with(config: PostgresConfig) -> Result<Self, StateError> {
        let mut options = PgConnectOptions::from_str(&config.url)
            .map_err(|e| db_err("parsing the connection URL", e))?;
        if let Some(schema) = &config.schema {
            if !valid_schema(schema) {
                return Err(StateError::Backend {
                    message: format!("postgres: invalid schema name {schema:?}"),
                    source: None,
                });
            }
            let mut conn = <PgConnection as sqlx::Connection>::connect_with(&options)
                .await
                .map_err(|e| db_err("connecting", e))?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
            )))
            .execute(&mut conn)
            .await
            .map_err(|e| db_err("creating the schema", e))?;
            sqlx::Connection::close(conn)
                .await
                .map_err(|e| db_err("connecting", e))?;
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| db_err("connecting", e))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StateError::backend("postgres: running migrations", e))?;
        let now = common::now_millis().as_unix_millis();
        for _ in 0..CONNECT_SWEEP_BATCHES {
            let mut conn = pool.acquire().await.map_err(|e| db_err("connecting", e))?;
            let swept = sweep_batch(&mut conn, now)
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
        })
    }

    /// Closes the pool; later calls fail with [`StateError::Closed`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(
        &self,
        what: &'static str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StateError> {
        self.pool.begin().await.map_err(|e| db_err(what, e))
    }

    async fn read(
        &self,
        id: &str,
        recent: Option<usize>,
    ) -> Result<Option<Conversation>, StateError> {
        StateError::validate_id(id)?;
        let now = common::now_millis().as_unix_millis();
        if self.ttl.is_none() {
            // REPEATABLE READ: the conversation row and its messages come from one snapshot.
            let mut tx = self
                .pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(|e| db_err("load", e))?;
            let conversation = load_in(&mut tx, id, recent, now).await?;
            tx.commit().await.map_err(|e| db_err("load", e))?;
            return Ok(conversation);
        }
        // A read slides the expiry: updating the row locks it, and every writer of a
        // conversation's messages locks its row first, so the row and its messages are
        // consistent.
        let mut tx = self.begin("load").await?;
        self.purge(&mut tx, &[id], now, "load").await?;
        self.touch(&mut tx, id, now, "load").await?;
        let conversation = load_in(&mut tx, id, recent, now).await?;
        tx.commit().await.map_err(|e| db_err("load", e))?;
        Ok(conversation)
    }

    /// The expiry of a conversation touched at `now`.
    fn expiry(&self, now: i64) -> Option<i64> {
        common::expiry(now, self.ttl)
    }

    /// Inside a write transaction: deletes `ids` if they have expired (so they behave as
    /// missing from here on) and, when one is due, sweeps expired conversations that no other
    /// transaction holds.
    async fn purge(
        &self,
        conn: &mut PgConnection,
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
        conn: &mut PgConnection,
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

const SELECT_CONVERSATION: &str = "SELECT user_id, version, metadata, summaries, \
     created_at, updated_at FROM conversations WHERE id = $1 \
     AND (expires_at IS NULL OR expires_at > $2)";
const SELECT_MESSAGES: &str =
    "SELECT body FROM messages WHERE conversation_id = $1 ORDER BY position";
const SELECT_RECENT_MESSAGES: &str = "SELECT body FROM (SELECT position, body \
     FROM messages WHERE conversation_id = $1 ORDER BY position DESC LIMIT $2) AS recent \
     ORDER BY position";
const LOCK_CONVERSATION: &str = "SELECT version, created_at, message_count FROM conversations \
     WHERE id = $1 FOR UPDATE";
const CREATE_EMPTY: &str = "INSERT INTO conversations (id, user_id, version, created_at, updated_at, \
     expires_at) VALUES ($1, $2, 0, $3, $3, $4) ON CONFLICT (id) DO NOTHING";
const INSERT_MESSAGES: &str = "INSERT INTO messages (conversation_id, position, message_id, body) \
     SELECT $1, $2 + t.ord - 1, t.message_id, t.body \
     FROM UNNEST($3::text[], $4::text[]) WITH ORDINALITY AS t(message_id, body, ord)";
const BUMP: &str = "UPDATE conversations SET version = version + 1, message_count = $2, \
     updated_at = $3, expires_at = $4 WHERE id = $1 RETURNING version";
/// Deletes one conversation if it has expired (`$2` is now).
const PURGE: &str = "DELETE FROM conversations WHERE id = $1 AND expires_at <= $2";
/// Deletes up to `$2` expired conversations (`$1` is now) that no other transaction has
/// locked, so a sweep is short and never waits for, or deadlocks with, a writer; messages go
/// by cascade.
const SWEEP: &str = "DELETE FROM conversations WHERE id IN (SELECT id FROM conversations \
     WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)";
/// Deletes up to `$1` leases expired by the server's clock, skipping locked ones.
const SWEEP_LEASES: &str = "DELETE FROM leases WHERE id IN (SELECT id FROM leases \
     WHERE expires_at <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)";
/// Takes or renews a lease in one statement, timed by the server's clock: inserted when
/// free, updated when expired or already `$2`'s, untouched (no row returned) when another
/// token holds it. Concurrent callers serialise on the row (or on the unique index for a
/// first insert), and each sees the winner's row before deciding.
const TAKE_LEASE: &str = "INSERT INTO leases (id, token, expires_at) \
     VALUES ($1, $2, now() + $3::float8 * interval '1 millisecond') \
     ON CONFLICT (id) DO UPDATE SET token = EXCLUDED.token, expires_at = EXCLUDED.expires_at \
     WHERE leases.token = EXCLUDED.token OR leases.expires_at <= now() \
     RETURNING 1";
const RELEASE_LEASE: &str = "DELETE FROM leases WHERE id = $1 AND token = $2";
/// Expired conversations (and leases) deleted by one sweep statement.
const SWEEP_BATCH: i64 = 100;
/// Batches a connecting store sweeps at most; the rest go with later writes.
const CONNECT_SWEEP_BATCHES: usize = 100;

/// Sweeps one batch of expired conversations and leases; returns whether either batch was
/// full (more may be left).
async fn sweep_batch(conn: &mut PgConnection, now: i64) -> Result<bool, sqlx::Error> {
    let conversations = sqlx::query(SWEEP)
        .bind(now)
        .bind(SWEEP_BATCH)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let leases = sqlx::query(SWEEP_LEASES)
        .bind(SWEEP_BATCH)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let full = u64::try_from(SWEEP_BATCH).unwrap_or(u64::MAX);
    Ok(conversations >= full || leases >= full)
}
/// Sets the expiry of one conversation.
const TOUCH: &str = "UPDATE conversations SET expires_at = $2 WHERE id = $1";

/// Loads a conversation that has not expired at `now`.
async fn load_in(
    conn: &mut PgConnection,
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

/// Inserts `messages` at positions `position..` in one statement.
async fn insert_messages(
    conn: &mut PgConnection,
    id: &str,
    position: i64,
    messages: &[&Message],
) -> Result<(), StateError> {
    if messages.is_empty() {
        return Ok(());
    }
    let ids: Vec<Option<String>> = messages.iter().map(|m| m.id.clone()).collect();
    let bodies = messages
        .iter()
        .map(|m| to_json(id, m))
        .collect::<Result<Vec<_>, _>>()?;
    sqlx::query(INSERT_MESSAGES)
        .bind(id)
        .bind(position)
        .bind(ids)
        .bind(bodies)
        .execute(&mut *conn)
        .await
        .map_err(|e| db_err("insert messages", e))?;
    Ok(())
}

const LIST_SQL: [&str; 4] = [
    "SELECT id, user_id, message_count, version, created_at, updated_at FROM conversations \
     WHERE ($1::text IS NULL OR user_id = $1) AND (expires_at IS NULL OR expires_at > $4) \
     ORDER BY updated_at DESC, id LIMIT $2 OFFSET $3",
    "SELECT id, user_id, message_count, version, created_at, updated_at FROM conversations \
     WHERE ($1::text IS NULL OR user_id = $1) AND (expires_at IS NULL OR expires_at > $4) \
     ORDER BY updated_at ASC, id LIMIT $2 OFFSET $3",
    "SELECT id, user_id, message_count, version, created_at, updated_at FROM conversations \
     WHERE ($1::text IS NULL OR user_id = $1) AND (expires_at IS NULL OR expires_at > $4) \
     ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
    "SELECT id, user_id, message_count, version, created_at, updated_at FROM conversations \
     WHERE ($1::text IS NULL OR user_id = $1) AND (expires_at IS NULL OR expires_at > $4) \
     ORDER BY created_at ASC, id LIMIT $2 OFFSET $3",
];

fn order_index(order: SortOrder) -> usize {
    match order {
        SortOrder::UpdatedAsc => 1,
        SortOrder::CreatedDesc => 2,
        SortOrder::CreatedAsc => 3,
        _ => 0,
    }
}

impl StateStore for PostgresStore {
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
            let mut tx = self.begin("save").await?;
            let now = common::now_millis().as_unix_millis();
            self.purge(&mut tx, &[id], now, "save").await?;
            let stored: Option<(i64, i64, i64)> = sqlx::query_as(LOCK_CONVERSATION)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| db_err("save", e))?;
            let stored_version = stored.map(|s| to_u64(id, s.0)).transpose()?;
            common::check_expected(id, expected, stored_version)?;
            let count = to_i64(conversation.messages.len());
            let version: i64 = if let Some((version, _, _)) = stored {
                sqlx::query_scalar(
                    "UPDATE conversations SET user_id = $2, version = version + 1, \
                     message_count = $3, metadata = $4, summaries = $5, \
                     updated_at = $6, expires_at = $8 WHERE id = $1 AND version = $7 \
                     RETURNING version",
                )
                .bind(id)
                .bind(conversation.user_id.as_deref())
                .bind(count)
                .bind(&metadata)
                .bind(&summaries)
                .bind(now)
                .bind(version)
                .bind(self.expiry(now))
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| db_err("save", e))?
            } else {
                // Not there when we looked: a concurrent creator may win the insert race.
                let inserted: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO conversations (id, user_id, version, message_count, metadata, \
                     summaries, created_at, updated_at, expires_at) VALUES ($1, $2, 1, $3, \
                     $4, $5, $6, $6, $7) ON CONFLICT (id) DO NOTHING RETURNING version",
                )
                .bind(id)
                .bind(conversation.user_id.as_deref())
                .bind(count)
                .bind(&metadata)
                .bind(&summaries)
                .bind(now)
                .bind(self.expiry(now))
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| db_err("save", e))?;
                if let Some(v) = inserted {
                    v
                } else if expected == ExpectedVersion::Any {
                    // Last writer wins: retry as an update of the row that just appeared.
                    drop(tx);
                    return self.save(conversation, expected).await;
                } else {
                    return Err(StateError::Conflict {
                        id: id.to_owned(),
                        expected,
                        actual: 1,
                    });
                }
            };
            sqlx::query("DELETE FROM messages WHERE conversation_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_err("save", e))?;
            let all: Vec<&Message> = conversation.messages.iter().collect();
            insert_messages(&mut tx, id, 0, &all).await?;
            tx.commit().await.map_err(|e| db_err("save", e))?;
            to_u64(id, version)
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
            let now = common::now_millis().as_unix_millis();
            let mut tx = self.begin("append").await?;
            self.purge(&mut tx, &[id], now, "append").await?;
            let created = sqlx::query(CREATE_EMPTY)
                .bind(id)
                .bind(user_id)
                .bind(now)
                .bind(self.expiry(now))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_err("append", e))?
                .rows_affected()
                == 1;
            let (version, _, count): (i64, i64, i64) = sqlx::query_as(LOCK_CONVERSATION)
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| db_err("append", e))?;
            // On a conflict `tx` is dropped, which rolls back the row just created.
            let stored = (!created).then(|| to_u64(id, version)).transpose()?;
            common::check_expected(id, expected, stored)?;
            let candidate_ids: Vec<String> = messages.iter().filter_map(|m| m.id.clone()).collect();
            let known: HashSet<String> = if candidate_ids.is_empty() {
                HashSet::new()
            } else {
                sqlx::query_scalar(
                    "SELECT message_id FROM messages WHERE conversation_id = $1 \
                     AND message_id = ANY($2)",
                )
                .bind(id)
                .bind(&candidate_ids)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| db_err("append", e))?
                .into_iter()
                .collect()
            };
            let fresh = common::fresh_messages(messages, |mid| known.contains(mid));
            insert_messages(&mut tx, id, count, &fresh).await?;
            let appended = fresh.len();
            let total = count + to_i64(appended);
            let version = if created || appended > 0 {
                sqlx::query_scalar(BUMP)
                    .bind(id)
                    .bind(total)
                    .bind(now)
                    .bind(self.expiry(now))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| db_err("append", e))?
            } else {
                self.touch(&mut tx, id, now, "append").await?;
                version
            };
            tx.commit().await.map_err(|e| db_err("append", e))?;
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
            #[expect(clippy::cast_precision_loss, reason = "a ttl in ms fits f64 exactly")]
            let ttl_ms = common::ttl_millis(ttl) as f64;
            let taken: Option<i32> = sqlx::query_scalar(TAKE_LEASE)
                .bind(id)
                .bind(token)
                .bind(ttl_ms)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| db_err("try_lease", e))?;
            Ok(taken.is_some())
        })
    }

    fn release_lease<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            StateError::validate_lease(id, token)?;
            sqlx::query(RELEASE_LEASE)
                .bind(id)
                .bind(token)
                .execute(&self.pool)
                .await
                .map_err(|e| db_err("release_lease", e))?;
            Ok(())
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
            let mut tx = self.begin("fork").await?;
            let now = common::now_millis().as_unix_millis();
            self.purge(&mut tx, &[source_id, new_id], now, "fork")
                .await?;
            // The source cannot change while it is copied: FOR SHARE, or the row lock of the
            // update that slides its expiry.
            let lock_source = if self.ttl.is_some() {
                sqlx::query("UPDATE conversations SET expires_at = $2 WHERE id = $1 RETURNING 1")
                    .bind(source_id)
                    .bind(self.expiry(now))
            } else {
                sqlx::query("SELECT 1 FROM conversations WHERE id = $1 FOR SHARE").bind(source_id)
            };
            let source = lock_source
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| db_err("fork", e))?;
            if source.is_none() {
                return Err(StateError::NotFound {
                    id: source_id.to_owned(),
                });
            }
            let inserted = sqlx::query(
                "INSERT INTO conversations (id, user_id, version, message_count, metadata, \
                 summaries, created_at, updated_at, expires_at) SELECT $2, user_id, 1, \
                 message_count, metadata, summaries, $3, $3, $4 FROM conversations WHERE id = $1 \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(source_id)
            .bind(new_id)
            .bind(now)
            .bind(self.expiry(now))
            .execute(&mut *tx)
            .await
            .map_err(|e| db_err("fork", e))?;
            if inserted.rows_affected() == 0 {
                return Err(StateError::AlreadyExists {
                    id: new_id.to_owned(),
                });
            }
            sqlx::query(
                "INSERT INTO messages (conversation_id, position, message_id, body) \
                 SELECT $2, position, message_id, body FROM messages WHERE conversation_id = $1",
            )
            .bind(source_id)
            .bind(new_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_err("fork", e))?;
            let copy =
                load_in(&mut tx, new_id, None, now)
                    .await?
                    .ok_or_else(|| StateError::NotFound {
                        id: new_id.to_owned(),
                    })?;
            tx.commit().await.map_err(|e| db_err("fork", e))?;
            Ok(copy)
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            StateError::validate_id(id)?;
            let now = common::now_millis().as_unix_millis();
            let mut tx = self.begin("delete").await?;
            // An expired conversation is already gone: deleting it reports `false`.
            self.purge(&mut tx, &[id], now, "delete").await?;
            let done = sqlx::query("DELETE FROM conversations WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_err("delete", e))?;
            tx.commit().await.map_err(|e| db_err("delete", e))?;
            Ok(done.rows_affected() > 0)
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
            let mut tx = self
                .pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(|e| db_err("list", e))?;
            let total: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM conversations WHERE ($1::text IS NULL OR user_id = $1) \
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
            let now = common::now_millis().as_unix_millis();
            let mut tx = self.begin("merge_metadata").await?;
            // An expired conversation is removed first, so the merge starts a fresh one.
            self.purge(&mut tx, &[id], now, "merge_metadata").await?;
            sqlx::query(CREATE_EMPTY)
                .bind(id)
                .bind(None::<&str>)
                .bind(now)
                .bind(self.expiry(now))
                .execute(&mut *tx)
                .await
                .map_err(|e| db_err("merge_metadata", e))?;
            let stored: String =
                sqlx::query_scalar("SELECT metadata FROM conversations WHERE id = $1 FOR UPDATE")
                    .bind(id)
                    .fetch_one(&mut *tx)
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
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db_err("merge_metadata", e))?;
            tx.commit().await.map_err(|e| db_err("merge_metadata", e))?;
            to_u64(id, version)
        })
    }

    fn add_summary<'a>(
        &'a self,
        id: &'a str,
        summary: &'a Summary,
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(async move {
            StateError::validate_id(id)?;
            let now = common::now_millis().as_unix_millis();
            let mut tx = self.begin("add_summary").await?;
            self.purge(&mut tx, &[id], now, "add_summary").await?;
            let Some(stored): Option<String> =
                sqlx::query_scalar("SELECT summaries FROM conversations WHERE id = $1 FOR UPDATE")
                    .bind(id)
                    .fetch_optional(&mut *tx)
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
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| db_err("add_summary", e))?;
            tx.commit().await.map_err(|e| db_err("add_summary", e))?;
            to_u64(id, version)
        })
    }
}
