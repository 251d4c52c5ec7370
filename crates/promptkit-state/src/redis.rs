//! The Redis store (`redis` crate, connection manager, Lua scripts).

use std::time::Duration;

use promptkit_core::{
    AppendOutcome, BoxFuture, Conversation, ConversationInfo, ExpectedVersion, ListOptions,
    Message, Page, SortOrder, StateError, StateStore, Summary,
};
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::{Map, Value};

use crate::common::{self, from_json, from_millis, to_json, to_u64};

/// Settings of a [`RedisStore`]. Its `Debug` form hides the password of the URL.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Connection URL, for example `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Prefix of every key this store writes (namespaces stores sharing one server).
    pub key_prefix: String,
    /// Sliding time-to-live: every read and write of a conversation pushes its expiry this
    /// far out. `None` keeps conversations until deleted.
    pub ttl: Option<Duration>,
    /// How long one connection attempt may take (default 5 s).
    pub connect_timeout: Duration,
    /// How long to wait for a reply (default 5 s): a call still unanswered then fails with
    /// [`StateError::Timeout`] (its effect is then unknown: it may still run; appends are
    /// idempotent, so retrying one is safe). `None` waits forever.
    pub response_timeout: Option<Duration>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &crate::redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("ttl", &self.ttl)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

/// The default [`RedisConfig::response_timeout`].
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

impl RedisConfig {
    /// Default settings for `url`: prefix `promptkit:`, no TTL, 5 s to connect and 5 s for
    /// each reply.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: "promptkit:".to_owned(),
            ttl: None,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Some(DEFAULT_RESPONSE_TIMEOUT),
        }
    }

    /// Sets how long to wait for each reply (see
    /// [`response_timeout`](Self::response_timeout)); `None` waits forever.
    #[must_use]
    pub fn with_response_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets how long one connection attempt may take.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the key prefix.
    #[must_use]
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Sets the sliding time-to-live (at least one millisecond).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl.max(Duration::from_millis(1)));
        self
    }
}

/// A [`StateStore`] in Redis.
///
/// A conversation is five keys under the prefix: a hash (owner, version, timestamps), a
/// list of message JSON, a set of message ids, a hash of metadata entries (one JSON value
/// per key) and a list of summary JSON; sorted sets index conversations by update and
/// creation time, overall and per user. Every operation is one Lua script, which Redis runs
/// atomically, so concurrent appends from any number of processes serialise and versioned
/// saves cannot interleave. A TTL, when set, slides on every read and write.
///
/// With a TTL the indexes expire too: every touch of a conversation also pushes out the
/// expiry of the index keys it is in (so an index key outlives its last live member and
/// vanishes with it), and records the conversation's expiry, by the server's clock, in one
/// more sorted set, from which every write removes a bounded batch of expired entries and a
/// listing removes all of them (in bounded batches) before reading a page. Listing reads one
/// page with `ZRANGE`, never the whole index. Stores sharing a key prefix must share their
/// TTL setting.
///
/// Turn leases ([`StateStore::try_lease`]) are keys taken with `SET NX PX` and renewed or
/// released by Lua compare-and-set scripts; Redis times them, so processes need not agree on
/// the time. Every call has a response timeout (5 s by default).
///
/// Scripts compute key names from the prefix, so a Redis Cluster is not supported; a single
/// server or a Sentinel-managed primary is.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    ttl_ms: u64,
    response_timeout: Option<Duration>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

fn redis_err(what: &str, e: redis::RedisError) -> StateError {
    StateError::backend(format!("redis: {what}"), e)
}

/// Expired index entries one cleanup script removes at most before a listing.
const CLEANUP_BATCH: usize = 500;

fn to_usize(n: i64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// `+value` for `Some`, `-` for `None` (Lua cannot tell a missing argument from an empty one).
fn opt_arg(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("+{v}"))
}

fn opt_from(value: &str) -> Option<String> {
    value.strip_prefix('+').map(str::to_owned)
}

