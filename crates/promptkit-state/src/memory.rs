//! The in-process store.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use promptkit_core::{
    AppendOutcome, BoxFuture, Conversation, ConversationInfo, ExpectedVersion, ListOptions,
    Message, Page, SortOrder, StateError, StateStore, Summary,
};
use serde_json::{Map, Value};

use crate::common;

/// Settings of a [`MemoryStore`]. The default keeps at most
/// [`DEFAULT_MAX_ENTRIES`](Self::DEFAULT_MAX_ENTRIES) conversations, without TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// Sliding time-to-live: a conversation not read or written for this long is dropped.
    /// `None` keeps conversations until deleted or evicted.
    pub ttl: Option<Duration>,
    /// Maximum number of conversations; storing one more evicts the least recently used.
    /// `None` is unbounded: memory then grows with every new session id, which a server
    /// taking ids from clients must not allow.
    pub max_entries: Option<usize>,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            ttl: None,
            max_entries: Some(Self::DEFAULT_MAX_ENTRIES),
        }
    }
}

impl MemoryConfig {
    /// The default bound on the number of conversations.
    pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

    /// No bound on the number of conversations and no TTL: for tests and short-lived
    /// processes that control every id they use.
    pub fn unbounded() -> Self {
        Self {
            ttl: None,
            max_entries: None,
        }
    }

    /// Sets the sliding time-to-live.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the maximum number of conversations (at least 1).
    #[must_use]
    pub fn with_max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = Some(max_entries.max(1));
        self
    }
}

#[derive(Debug)]
struct Entry {
    conversation: Conversation,
    message_ids: HashSet<String>,
    last_access: Instant,
    /// Key of this entry in `Inner::recency`.
    tick: u64,
}

#[derive(Debug)]
struct Lease {
    token: String,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Least recently used first: access tick -> conversation id.
    recency: BTreeMap<u64, String>,
    next_tick: u64,
    /// Turn leases by conversation id; expired ones are dropped when the map has doubled
    /// since the last sweep, so it stays proportional to the leases in use.
    leases: HashMap<String, Lease>,
    lease_sweep_at: usize,
}

/// An in-process [`StateStore`]: fast, lost on exit. Optional sliding TTL; LRU eviction
/// beyond a bound on the number of conversations (10 000 by default).
///
/// Every operation holds one lock for its whole duration, so each is atomic. Turn leases
/// ([`StateStore::try_lease`]) live in the same lock, so they are exclusive within this
/// process only: several processes need a shared store (SQLite, Postgres, Redis).
#[derive(Debug, Default)]
pub struct MemoryStore {
    config: MemoryConfig,
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// A store of at most [`MemoryConfig::DEFAULT_MAX_ENTRIES`] conversations (the least
    /// recently used is evicted beyond it), without TTL.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store with the given settings.
    pub fn with_config(config: MemoryConfig) -> Self {
        Self {
            config,
            inner: Mutex::default(),
        }
    }

    /// Number of live conversations (expired ones are purged first).
    pub fn len(&self) -> usize {
        let mut inner = self.lock();
        self.purge_expired(&mut inner, Instant::now());
        inner.entries.len()
    }

