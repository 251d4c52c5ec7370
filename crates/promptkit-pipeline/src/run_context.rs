//! Per-run shared state: what the caller set ([`RunData`]), typed extensions, and the live
//! state of a session (turn ids, the interrupt epoch, playback, the spoken timeline).

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::element::Interrupt;

/// How many recent turns the playback and spoken-timeline records keep.
const TURNS_KEPT: usize = 8;

/// Data shared by the stages of one run: created fresh for every run, never copied onto
/// elements. A run is one request in text mode and a whole session (many turns) in voice
/// mode.
///
/// [`read`](Self::read) and [`write`](Self::write) give the caller's [`RunData`] through
/// short critical sections: never hold the guard across an `.await`. The rest is the live
/// state of the run, which the engine itself uses: turn ids ([`begin_turn`](Self::begin_turn)),
/// the interrupt epoch ([`interrupt`](Self::interrupt)), the playback slot
/// ([`report_playback`](Self::report_playback)) and the spoken timeline
/// ([`record_spoken`](Self::record_spoken)).
pub struct RunContext {
    data: RwLock<RunData>,
    started: Instant,
    next_turn: AtomicU64,
    /// The interrupt epoch, read on every received element that carries one.
    epoch: AtomicU64,
    /// The latest interrupt, for waiters; written with `epoch` under its lock.
    interrupts: watch::Sender<Interrupt>,
    playback: watch::Sender<Playback>,
    /// Played positions of recent turns, by turn.
    played: Mutex<BTreeMap<u64, Duration>>,
    /// Per recent turn: (audio time, bytes of the answer's text spoken by then), in order.
    spoken: Mutex<BTreeMap<u64, Vec<(Duration, usize)>>>,
}

impl fmt::Debug for RunContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("data", &*self.read())
            .field("epoch", &self.epoch())
            .field("current_turn", &self.current_turn())
            .finish_non_exhaustive()
    }
}

impl Default for RunContext {
    fn default() -> Self {
        Self::new(RunData::default())
    }
}

/// What the caller sets for a run (and stages may update): ids, prompt, tools, variables,
/// and typed [`Extensions`].
#[derive(Debug, Clone, Default)]
pub struct RunData {
    /// The conversation (session) id.
    pub session_id: Option<String>,
    /// The user id.
    pub user_id: Option<String>,
    /// The rendered system prompt (set by the template stage, or by the caller).
    pub system_prompt: Option<String>,
    /// Tool names the model may use; `None` means no restriction. Entries may end in `*` to
    /// allow a prefix.
    pub allowed_tools: Option<Vec<String>>,
    /// Template variables (later writers win).
    pub variables: BTreeMap<String, String>,
    /// Model override.
    pub model: Option<String>,
    /// Application data for stages (for example provider request metadata).
    pub metadata: Map<String, Value>,
    /// Typed state of particular stages (a selected prompt, approvals), one value per type.
    pub extensions: Extensions,
}

impl RunData {
    /// Data for a session.
    pub fn for_session(session_id: impl Into<String>) -> Self {
        Self {
            session_id: Some(session_id.into()),
            ..Self::default()
        }
    }

    /// Sets the user.
    #[must_use]
    pub fn with_user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Sets a variable.
    #[must_use]
    pub fn with_variable(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.variables.insert(name.into(), value.into());
        self
    }

    /// Sets the system prompt.
    #[must_use]
    pub fn with_system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(prompt.into());
        self
    }

    /// Adds a typed extension (replacing one of the same type).
    #[must_use]
    pub fn with_extension<T: Any + Send + Sync>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }
}

/// Typed per-run values, at most one per type, shared (cloning the map clones pointers).
///
/// ```
/// use promptkit_pipeline::Extensions;
///
/// #[derive(Debug, PartialEq)]
/// struct Tenant(&'static str);
///
/// let mut extensions = Extensions::default();
/// extensions.insert(Tenant("acme"));
/// assert_eq!(extensions.get::<Tenant>(), Some(&Tenant("acme")));
/// assert!(extensions.get::<String>().is_none());
/// ```
#[derive(Clone, Default)]
pub struct Extensions {
    map: HashMap<TypeId, (&'static str, Arc<dyn Any + Send + Sync>)>,
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.map.values().map(|(name, _)| name))
            .finish()
    }
}

impl Extensions {
    /// Stores `value`, returning the value of the same type it replaces.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) -> Option<Arc<T>> {
        self.map
            .insert(
                TypeId::of::<T>(),
                (std::any::type_name::<T>(), Arc::new(value)),
            )
            .and_then(|(_, old)| old.downcast().ok())
    }

    /// The value of type `T`.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.map
            .get(&TypeId::of::<T>())
            .and_then(|(_, v)| v.downcast_ref())
    }

    /// The value of type `T`, shared.
    pub fn get_shared<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.map
            .get(&TypeId::of::<T>())
            .and_then(|(_, v)| Arc::clone(v).downcast().ok())
    }

    /// Removes the value of type `T`.
    pub fn remove<T: Any + Send + Sync>(&mut self) -> Option<Arc<T>> {
        self.map
            .remove(&TypeId::of::<T>())
            .and_then(|(_, v)| v.downcast().ok())
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What the transport last said about the bot's audio: which turn's answer is playing,
/// whether it is audible now, and how much of it has been played.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Playback {
    /// The turn whose answer the report is about.
    pub turn_id: Option<u64>,
    /// Whether the answer is audible now.
    pub playing: bool,
    /// How much of the answer's audio has been played.
    pub played: Duration,
}