/// Definitions shared by every script. `ARGV[1]` prefix, `ARGV[2]` id, `ARGV[3]` now (ms,
/// the client's clock, for the stored timestamps), `ARGV[4]` TTL (ms, 0 for none).
///
/// With a TTL, `x:exp` scores each conversation by its expiry on the server's clock
/// (`TIME`) and `x:own` maps it to its owner, so that the cleanup knows which per-owner
/// indexes to leave once the conversation's hash is gone, and a conversation re-created
/// under another owner leaves the old owner's indexes.
const PRELUDE: &str = r"
local p = ARGV[1]
local id = ARGV[2]
local now = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local exp_key = p .. 'x:exp'
-- Expired index entries every script removes on its way: each adds at most one, so the
-- backlog shrinks under any load.
local per_call = 64
local own_key = p .. 'x:own'
local function keys_of(cid)
  return p .. 'c:' .. cid, p .. 'm:' .. cid, p .. 'i:' .. cid, p .. 'd:' .. cid, p .. 's:' .. cid
end
local conv, msgs, mids, meta, sums = keys_of(id)
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function scopes(user)
  local s = {'*'}
  if user then table.insert(s, 'u:' .. user) end
  return s
end
local function leave_scope(cid, scope)
  redis.call('ZREM', p .. 'x:upd:' .. scope, cid)
  redis.call('ZREM', p .. 'x:crt:' .. scope, cid)
end
local function leave_indexes(cid, user)
  for _, scope in ipairs(scopes(user)) do leave_scope(cid, scope) end
  redis.call('ZREM', exp_key, cid)
  redis.call('HDEL', own_key, cid)
end
local function expire(cid)
  if ttl > 0 then
    local a, b, c, d, e = keys_of(cid)
    for _, k in ipairs({a, b, c, d, e}) do redis.call('PEXPIRE', k, ttl) end
    local user = redis.call('HGET', a, 'user_id')
    local old = redis.call('HGET', own_key, cid)
    if old and old ~= user then leave_scope(cid, 'u:' .. old) end
    if user then redis.call('HSET', own_key, cid, user) else redis.call('HDEL', own_key, cid) end
    redis.call('ZADD', exp_key, server_ms() + ttl, cid)
    for _, k in ipairs({exp_key, own_key}) do redis.call('PEXPIRE', k, ttl) end
    for _, scope in ipairs(scopes(user)) do
      redis.call('PEXPIRE', p .. 'x:upd:' .. scope, ttl)
      redis.call('PEXPIRE', p .. 'x:crt:' .. scope, ttl)
    end
  end
end
local function index(cid)
  local c = p .. 'c:' .. cid
  local user = redis.call('HGET', c, 'user_id')
  local created = redis.call('HGET', c, 'created_at')
  local updated = redis.call('HGET', c, 'updated_at')
  for _, scope in ipairs(scopes(user)) do
    redis.call('ZADD', p .. 'x:upd:' .. scope, updated, cid)
    redis.call('ZADD', p .. 'x:crt:' .. scope, created, cid)
  end
end
local function unindex(cid)
  leave_indexes(cid, redis.call('HGET', p .. 'c:' .. cid, 'user_id'))
end
-- Removes up to `limit` expired conversations from the indexes; returns how many entries
-- it looked at.
local function cleanup(limit)
  local dead = redis.call('ZRANGEBYSCORE', exp_key, '-inf', server_ms(), 'LIMIT', 0, limit)
  for _, cid in ipairs(dead) do
    local left = redis.call('PTTL', p .. 'c:' .. cid)
    if left == -2 then
      leave_indexes(cid, redis.call('HGET', own_key, cid))
    elseif left > 0 then
      redis.call('ZADD', exp_key, server_ms() + left, cid)
    else
      redis.call('ZREM', exp_key, cid)
      redis.call('HDEL', own_key, cid)
    end
  end
  return #dead
end
local function create(user)
  redis.call('HSET', conv, 'version', 0, 'created_at', now, 'updated_at', now)
  if user then redis.call('HSET', conv, 'user_id', user) end
end
local function opt(v)
  if string.sub(v, 1, 1) == '+' then return string.sub(v, 2) end
  return nil
end
";

/// Returns `false` when missing, else `{user, version, created, updated, summaries,
/// metadata (flat pairs), messages}`. `ARGV[5]` is the number of recent messages or -1.
const LOAD: &str = r"
cleanup(per_call)
if redis.call('EXISTS', conv) == 0 then return false end
local h = redis.call('HMGET', conv, 'user_id', 'version', 'created_at', 'updated_at')
local n = tonumber(ARGV[5])
local m = {}
if n < 0 then m = redis.call('LRANGE', msgs, 0, -1)
elseif n > 0 then m = redis.call('LRANGE', msgs, -n, -1) end
expire(id)
local user = '-'
if h[1] then user = '+' .. h[1] end
return {user, h[2], h[3], h[4], redis.call('LRANGE', sums, 0, -1), redis.call('HGETALL', meta), m}
";