    /// Whether the store holds no live conversation.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave an entry half-written in a way that
        // breaks invariants we rely on, so poisoning is ignored.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn expired(&self, entry: &Entry, now: Instant) -> bool {
        self.config
            .ttl
            .is_some_and(|ttl| now.saturating_duration_since(entry.last_access) >= ttl)
    }

    fn purge_expired(&self, inner: &mut Inner, now: Instant) {
        if self.config.ttl.is_none() {
            return;
        }
        // Every touch gives its entry the next tick and the current instant under the lock,
        // so the recency order is also the order of last access: the expired entries are a
        // prefix of it, and a sweep costs what it removes, not the size of the store.
        while let Some((_, id)) = inner.recency.first_key_value() {
            if inner.entries.get(id).is_some_and(|e| !self.expired(e, now)) {
                break;
            }
            let id = id.clone();
            if inner.remove(&id).is_none() {
                inner.recency.pop_first();
            }
        }
    }

    /// The live entry for `id`, touched (TTL refreshed, most recently used); expired ones are
    /// removed.
    fn live<'i>(&self, inner: &'i mut Inner, id: &str) -> Option<&'i mut Entry> {
        let now = Instant::now();
        if inner.entries.get(id).is_some_and(|e| self.expired(e, now)) {
            inner.remove(id);
            return None;
        }
        let tick = inner.bump();
        let entry = inner.entries.get_mut(id)?;
        let old = std::mem::replace(&mut entry.tick, tick);
        entry.last_access = now;
        inner.recency.remove(&old);
        inner.recency.insert(tick, id.to_owned());
        inner.entries.get_mut(id)
    }

    /// Inserts a new entry, evicting the least recently used ones beyond `max_entries`.
    fn insert(&self, inner: &mut Inner, conversation: Conversation) {
        let now = Instant::now();
        self.purge_expired(inner, now);
        if let Some(max) = self.config.max_entries {
            while inner.entries.len() >= max {
                let Some((_, victim)) = inner.recency.pop_first() else {
                    break;
                };
                inner.entries.remove(&victim);
            }
        }
        let tick = inner.bump();
        let id = conversation.id.clone();
        let message_ids = ids_of(&conversation.messages);
        inner.recency.insert(tick, id.clone());
        inner.entries.insert(
            id,
            Entry {
                conversation,
                message_ids,
                last_access: now,
                tick,
            },
        );
    }

    /// The live entry for `id`, created (empty, owned by `user_id`) when missing.
    fn live_or_create<'i>(
        &self,
        inner: &'i mut Inner,
        id: &str,
        user_id: Option<&str>,
    ) -> &'i mut Entry {
        if self.live(inner, id).is_none() {
            let now = common::now_millis();
            let mut conversation = Conversation::new(id);
            conversation.user_id = user_id.map(str::to_owned);
            conversation.created_at = Some(now);
            conversation.updated_at = Some(now);
            self.insert(inner, conversation);
        }
        // Just found or inserted under the same lock.
        inner
            .entries
            .get_mut(id)
            .unwrap_or_else(|| unreachable!("entry `{id}` was just inserted"))
    }
}

impl Inner {
    fn sweep_leases(&mut self, now: Instant) {
        if self.leases.len() >= self.lease_sweep_at {
            self.leases.retain(|_, lease| lease.expires > now);
            self.lease_sweep_at = (self.leases.len() * 2).max(64);
        }
    }

    fn bump(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }

    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        self.recency.remove(&entry.tick);
        Some(entry)
    }
}

fn ids_of(messages: &[Message]) -> HashSet<String> {
    messages.iter().filter_map(|m| m.id.clone()).collect()
}

fn touch_write(conversation: &mut Conversation) -> u64 {
    conversation.version += 1;
    conversation.updated_at = Some(common::now_millis());
    conversation.version
}

fn info_of(c: &Conversation) -> ConversationInfo {
    ConversationInfo {
        id: c.id.clone(),
        user_id: c.user_id.clone(),
        message_count: c.messages.len() as u64,
        version: c.version,
        created_at: c.created_at,
        updated_at: c.updated_at,
    }
}

impl StateStore for MemoryStore {
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Conversation>, StateError>> {
        Box::pin(async move {
            StateError::validate_id(id)?;
            let mut inner = self.lock();
            Ok(self.live(&mut inner, id).map(|e| e.conversation.clone()))
        })
    }