impl Playback {
    /// The answer to `turn_id` is playing, `played` of it so far.
    pub fn playing(turn_id: u64, played: Duration) -> Self {
        Self {
            turn_id: Some(turn_id),
            playing: true,
            played,
        }
    }

    /// The answer to `turn_id` stopped playing after `played` (it ended or was cut).
    pub fn stopped(turn_id: u64, played: Duration) -> Self {
        Self {
            turn_id: Some(turn_id),
            playing: false,
            played,
        }
    }
}

impl RunContext {
    /// A context holding `data`.
    pub fn new(data: RunData) -> Self {
        Self {
            data: RwLock::new(data),
            started: Instant::now(),
            next_turn: AtomicU64::new(1),
            epoch: AtomicU64::new(0),
            interrupts: watch::Sender::new(Interrupt::default()),
            playback: watch::Sender::new(Playback::default()),
            played: Mutex::default(),
            spoken: Mutex::default(),
        }
    }

    /// Reads the data.
    pub fn read(&self) -> RwLockReadGuard<'_, RunData> {
        self.data.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the data.
    pub fn write(&self) -> RwLockWriteGuard<'_, RunData> {
        self.data.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the data.
    pub fn snapshot(&self) -> RunData {
        self.read().clone()
    }

    /// When the run started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Whether `tool` is allowed in this run.
    pub fn tool_allowed(&self, tool: &str) -> bool {
        self.read().allowed_tools.as_ref().is_none_or(|allowed| {
            allowed
                .iter()
                .any(|p| promptkit_core::name_matches(p, tool))
        })
    }

    /// Starts a new conversational turn and returns its id (1 for the first).
    pub fn begin_turn(&self) -> u64 {
        self.next_turn.fetch_add(1, Ordering::Relaxed)
    }

    /// The latest turn begun, if any.
    pub fn current_turn(&self) -> Option<u64> {
        Some(self.next_turn.load(Ordering::Relaxed) - 1).filter(|t| *t > 0)
    }

    /// The run's interrupt epoch: how many interrupts it has had.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Interrupts the run: the answer in progress and everything queued for it are cancelled
    /// (see [`ElementMeta::epoch`](crate::ElementMeta::epoch)). A missing turn is the one
    /// playing (or the latest begun), a missing played position the playback slot's for that
    /// turn. Returns the interrupt as recorded, with its epoch.
    pub fn interrupt(&self, interrupt: Interrupt) -> Interrupt {
        let mut recorded = interrupt;
        let playback = *self.playback.borrow();
        if recorded.turn_id.is_none() {
            recorded.turn_id = playback.turn_id.or_else(|| self.current_turn());
        }
        if recorded.played.is_none() {
            recorded.played = recorded.turn_id.and_then(|t| self.played(t));
        }
        // `send_modify` holds the channel's lock, so concurrent interrupts get distinct,
        // ordered epochs.
        self.interrupts.send_modify(|last| {
            recorded.epoch = last.epoch.max(self.epoch.load(Ordering::Relaxed)) + 1;
            self.epoch.store(recorded.epoch, Ordering::Release);
            *last = recorded;
        });
        if let (Some(turn), Some(played)) = (recorded.turn_id, recorded.played) {
            self.keep(&self.played, turn, played);
        }
        recorded
    }

    /// The latest interrupt (epoch 0 when there has been none).
    pub fn last_interrupt(&self) -> Interrupt {
        *self.interrupts.borrow()
    }