/// `ARGV[5]` owner (`+user` or `-`), `ARGV[6]` expected kind (`any`, `new`, `exact`),
/// `ARGV[7]` expected version, then pairs of (`+id` or `-`, message JSON). Returns `{1, appended, total, version}`, or `{0, 0, 0, stored}` on a
/// version conflict (nothing written).
const APPEND: &str = r"
cleanup(per_call)
local exists = redis.call('EXISTS', conv) == 1
local stored = 0
if exists then stored = tonumber(redis.call('HGET', conv, 'version')) end
local kind = ARGV[6]
local want = tonumber(ARGV[7])
local ok = kind == 'any'
  or (not exists and (kind == 'new' or want == 0))
  or (exists and kind == 'exact' and want == stored)
if not ok then return {0, 0, 0, stored} end
if not exists then
  create(opt(ARGV[5]))
  redis.call('DEL', msgs, mids, meta, sums)
end
local appended = 0
for i = 8, #ARGV, 2 do
  local mid = opt(ARGV[i])
  local fresh = true
  if mid then fresh = redis.call('SADD', mids, mid) == 1 end
  if fresh then
    redis.call('RPUSH', msgs, ARGV[i + 1])
    appended = appended + 1
  end
end
local version = stored
if not exists or appended > 0 then
  version = redis.call('HINCRBY', conv, 'version', 1)
  redis.call('HSET', conv, 'updated_at', now)
  index(id)
end
expire(id)
return {1, appended, redis.call('LLEN', msgs), version}
";

/// `ARGV[5]` expected kind (`any`, `new`, `exact`), `ARGV[6]` expected version, `ARGV[7]`
/// owner, `ARGV[8]` summaries count N, then N summary JSON, then metadata count M and M
/// (key, JSON) pairs, then (`+id` or `-`, message JSON) pairs. Returns `{ok, version}`:
/// `{0, stored}` on a conflict.
const SAVE: &str = r"
cleanup(per_call)
local exists = redis.call('EXISTS', conv) == 1
local stored = 0
if exists then stored = tonumber(redis.call('HGET', conv, 'version')) end
local kind = ARGV[5]
local want = tonumber(ARGV[6])
local ok = kind == 'any'
  or (not exists and (kind == 'new' or want == 0))
  or (exists and kind == 'exact' and want == stored)
if not ok then return {0, stored} end
local created = now
if exists then
  created = redis.call('HGET', conv, 'created_at')
  unindex(id)
end
redis.call('DEL', conv, msgs, mids, meta, sums)
redis.call('HSET', conv, 'version', stored + 1, 'created_at', created, 'updated_at', now)
local user = opt(ARGV[7])
if user then redis.call('HSET', conv, 'user_id', user) end
local i = 8
local ns = tonumber(ARGV[i]); i = i + 1
for _ = 1, ns do redis.call('RPUSH', sums, ARGV[i]); i = i + 1 end
local nm = tonumber(ARGV[i]); i = i + 1
for _ = 1, nm do redis.call('HSET', meta, ARGV[i], ARGV[i + 1]); i = i + 2 end
while i < #ARGV do
  local mid = opt(ARGV[i])
  if mid then redis.call('SADD', mids, mid) end
  redis.call('RPUSH', msgs, ARGV[i + 1])
  i = i + 2
end
index(id)
expire(id)
return {1, stored + 1}
";

/// `ARGV[5]` the new id. Returns 1, or -1 when the source is missing, -2 when the target
/// exists.
const FORK: &str = r"
cleanup(per_call)
if redis.call('EXISTS', conv) == 0 then return -1 end
local new = ARGV[5]
local c2, m2, i2, d2, s2 = keys_of(new)
if redis.call('EXISTS', c2) == 1 then return -2 end
redis.call('DEL', m2, i2, d2, s2)
redis.call('COPY', conv, c2)
redis.call('COPY', msgs, m2)
redis.call('COPY', mids, i2)
redis.call('COPY', meta, d2)
redis.call('COPY', sums, s2)
redis.call('HSET', c2, 'version', 1, 'created_at', now, 'updated_at', now)
index(new)
expire(id)
expire(new)
return 1
";