    fn load_recent<'a>(
        &'a self,
        id: &'a str,
        n: usize,
    ) -> BoxFuture<'a, Result<Option<Conversation>, StateError>> {
        Box::pin(async move {
            StateError::validate_id(id)?;
            let mut inner = self.lock();
            Ok(self.live(&mut inner, id).map(|e| {
                let c = &e.conversation;
                let skip = c.messages.len().saturating_sub(n);
                Conversation {
                    id: c.id.clone(),
                    user_id: c.user_id.clone(),
                    messages: c.messages[skip..].to_vec(),
                    summaries: c.summaries.clone(),
                    metadata: c.metadata.clone(),
                    version: c.version,
                    created_at: c.created_at,
                    updated_at: c.updated_at,
                }
            }))
        })
    }

    fn save<'a>(
        &'a self,
        conversation: &'a Conversation,
        expected: ExpectedVersion,
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(async move {
            let id = conversation.id.as_str();
            common::validate_conversation(conversation)?;
            let mut inner = self.lock();
            let (stored_version, created_at) = match self.live(&mut inner, id) {
                Some(e) => (Some(e.conversation.version), e.conversation.created_at),
                None => (None, None),
            };
            common::check_expected(id, expected, stored_version)?;
            let now = common::now_millis();
            let mut next = conversation.clone();
            next.version = stored_version.unwrap_or(0) + 1;
            next.created_at = created_at.or(Some(now));
            next.updated_at = Some(now);
            let version = next.version;
            if let Some(entry) = inner.entries.get_mut(id) {
                entry.message_ids = ids_of(&next.messages);
                entry.conversation = next;
            } else {
                self.insert(&mut inner, next);
            }
            Ok(version)
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
            let mut inner = self.lock();
            let stored = self.live(&mut inner, id).map(|e| e.conversation.version);
            common::check_expected(id, expected, stored)?;
            let entry = self.live_or_create(&mut inner, id, user_id);
            let fresh = common::fresh_messages(messages, |mid| entry.message_ids.contains(mid));
            let appended = fresh.len();
            for m in fresh {
                if let Some(mid) = &m.id {
                    entry.message_ids.insert(mid.clone());
                }
                entry.conversation.messages.push(m.clone());
            }
            if stored.is_none() || appended > 0 {
                touch_write(&mut entry.conversation);
            }
            Ok(AppendOutcome {
                appended,
                total: entry.conversation.messages.len(),
                version: entry.conversation.version,
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
            let now = Instant::now();
            let expires = now + common::clamp_ttl(ttl);
            let mut inner = self.lock();
            inner.sweep_leases(now);
            match inner.leases.get_mut(id) {
                Some(lease) if lease.token != token && lease.expires > now => Ok(false),
                Some(lease) => {
                    token.clone_into(&mut lease.token);
                    lease.expires = expires;
                    Ok(true)
                }
                None => {
                    let token = token.to_owned();
                    inner.leases.insert(id.to_owned(), Lease { token, expires });
                    Ok(true)
                }
            }
        })
    }

    fn release_lease<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            StateError::validate_lease(id, token)?;
            let mut inner = self.lock();
            if inner.leases.get(id).is_some_and(|l| l.token == token) {
                inner.leases.remove(id);
            }
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
            let mut inner = self.lock();
            let Some(source) = self.live(&mut inner, source_id) else {
                return Err(StateError::NotFound {
                    id: source_id.to_owned(),
                });
            };
            let mut copy = source.conversation.clone();
            if self.live(&mut inner, new_id).is_some() {
                return Err(StateError::AlreadyExists {
                    id: new_id.to_owned(),
                });
            }
            let now = common::now_millis();
            new_id.clone_into(&mut copy.id);
            copy.version = 1;
            copy.created_at = Some(now);
            copy.updated_at = Some(now);
            self.insert(&mut inner, copy.clone());
            Ok(copy)
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StateError>> {
        Box::pin(async move {
            StateError::validate_id(id)?;
            let mut inner = self.lock();
            let live = self.live(&mut inner, id).is_some();
            inner.remove(id);
            Ok(live)
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
            let mut inner = self.lock();
            self.purge_expired(&mut inner, Instant::now());
            let mut rows: Vec<ConversationInfo> = inner
                .entries
                .values()
                .filter(|e| {
                    options
                        .user_id
                        .as_deref()
                        .is_none_or(|u| e.conversation.user_id.as_deref() == Some(u))
                })
                .map(|e| info_of(&e.conversation))
                .collect();
            drop(inner);
            sort_infos(&mut rows, options.order);
            let total = rows.len() as u64;
            let items = rows
                .into_iter()
                .skip(options.offset)
                .take(common::page_size(options.limit))
                .collect();
            Ok(Page { items, total })
        })
    }

    fn merge_metadata<'a>(
        &'a self,
        id: &'a str,
        entries: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(async move {
            StateError::validate_id(id)?;
            let mut inner = self.lock();
            let entry = self.live_or_create(&mut inner, id, None);
            common::merge_metadata(&mut entry.conversation.metadata, entries);
            Ok(touch_write(&mut entry.conversation))
        })
    }

    fn add_summary<'a>(
        &'a self,
        id: &'a str,
        summary: &'a Summary,
    ) -> BoxFuture<'a, Result<u64, StateError>> {
        Box::pin(async move {
            StateError::validate_id(id)?;
            let mut inner = self.lock();
            let Some(entry) = self.live(&mut inner, id) else {
                return Err(StateError::NotFound { id: id.to_owned() });
            };
            entry.conversation.summaries.push(summary.clone());
            Ok(touch_write(&mut entry.conversation))
        })
    }
}

/// Sorts listing rows; ties are broken by id so pages are stable.
pub(crate) fn sort_infos(rows: &mut [ConversationInfo], order: SortOrder) {
    rows.sort_by(|a, b| {
        let key = match order {
            SortOrder::UpdatedDesc => b.updated_at.cmp(&a.updated_at),
            SortOrder::UpdatedAsc => a.updated_at.cmp(&b.updated_at),
            SortOrder::CreatedDesc => b.created_at.cmp(&a.created_at),
            SortOrder::CreatedAsc => a.created_at.cmp(&b.created_at),
        };
        key.then_with(|| a.id.cmp(&b.id))
    });
}