    /// Completes with the first interrupt whose epoch is past `epoch` (at once if there is
    /// one already). Cancel-safe.
    pub fn interrupted_after(
        &self,
        epoch: u64,
    ) -> impl Future<Output = Interrupt> + Send + 'static {
        let mut rx = self.interrupts.subscribe();
        async move {
            let seen = rx.wait_for(|i| i.epoch > epoch).await.map(|i| *i);
            match seen {
                Ok(interrupt) => interrupt,
                // The sender lives as long as the context, which the receiver's owner holds.
                Err(_) => std::future::pending().await,
            }
        }
    }

    /// Records what the transport says about playback (see [`Playback`]).
    pub fn report_playback(&self, playback: Playback) {
        if let Some(turn) = playback.turn_id {
            self.keep(&self.played, turn, playback.played);
        }
        self.playback.send_replace(playback);
    }

    /// The latest playback report.
    pub fn playback(&self) -> Playback {
        *self.playback.borrow()
    }

    /// A receiver of playback reports, for a stage that reacts to them.
    pub fn watch_playback(&self) -> watch::Receiver<Playback> {
        self.playback.subscribe()
    }

    /// How much of the answer to `turn` was played, as last reported.
    pub fn played(&self, turn: u64) -> Option<Duration> {
        lock(&self.played).get(&turn).copied()
    }

    /// Records that by `at` (audio time from the start of the answer to `turn`), the first
    /// `text_bytes` bytes of that answer's text (its deltas, concatenated) had been spoken.
    /// Text-to-speech records this from word timings, or estimates it.
    pub fn record_spoken(&self, turn: u64, at: Duration, text_bytes: usize) {
        let mut spoken = lock(&self.spoken);
        let marks = spoken.entry(turn).or_default();
        match marks.last() {
            Some(&(last_at, last_bytes)) if last_at > at || last_bytes > text_bytes => {}
            _ => marks.push((at, text_bytes)),
        }
        while spoken.len() > TURNS_KEPT {
            spoken.pop_first();
        }
    }

    /// How many bytes of the answer to `turn` had been spoken by audio time `played`, when
    /// text-to-speech recorded a timeline for it.
    pub fn heard_bytes(&self, turn: u64, played: Duration) -> Option<usize> {
        let spoken = lock(&self.spoken);
        let marks = spoken.get(&turn)?;
        Some(
            marks
                .iter()
                .take_while(|(at, _)| *at <= played)
                .last()
                .map_or(0, |&(_, bytes)| bytes),
        )
    }

    fn keep(&self, map: &Mutex<BTreeMap<u64, Duration>>, turn: u64, played: Duration) {
        let mut map = lock(map);
        map.insert(turn, played);
        while map.len() > TURNS_KEPT {
            map.pop_first();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matching() {
        let run = RunContext::default();
        assert!(run.tool_allowed("anything"), "no list means no restriction");
        run.write().allowed_tools = Some(vec!["search".into(), "mcp__files__*".into()]);
        assert!(run.tool_allowed("search"));
        assert!(run.tool_allowed("mcp__files__read"));
        assert!(!run.tool_allowed("mcp__shell__run"));
        assert!(!run.tool_allowed("searcher"));
    }

    #[test]
    fn turns_are_numbered_from_one() {
        let run = RunContext::default();
        assert_eq!(run.current_turn(), None);
        assert_eq!(run.begin_turn(), 1);
        assert_eq!(run.begin_turn(), 2);
        assert_eq!(run.current_turn(), Some(2));
    }

    #[test]
    fn an_interrupt_bumps_the_epoch_and_fills_in_what_playback_knows() {
        let run = RunContext::default();
        run.begin_turn();
        run.report_playback(Playback::playing(1, Duration::from_millis(700)));
        let first = run.interrupt(Interrupt::default());
        assert_eq!(first.epoch, 1);
        assert_eq!(first.turn_id, Some(1));
        assert_eq!(first.played, Some(Duration::from_millis(700)));
        assert_eq!(run.epoch(), 1);
        let second = run.interrupt(Interrupt::of_turn(2).with_played(Duration::ZERO));
        assert_eq!((second.epoch, second.turn_id), (2, Some(2)));
        assert_eq!(run.last_interrupt(), second);
        assert_eq!(run.played(2), Some(Duration::ZERO));
    }

    #[tokio::test]
    async fn waiting_for_an_interrupt_sees_one_that_already_happened() {
        let run = Arc::new(RunContext::default());
        run.interrupt(Interrupt::of_turn(1));
        let seen = run.interrupted_after(0).await;
        assert_eq!(seen.epoch, 1);
        let later = run.interrupted_after(1);
        let interrupter = Arc::clone(&run);
        tokio::spawn(async move { interrupter.interrupt(Interrupt::of_turn(2)) });
        assert_eq!(later.await.turn_id, Some(2));
    }

    #[test]
    fn the_spoken_timeline_maps_played_time_to_text() {
        let run = RunContext::default();
        let ms = Duration::from_millis;
        run.record_spoken(1, ms(300), 6);
        run.record_spoken(1, ms(600), 12);
        run.record_spoken(1, ms(500), 9); // out of order: ignored
        assert_eq!(run.heard_bytes(1, ms(100)), Some(0));
        assert_eq!(run.heard_bytes(1, ms(450)), Some(6));
        assert_eq!(run.heard_bytes(1, ms(2000)), Some(12));
        assert_eq!(
            run.heard_bytes(2, ms(2000)),
            None,
            "no timeline for that turn"
        );
        for turn in 2..=20 {
            run.record_spoken(turn, ms(1), 1);
        }
        assert_eq!(
            run.heard_bytes(1, ms(2000)),
            None,
            "old turns are forgotten"
        );
    }

    #[test]
    fn extensions_hold_one_value_per_type() {
        let mut data = RunData::default().with_extension(7_u32);
        assert_eq!(data.extensions.get::<u32>(), Some(&7));
        assert_eq!(data.extensions.insert(8_u32).as_deref(), Some(&7));
        let copy = data.clone();
        assert_eq!(copy.extensions.get_shared::<u32>().as_deref(), Some(&8));
        assert_eq!(data.extensions.remove::<u32>().as_deref(), Some(&8));
        assert!(data.extensions.is_empty());
        assert!(format!("{:?}", copy.extensions).contains("u32"));
    }
}