/// Returns 1 when the conversation existed.
const DELETE: &str = r"
cleanup(per_call)
if redis.call('EXISTS', conv) == 0 then
  redis.call('DEL', msgs, mids, meta, sums)
  return 0
end
unindex(id)
redis.call('DEL', conv, msgs, mids, meta, sums)
return 1
";

/// `ARGV[5]` key count K, then K keys to set with their JSON values, then keys to remove.
/// Returns the new version.
const MERGE_METADATA: &str = r"
cleanup(per_call)
if redis.call('EXISTS', conv) == 0 then
  create(nil)
  redis.call('DEL', msgs, mids, meta, sums)
end
local k = tonumber(ARGV[5])
local i = 6
for _ = 1, k do redis.call('HSET', meta, ARGV[i], ARGV[i + 1]); i = i + 2 end
while i <= #ARGV do redis.call('HDEL', meta, ARGV[i]); i = i + 1 end
local version = redis.call('HINCRBY', conv, 'version', 1)
redis.call('HSET', conv, 'updated_at', now)
index(id)
expire(id)
return version
";

/// `ARGV[5]` the summary JSON. Returns the new version or -1 when missing.
const ADD_SUMMARY: &str = r"
cleanup(per_call)
if redis.call('EXISTS', conv) == 0 then return -1 end
redis.call('RPUSH', sums, ARGV[5])
local version = redis.call('HINCRBY', conv, 'version', 1)
redis.call('HSET', conv, 'updated_at', now)
index(id)
expire(id)
return version
";

/// `ARGV[5]` the most entries to clean up. Returns how many it looked at (fewer than asked:
/// nothing expired is left).
const CLEANUP: &str = r"
return cleanup(tonumber(ARGV[5]))
";

/// `ARGV[2]` scope (`*` or `u:<user>`), `ARGV[5]` order (`upd`/`crt`), `ARGV[6]` `1` for
/// descending, `ARGV[7]` offset, `ARGV[8]` limit. Returns `{total, rows}` where a row is
/// `{id, user, version, created, updated, message count}`. Reads one page of the index
/// (`ZRANGE` by rank), never all of it; the caller has cleaned expired entries first.
const LIST: &str = r"
local key = p .. 'x:' .. ARGV[5] .. ':' .. id
local total = redis.call('ZCARD', key)
local offset = tonumber(ARGV[7])
local last = offset + tonumber(ARGV[8]) - 1
local page
if ARGV[6] == '1' then page = redis.call('ZREVRANGE', key, offset, last)
else page = redis.call('ZRANGE', key, offset, last) end
local out = {}
for _, cid in ipairs(page) do
  local c, m = keys_of(cid)
  local h = redis.call('HMGET', c, 'user_id', 'version', 'created_at', 'updated_at')
  if h[2] then
    local user = '-'
    if h[1] then user = '+' .. h[1] end
    table.insert(out, {cid, user, h[2], h[3], h[4], redis.call('LLEN', m)})
  else
    -- Expired since the cleanup, or left by a store without a TTL on this prefix.
    redis.call('ZREM', key, cid)
    total = total - 1
  end
end
return {total, out}
";

/// Takes or renews a lease. `KEYS[1]` the lease key, `ARGV[1]` token, `ARGV[2]` ttl (ms).
/// Returns 1 when the token holds the lease.
const TAKE_LEASE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Releases a lease held by `ARGV[1]`. `KEYS[1]` the lease key.
const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
";

#[derive(Debug)]
struct Scripts {
    load: Script,
    append: Script,
    save: Script,
    fork: Script,
    delete: Script,
    merge_metadata: Script,
    add_summary: Script,
    cleanup: Script,
    list: Script,
    take_lease: Script,
    release_lease: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let s = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            load: s(LOAD),
            append: s(APPEND),
            save: s(SAVE),
            fork: s(FORK),
            delete: s(DELETE),
            merge_metadata: s(MERGE_METADATA),
            add_summary: s(ADD_SUMMARY),
            cleanup: s(CLEANUP),
            list: s(LIST),
            take_lease: Script::new(TAKE_LEASE),
            release_lease: Script::new(RELEASE_LEASE),
        }
    })
}

type LoadReply = Option<(
    String,
    i64,
    i64,
    i64,
    Vec<String>,
    Vec<(String, String)>,
    Vec<String>,
)>;

type ListReply = (i64, Vec<(String, String, i64, i64, i64, i64)>);

impl RedisStore {
    /// Connects with default settings.
    ///
    /// # Errors
    /// [`StateError::Backend`] when the URL is invalid or the server unreachable.
    pub async fn connect(url: &str) -> Result<Self, StateError> {
        Self::connect_with(RedisConfig::new(url)).await
    }

    /// Connects with explicit settings. The connection manager reconnects by itself.
    ///
    /// # Errors
    /// [`StateError::Backend`] when the URL is invalid or the server unreachable.
    pub async fn connect_with(config: RedisConfig) -> Result<Self, StateError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| redis_err("parsing the URL", e))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(config.response_timeout);
        let conn = ConnectionManager::new_with_config(client, manager)
            .await
            .map_err(|e| redis_err("connecting", e))?;
        Ok(Self {
            conn,
            prefix: config.key_prefix,
            ttl_ms: config.ttl.map_or(0, common::ttl_millis),
            response_timeout: config.response_timeout,
        })
    }

    /// A Redis error of operation `what`, typed [`StateError::Timeout`] when the reply did
    /// not come within the response timeout.
    fn err(&self, what: &str, e: redis::RedisError) -> StateError {
        match self.response_timeout {
            Some(timeout) if e.is_timeout() => StateError::Timeout(timeout),
            _ => redis_err(what, e),
        }
    }

    /// Removes every expired entry from the indexes, one bounded script at a time (so Redis
    /// serves other clients between them), before a listing counts and pages.
    async fn cleanup_indexes(&self) -> Result<(), StateError> {
        loop {
            let mut invocation = self.invoke(&scripts().cleanup, "");
            invocation.arg(CLEANUP_BATCH);
            let seen: usize = invocation
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| self.err("list", e))?;
            if seen < CLEANUP_BATCH {
                return Ok(());
            }
        }
    }

    /// The key of the lease on `id`.
    fn lease_key(&self, id: &str) -> String {
        format!("{}l:{id}", self.prefix)
    }

    /// Starts an invocation of `script` with the shared arguments.
    fn invoke<'s>(&self, script: &'s Script, id: &str) -> redis::ScriptInvocation<'s> {
        let mut invocation = script.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(id)
            .arg(common::now_millis().as_unix_millis())
            .arg(self.ttl_ms);
        invocation
    }

    async fn read(
        &self,
        id: &str,
        recent: Option<usize>,
    ) -> Result<Option<Conversation>, StateError> {
        StateError::validate_id(id)?;
        let n = recent.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let mut invocation = self.invoke(&scripts().load, id);
        invocation.arg(n);
        let reply: LoadReply = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.err("load", e))?;
        let Some((user, version, created, updated, summaries, metadata, messages)) = reply else {
            return Ok(None);
        };
        Ok(Some(Conversation {
            id: id.to_owned(),
            user_id: opt_from(&user),
            messages: messages
                .iter()
                .map(|m| from_json(id, m))
                .collect::<Result<_, _>>()?,
            summaries: summaries
                .iter()
                .map(|s| from_json(id, s))
                .collect::<Result<_, _>>()?,
            metadata: metadata
                .into_iter()
                .map(|(k, v)| Ok((k, from_json::<Value>(id, &v)?)))
                .collect::<Result<_, StateError>>()?,
            version: to_u64(id, version)?,
            created_at: Some(from_millis(id, created)?),
            updated_at: Some(from_millis(id, updated)?),
        }))
    }
}

/// The script arguments of an expected version: kind and number.
fn expected_args(expected: ExpectedVersion) -> (&'static str, u64) {
    match expected {
        ExpectedVersion::Any => ("any", 0),
        ExpectedVersion::New => ("new", 0),
        ExpectedVersion::Exact(v) => ("exact", v),
    }
}

fn push_messages<'m>(
    invocation: &mut redis::ScriptInvocation<'_>,
    id: &str,
    messages: impl IntoIterator<Item = &'m Message>,
) -> Result<(), StateError> {
    for m in messages {
        invocation
            .arg(opt_arg(m.id.as_deref()))
            .arg(to_json(id, m)?);
    }
    Ok(())
}

impl StateStore for RedisStore {
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
            let (kind, want) = expected_args(expected);
            let mut invocation = self.invoke(&scripts().save, id);
            invocation
                .arg(kind)
                .arg(want)
                .arg(opt_arg(conversation.user_id.as_deref()))
                .arg(conversation.summaries.len());
            for s in &conversation.summaries {
                invocation.arg(to_json(id, s)?);
            }
            invocation.arg(conversation.metadata.len());
            for (k, v) in &conversation.metadata {
                invocation.arg(k).arg(to_json(id, v)?);
            }
            push_messages(&mut invocation, id, &conversation.messages)?;
            let (ok, version): (i64, i64) = invocation
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| self.err("save", e))?;
            if ok == 1 {
                to_u64(id, version)
            } else {
                Err(StateError::Conflict {
                    id: id.to_owned(),
                    expected,
                    actual: to_u64(id, version)?,
                })
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
            let (kind, want) = expected_args(expected);
            let mut invocation = self.invoke(&scripts().append, id);
            invocation.arg(opt_arg(user_id)).arg(kind).arg(want);
            push_messages(&mut invocation, id, messages)?;
            let (ok, appended, total, version): (i64, i64, i64, i64) = invocation
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| self.err("append", e))?;
            if ok != 1 {
                return Err(StateError::Conflict {
                    id: id.to_owned(),
                    expected,
                    actual: to_u64(id, version)?,
                });
            }
            Ok(AppendOutcome {
                appended: to_usize(appended),
                total: to_usize(total),
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
            let ttl_ms = common::ttl_millis(ttl);
            let taken: i64 = scripts()
                .take_lease
                .key(self.lease_key(id))
                .arg(token)
                .arg(ttl_ms)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| self.err("try_lease", e))?;
            Ok(taken == 1)
        })
    }

    fn release_lease<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            StateError::validate_lease(id, token)?;
            let _: i64 = scripts()
                .release_lease
                .key(self.lease_key(id))
                .arg(token)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| self.err("release_lease", e))?;
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
            let mut invocation = self.invoke(&scripts().fork, source_id);
            invocation.arg(new_id);
            let outcome: i64 = invocation
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| self.err("fork", e))?;
            match outcome {
                -1 => Err(StateError::NotFound {
                    id: source_id.to_owned(),
                }),
                -2 => Err(StateError::AlreadyExists {
                    id: new_id.to_owned(),
                }),
                _ => self
                    .read(new_id, None)
                    .await?
                    .ok_or_else(|| StateError::NotFound {
                        id: new_id.to_owned(),
                    }),
            }
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            StateError::validate_id(id)?;
            let existed: i64 = self
                .invoke(&scripts().delete, id)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| self.err("delete", e))?;
            Ok(existed == 1)
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
            self.cleanup_indexes().await?;
            let scope = options
                .user_id
                .as_deref()
                .map_or_else(|| "*".to_owned(), |u| format!("u:{u}"));
            let (index, descending) = match options.order {
                SortOrder::UpdatedAsc => ("upd", "0"),
                SortOrder::CreatedDesc => ("crt", "1"),
                SortOrder::CreatedAsc => ("crt", "0"),
                _ => ("upd", "1"),
            };
            let mut invocation = self.invoke(&scripts().list, &scope);
            invocation
                .arg(index)
                .arg(descending)
                .arg(options.offset)
                .arg(common::page_size(options.limit));
            let (total, rows): ListReply = invocation
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| self.err("list", e))?;
            let items = rows
                .into_iter()
                .map(|(id, user, version, created, updated, count)| {
                    Ok(ConversationInfo {
                        user_id: opt_from(&user),
                        message_count: to_u64(&id, count)?,
                        version: to_u64(&id, version)?,
                        created_at: Some(from_millis(&id, created)?),
                        updated_at: Some(from_millis(&id, updated)?),
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
            let mut invocation = self.invoke(&scripts().merge_metadata, id);
            let set: Vec<(&String, &Value)> =
                entries.iter().filter(|(_, v)| !v.is_null()).collect();
            invocation.arg(set.len());
            for (k, v) in set {
                invocation.arg(k).arg(to_json(id, v)?);
            }
            for (k, _) in entries.iter().filter(|(_, v)| v.is_null()) {
                invocation.arg(k);
            }
            let version: i64 = invocation
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| self.err("merge_metadata", e))?;
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
            let mut invocation = self.invoke(&scripts().add_summary, id);
            invocation.arg(to_json(id, summary)?);
            let version: i64 = invocation
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| self.err("add_summary", e))?;
            if version < 0 {
                Err(StateError::NotFound { id: id.to_owned() })
            } else {
                to_u64(id, version)
            }
        })
    }
}
