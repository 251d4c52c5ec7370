//! What the WebSocket synthesisers (Cartesia, ElevenLabs) share: one socket per client and
//! socket URL, many sessions on it, each session one vendor context.
//!
//! - **The socket** is opened when the first session needs it (with the connection's
//!   retries), shared by every later session with the same URL, and opened again when it
//!   closed. One task owns it: it writes what the sessions send, sends keep-alives, reads
//!   the vendor's messages, decodes them (the vendor's pure decoder) and routes each to its
//!   context's channel. A message of a context that is unknown, finished or cancelled is
//!   dropped there, so late audio or a late `done` of a cancelled context never reaches
//!   another session (livekit/agents#7081). The task sends a close frame and ends when the
//!   client and all its sessions are gone.
//! - **A session** is a [`TextSender`] and an event stream over one context. The stream
//!   turns the vendor's audio into frames on the session's output clock (the bytes of audio
//!   received so far), its timings into [`Word`]s, and ends after `Done`, an error or a
//!   cancel. It owns the first-byte and idle timeouts: they run only while audio is owed
//!   (text was sent and no audio came since, a flush is pending, or the text was finished).
//!   The session's channel is unbounded: the socket's task must never wait for one slow
//!   consumer, and a vendor sends no more than the answer's audio (a cancel stops it).
//!   Until its first audio a session keeps what it sent: a retryable failure then opens
//!   the context again under a new id (the old one is cancelled, its late audio dropped)
//!   and replays it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use promptkit_core::{
    AudioFormat, AudioFrame, BoxFuture, SpeechError, TextSender, TtsEvent, TtsEventStream,
    TtsSession, Word,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::client::ws::{self, Connector, Incoming};
use crate::client::{Connection, status_error, vendor_message};

/// One message of a synthesiser's server, as its decoder reads it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServerMessage {
    /// The context the message belongs to, when it names one.
    pub context_id: Option<String>,
    /// What it says.
    pub event: ServerEvent,
}

/// What a synthesiser's server message says.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// Audio of the context, in the format the client asked for, with the timing of its
    /// characters when the vendor sends them with the audio (ElevenLabs).
    Audio {
        /// The audio bytes (decoded from base64).
        data: Bytes,
        /// Character timings relative to the start of this chunk.
        alignment: Option<Alignment>,
    },
    /// Word timings on the context's clock (Cartesia `word_timestamps`).
    Words(Vec<Word>),
    /// A flush's audio has all been sent (Cartesia `flush_done`).
    FlushDone {
        /// The vendor's flush number, when it gives one.
        flush_id: Option<u64>,
    },
    /// The context is over: all its audio has been sent (Cartesia `done`, ElevenLabs
    /// `isFinal`).
    Done,
    /// The vendor reported an error.
    Error(VendorError),
}

/// Character timings of one audio chunk (ElevenLabs `alignment`), relative to the start of
/// the chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Alignment {
    /// The characters (usually one per entry; spaces included).
    pub chars: Vec<String>,
    /// Where each starts, in ms from the start of the chunk.
    pub starts_ms: Vec<u64>,
    /// How long each lasts, in ms.
    pub durations_ms: Vec<u64>,
}

/// An error a vendor reported in the stream or in a close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VendorError {
    /// The HTTP-like status the error stands for (from the vendor's `status_code`, or from
    /// its error code: 401 for a bad key, 429 for a rate limit, 402 for an exhausted
    /// quota), or 0 when it gave none.
    pub status: u16,
    /// The vendor's error code, when it gives one.
    pub code: Option<String>,
    /// The vendor's text.
    pub message: String,
}

impl VendorError {
    /// The typed error: 401/403 [`SpeechError::Auth`], 429 [`SpeechError::RateLimited`],
    /// anything else [`SpeechError::Service`], the message scrubbed of the key.
    pub(crate) fn into_error(self, connection: &Connection) -> SpeechError {
        let text = match &self.code {
            Some(code) if !self.message.contains(code.as_str()) => {
                format!("{} ({code})", self.message)
            }
            _ => self.message,
        };
        status_error(self.status, None, vendor_message(connection, &text))
    }
}

/// A vendor's pure decoder of server messages (one vendor message may say two things:
/// ElevenLabs can put its last audio and `isFinal` in one).
pub(crate) type Decoder = fn(&str) -> Result<Vec<ServerMessage>, SpeechError>;

/// A vendor's reading of a close frame: the error it stands for, when it is one of the
/// vendor's own (ElevenLabs closes with 1008 and a reason for a quota or a bad request).
pub(crate) type CloseReader = fn(u16, &str) -> Option<VendorError>;

/// How a session knows a flush's audio is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlushMode {
    /// The vendor says so ([`ServerEvent::FlushDone`]).
    Vendor,
    /// The character alignment has covered every non-space character sent before the
    /// flush (ElevenLabs, which sends no flush acknowledgement).
    Alignment,
}

/// The messages of one vendor context, built by the vendor's client.
pub(crate) trait ContextWire: Send + Sync + fmt::Debug + 'static {
    /// The message that opens the context, if the vendor needs one.
    fn open(&self) -> Option<String>;
    /// A chunk of text.
    fn text(&self, text: &str) -> String;
    /// A flush.
    fn flush(&self) -> Vec<String>;
    /// The end of the text.
    fn finish(&self) -> Vec<String>;
    /// A cancel.
    fn cancel(&self) -> String;
    /// A keep-alive for the context, sent with every socket keep-alive, if the vendor
    /// needs one.
    fn keep_alive(&self) -> Option<String>;
}

/// One session to open.
pub(crate) struct ContextSpec {
    /// The socket's URL (never with the key).
    pub(crate) url: String,
    /// The handshake's headers (the key's among them).
    pub(crate) headers: Vec<(&'static str, String)>,
    /// The audio format asked for.
    pub(crate) format: AudioFormat,
    /// How flushes complete.
    pub(crate) flush_mode: FlushMode,
    /// The context's messages, for a context id (a retried session gets a new one).
    pub(crate) wire: WireMaker,
}

/// Makes a context's messages for its id.
pub(crate) type WireMaker = Arc<dyn Fn(&str) -> Box<dyn ContextWire> + Send + Sync>;

/// The sockets of one client, shared with its sessions (a session retried before its
/// first audio opens its context again).
#[derive(Debug)]
pub(crate) struct Mux(Arc<MuxShared>);

impl std::ops::Deref for Mux {
    type Target = MuxShared;

    fn deref(&self) -> &MuxShared {
        &self.0
    }
}

/// What [`Mux`] holds.
pub(crate) struct MuxShared {
    connection: Connection,
    connector: Connector,
    keep_alive: Duration,
    idle_close: Duration,
    decode: Decoder,
    read_close: CloseReader,
    sockets: tokio::sync::Mutex<HashMap<String, Arc<SocketHandle>>>,
    next_id: AtomicU64,
    prefix: String,
}

impl fmt::Debug for MuxShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mux")
            .field("base_url", &self.connection.base_url)
            .field("keep_alive", &self.keep_alive)
            .field("idle_close", &self.idle_close)
            .finish_non_exhaustive()
    }
}

impl Mux {
    /// The sockets of a client of `connection`: pinged every `keep_alive`, closed when no
    /// context has been open on them for `idle_close`.
    pub(crate) fn new(
        connection: Connection,
        (keep_alive, idle_close): (Duration, Duration),
        decode: Decoder,
        read_close: CloseReader,
    ) -> Result<Self, SpeechError> {
        let connector = Connector::new(&connection)?;
        Ok(Self(Arc::new(MuxShared {
            connection,
            connector,
            keep_alive: keep_alive.max(Duration::from_millis(10)),
            idle_close,
            decode,
            read_close,
            sockets: tokio::sync::Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            prefix: format!("pk{:08x}", fastrand::u32(..)),
        })))
    }

    /// Opens a session: a context on the shared socket.
    pub(crate) async fn open(&self, spec: ContextSpec) -> Result<TtsSession, SpeechError> {
        // A socket found open may close before the context is registered: then once more.
        for _ in 0..2 {
            let socket = self.socket(&spec.url, &spec.headers).await?;
            let (events, receiver) = mpsc::unbounded_channel();
            let context_id = self.context_id();
            let wire = (spec.wire)(&context_id);
            let route = Route {
                events,
                keep_alive: wire.keep_alive(),
            };
            if !socket.routes.register(&context_id, route) {
                continue;
            }
            if let Some(open) = wire.open() {
                socket.send(open)?;
            }
            let core = Arc::new(Core {
                mux: self.0.clone(),
                url: spec.url,
                headers: spec.headers,
                make_wire: spec.wire,
                link: Mutex::new(Link {
                    socket,
                    context_id,
                    wire,
                }),
                timeouts: self.connection.timeouts,
                state: Mutex::new(State::new()),
                notify: Notify::new(),
            });
            let reader = Reader {
                core: core.clone(),
                receiver,
                format: spec.format,
                flush_mode: spec.flush_mode,
                received: 0,
                carry: Vec::new(),
                word: None,
                aligned: 0,
                queue: VecDeque::new(),
                over: false,
            };
            let events: TtsEventStream = Box::pin(futures_util::stream::unfold(
                reader,
                |mut reader| async move {
                    let item = reader.next().await?;
                    Some((item, reader))
                },
            ));
            return Ok(TtsSession {
                sender: Box::new(Sender { core }),
                events,
            });
        }
        Err(SpeechError::Transport {
            message: "the socket closed while the session was opening".to_owned(),
            source: None,
        })
    }
}

impl MuxShared {
    /// The connection.
    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    /// A context id unique to this client.
    pub(crate) fn context_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.prefix)
    }

    /// The open socket for `url`, opened (with retries) when there is none or it closed.
    async fn socket(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
    ) -> Result<Arc<SocketHandle>, SpeechError> {
        let mut sockets = self.sockets.lock().await;
        if let Some(handle) = sockets.get(url)
            && handle.routes.is_open()
        {
            return Ok(handle.clone());
        }
        sockets.remove(url);
        let socket = self
            .connection
            .retry
            .run(|| self.connector.connect(&self.connection, url, headers))
            .await?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let routes = Arc::new(Routes::default());
        tokio::spawn(run_socket(
            socket,
            receiver,
            routes.clone(),
            SocketParts {
                connection: self.connection.clone(),
                keep_alive: self.keep_alive,
                idle_close: self.idle_close,
                decode: self.decode,
                read_close: self.read_close,
            },
        ));
        let handle = Arc::new(SocketHandle { commands, routes });
        sockets.insert(url.to_owned(), handle.clone());
        Ok(handle)
    }
}

/// A client's hold on a socket: dropping the last one ends the socket's task.
struct SocketHandle {
    commands: mpsc::UnboundedSender<String>,
    routes: Arc<Routes>,
}

impl SocketHandle {
    fn send(&self, message: String) -> Result<(), SpeechError> {
        self.commands.send(message).map_err(|_| SpeechError::Closed)
    }
}

/// What goes to a session from the socket's task.
enum Inbound {
    Event(ServerEvent),
    Failed(SpeechError),
}

struct Route {
    events: mpsc::UnboundedSender<Inbound>,
    keep_alive: Option<String>,
}

/// The contexts open on a socket.
#[derive(Default)]
struct Routes {
    inner: Mutex<RoutesInner>,
    /// Wakes the socket's task when the last context went (its idle clock starts).
    emptied: Notify,
}

#[derive(Default)]
struct RoutesInner {
    closed: bool,
    map: HashMap<String, Route>,
    /// Since when no context has been open (`None` before the first one).
    idle_since: Option<Instant>,
}

impl Routes {
    fn lock(&self) -> MutexGuard<'_, RoutesInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_open(&self) -> bool {
        !self.lock().closed
    }

    /// Adds a context; `false` when the socket has closed.
    fn register(&self, id: &str, route: Route) -> bool {
        let mut inner = self.lock();
        if inner.closed {
            return false;
        }
        inner.map.insert(id.to_owned(), route);
        inner.idle_since = None;
        true
    }

    fn remove(&self, id: &str) {
        let mut inner = self.lock();
        if inner.map.remove(id).is_some() && inner.map.is_empty() {
            inner.idle_since = Some(Instant::now());
            self.emptied.notify_one();
        }
    }

    /// Stops the keep-alives of a context whose text is finished (it is closing).
    fn quiet(&self, id: &str) {
        if let Some(route) = self.lock().map.get_mut(id) {
            route.keep_alive = None;
        }
    }

    /// When the socket is to close for want of contexts, if none is open.
    fn idle_deadline(&self, idle_close: Duration) -> Option<Instant> {
        self.lock().idle_since.map(|since| since + idle_close)
    }

    /// Closes the socket if no context has been open for `idle_close`; under the lock, so
    /// no context can be registered on a socket that is closing.
    fn close_if_idle(&self, idle_close: Duration) -> bool {
        let mut inner = self.lock();
        let idle = inner.map.is_empty()
            && inner
                .idle_since
                .is_some_and(|since| since + idle_close <= Instant::now());
        if idle {
            inner.closed = true;
        }
        idle
    }

    fn keep_alives(&self) -> Vec<String> {
        self.lock()
            .map
            .values()
            .filter_map(|route| route.keep_alive.clone())
            .collect()
    }

    /// Routes one decoded message; messages of unknown contexts are dropped.
    fn deliver(&self, message: ServerMessage, connection: &Connection) {
        let inner = self.lock();
        let Some(id) = message.context_id else {
            // A vendor error that names no context is about the socket: every context
            // hears it.
            if let ServerEvent::Error(error) = message.event {
                for route in inner.map.values() {
                    let _ = route
                        .events
                        .send(Inbound::Failed(error.clone().into_error(connection)));
                }
            }
            return;
        };
        let Some(route) = inner.map.get(&id) else {
            tracing::trace!(context = %id, "dropping a message of a context that is not open");
            return;
        };
        let inbound = match message.event {
            ServerEvent::Error(error) => Inbound::Failed(error.into_error(connection)),
            event => Inbound::Event(event),
        };
        let _ = route.events.send(inbound);
    }

    /// The socket is gone: every open context fails with `error()`.
    fn fail(&self, error: impl Fn() -> SpeechError) {
        let mut inner = self.lock();
        inner.closed = true;
        for (_, route) in inner.map.drain() {
            let _ = route.events.send(Inbound::Failed(error()));
        }
    }
}

struct SocketParts {
    connection: Connection,
    keep_alive: Duration,
    idle_close: Duration,
    decode: Decoder,
    read_close: CloseReader,
}

/// Why a socket's task ended.
enum Ending {
    /// The client and all its sessions are gone.
    Released,
    Transport(String),
    Vendor(VendorError),
}

async fn run_socket(
    socket: ws::Socket,
    mut commands: mpsc::UnboundedReceiver<String>,
    routes: Arc<Routes>,
    parts: SocketParts,
) {
    let (mut write, mut read) = socket.split();
    let mut ticker =
        tokio::time::interval_at(crate::client::after(parts.keep_alive), parts.keep_alive);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ending = loop {
        let idle = routes.idle_deadline(parts.idle_close);
        let idle = async move {
            match idle {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = routes.emptied.notified() => {}
            () = idle => {
                if routes.close_if_idle(parts.idle_close) {
                    let _ = write.send(Message::Close(None)).await;
                    let _ = write.close().await;
                    break Ending::Released;
                }
            }
            command = commands.recv() => match command {
                Some(text) => {
                    if let Err(error) = write.send(ws::text(text)).await {
                        break Ending::Transport(format!("could not write to the WebSocket: {error}"));
                    }
                }
                None => {
                    let _ = write.send(Message::Close(None)).await;
                    let _ = write.close().await;
                    break Ending::Released;
                }
            },
            incoming = ws::next(&mut read, None) => match incoming {
                Ok(Incoming::Text(text)) => match (parts.decode)(&text) {
                    Ok(messages) => {
                        for message in messages {
                            routes.deliver(message, &parts.connection);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "dropping an unreadable vendor message"),
                },
                Ok(Incoming::Binary(bytes)) => {
                    tracing::debug!(bytes, "ignored a binary message from the speech service");
                }
                Ok(Incoming::Closed { code, reason }) => {
                    break match (parts.read_close)(code, &reason) {
                        Some(error) => Ending::Vendor(error),
                        None if code == 1006 => Ending::Transport(
                            "the connection to the speech service dropped".to_owned(),
                        ),
                        None => Ending::Transport(format!(
                            "the speech service closed the socket ({code} {})",
                            vendor_message(&parts.connection, &reason)
                        )),
                    };
                }
                Err(error) => break Ending::Transport(error.to_string()),
            },
            _ = ticker.tick() => {
                let mut messages: Vec<Message> =
                    routes.keep_alives().into_iter().map(ws::text).collect();
                messages.push(Message::Ping(Bytes::new()));
                for message in messages {
                    if let Err(error) = write.send(message).await {
                        tracing::debug!(%error, "a keep-alive failed");
                    }
                }
            }
        }
    };
    match ending {
        Ending::Released => routes.fail(|| SpeechError::Closed),
        Ending::Transport(message) => routes.fail(|| SpeechError::Transport {
            message: message.clone(),
            source: None,
        }),
        Ending::Vendor(error) => routes.fail(|| error.clone().into_error(&parts.connection)),
    }
}

/// What a session's sender and stream share.
struct Core {
    mux: Arc<MuxShared>,
    url: String,
    headers: Vec<(&'static str, String)>,
    make_wire: WireMaker,
    /// The context the session speaks in now. Lock order: `link`, then `state`.
    link: Mutex<Link>,
    timeouts: crate::client::Timeouts,
    state: Mutex<State>,
    notify: Notify,
}

/// A session's context: its socket, id and messages.
struct Link {
    socket: Arc<SocketHandle>,
    context_id: String,
    wire: Box<dyn ContextWire>,
}

impl Link {
    /// Ends the context here: its late messages are dropped, and the vendor is told.
    fn retire(&self, cancel: bool) {
        self.socket.routes.remove(&self.context_id);
        if cancel {
            let _ = self.socket.send(self.wire.cancel());
        }
    }
}

/// What a sender does, kept until the first audio to replay it in a retried context.
#[derive(Debug, Clone)]
enum Op {
    Text(String),
    Flush,
    Finish,
}

impl Op {
    fn messages(&self, wire: &dyn ContextWire) -> Vec<String> {
        match self {
            Self::Text(text) => vec![wire.text(text)],
            Self::Flush => wire.flush(),
            Self::Finish => wire.finish(),
        }
    }
}

struct State {
    /// What was sent before the first audio.
    log: Vec<Op>,
    /// Retries of the session so far.
    retries: u32,
    first_text_at: Option<Instant>,
    last_activity: Instant,
    first_audio: bool,
    text_since_audio: bool,
    pending_flushes: usize,
    finished: bool,
    /// Cancelled, timed out, failed or done: nothing more is sent or delivered.
    over: bool,
    cancelled: bool,
    /// Non-space characters sent so far.
    chars_sent: u64,
    /// For each pending flush (alignment mode), the characters sent before it.
    flush_marks: VecDeque<u64>,
}

impl State {
    fn new() -> Self {
        Self {
            log: Vec::new(),
            retries: 0,
            first_text_at: None,
            last_activity: Instant::now(),
            first_audio: false,
            text_since_audio: false,
            pending_flushes: 0,
            finished: false,
            over: false,
            cancelled: false,
            chars_sent: 0,
            flush_marks: VecDeque::new(),
        }
    }
}

impl Core {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn link(&self) -> MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends what `op` stands for. Before the first audio it is kept for a retry, and a
    /// socket that is gone is the retry's to deal with.
    fn apply(&self, op: Op) -> Result<(), SpeechError> {
        let link = self.link();
        let mut sent = true;
        for message in op.messages(&*link.wire) {
            sent &= link.socket.send(message).is_ok();
        }
        let mut state = self.state();
        let replayable = !state.first_audio;
        if replayable {
            state.log.push(op);
        }
        drop(state);
        drop(link);
        self.notify.notify_one();
        if sent || replayable {
            Ok(())
        } else {
            Err(SpeechError::Closed)
        }
    }

    /// Ends the context (idempotent): its route goes, so late messages are dropped;
    /// `cancel` tells the vendor to stop.
    fn end(&self, cancel: bool) {
        {
            let mut state = self.state();
            if state.over {
                return;
            }
            state.over = true;
            state.cancelled = cancel;
        }
        self.link().retire(cancel);
        self.notify.notify_one();
    }

    /// Whether the session is over, and when it times out if nothing arrives.
    fn deadline(&self) -> (bool, Option<(Instant, Duration)>) {
        let state = self.state();
        if state.over {
            return (true, None);
        }
        let owed = state.finished || state.pending_flushes > 0 || state.text_since_audio;
        if !owed {
            return (false, None);
        }
        if state.first_audio {
            let idle = self.timeouts.idle;
            (false, Some((state.last_activity + idle, idle)))
        } else {
            let first = self.timeouts.first_byte;
            let since = state.first_text_at.unwrap_or(state.last_activity);
            (false, Some((since + first, first)))
        }
    }
}

/// The sending half of a session.
struct Sender {
    core: Arc<Core>,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("context_id", &self.core.link().context_id)
            .finish_non_exhaustive()
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        // Text that can never be finished is not worth speaking.
        let finished = self.core.state().finished;
        if !finished {
            self.core.end(true);
        }
    }
}

impl Sender {
    fn open_state(&self) -> Result<MutexGuard<'_, State>, SpeechError> {
        let state = self.core.state();
        if state.over || state.finished {
            return Err(SpeechError::Closed);
        }
        Ok(state)
    }

    fn send_now(&self, text: &str) -> Result<(), SpeechError> {
        if text.is_empty() {
            return self.open_state().map(drop);
        }
        {
            let mut state = self.open_state()?;
            let now = Instant::now();
            state.first_text_at.get_or_insert(now);
            state.last_activity = now;
            state.text_since_audio = true;
            state.chars_sent += non_space(text);
        }
        self.core.apply(Op::Text(text.to_owned()))
    }

    fn flush_now(&self) -> Result<(), SpeechError> {
        {
            let mut state = self.open_state()?;
            state.pending_flushes += 1;
            let mark = state.chars_sent;
            state.flush_marks.push_back(mark);
            state.last_activity = Instant::now();
        }
        self.core.apply(Op::Flush)
    }

    fn finish_now(&self) -> Result<(), SpeechError> {
        {
            let mut state = self.core.state();
            if state.over {
                return Err(SpeechError::Closed);
            }
            if state.finished {
                return Ok(());
            }
            state.finished = true;
            state.last_activity = Instant::now();
        }
        let result = self.core.apply(Op::Finish);
        let link = self.core.link();
        link.socket.routes.quiet(&link.context_id);
        result
    }
}

impl TextSender for Sender {
    fn send(&self, text: String) -> BoxFuture<'_, Result<(), SpeechError>> {
        let result = self.send_now(&text);
        Box::pin(async move { result })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        let result = self.flush_now();
        Box::pin(async move { result })
    }

    fn cancel(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        self.core.end(true);
        Box::pin(async { Ok(()) })
    }

    fn finish(&self) -> BoxFuture<'_, Result<(), SpeechError>> {
        let result = self.finish_now();
        Box::pin(async move { result })
    }
}

/// The reading half of a session: the state behind its event stream.
struct Reader {
    core: Arc<Core>,
    receiver: mpsc::UnboundedReceiver<Inbound>,
    format: AudioFormat,
    flush_mode: FlushMode,
    /// Bytes of whole samples delivered: the output clock.
    received: usize,
    /// The bytes of a sample split across two messages.
    carry: Vec<u8>,
    /// A word whose characters are still arriving (alignment mode).
    word: Option<(String, Duration, Duration)>,
    /// Non-space characters the alignment has covered.
    aligned: u64,
    queue: VecDeque<Result<TtsEvent, SpeechError>>,
    over: bool,
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Nobody listens any more: the vendor can stop.
        self.core.end(true);
    }
}

impl Reader {
    async fn next(&mut self) -> Option<Result<TtsEvent, SpeechError>> {
        loop {
            if self.core.state().cancelled {
                self.queue.clear();
                self.over = true;
                return None;
            }
            if let Some(item) = self.queue.pop_front() {
                return Some(item);
            }
            if self.over {
                return None;
            }
            if self.flush_mode == FlushMode::Alignment {
                self.reached_flushes();
                if !self.queue.is_empty() {
                    continue;
                }
            }
            let (over, deadline) = self.core.deadline();
            if over {
                self.over = true;
                return None;
            }
            let timer = async move {
                match deadline {
                    Some((at, timeout)) => {
                        tokio::time::sleep_until(at).await;
                        timeout
                    }
                    None => std::future::pending().await,
                }
            };
            let step = tokio::select! {
                inbound = self.receiver.recv() => match inbound {
                    Some(Inbound::Event(event)) => Some(Ok(event)),
                    Some(Inbound::Failed(error)) => Some(Err(error)),
                    None => Some(Err(SpeechError::Transport {
                        message: "the speech service's socket closed".to_owned(),
                        source: None,
                    })),
                },
                () = self.core.notify.notified() => None,
                timeout = timer => Some(Err(SpeechError::Timeout(timeout))),
            };
            match step {
                Some(Ok(event)) => self.handle(event),
                Some(Err(error)) => self.failed(error).await,
                None => {}
            }
        }
    }

    /// A failure: before the first audio, a retryable one (a dropped socket, a first-byte
    /// timeout, a vendor's 5xx or rate limit) opens the context again, on a new socket if
    /// need be, and replays what was sent; anything else is terminal.
    async fn failed(&mut self, error: SpeechError) {
        if matches!(error, SpeechError::Timeout(_)) && self.quiet_after_flush() {
            return;
        }
        let retry = {
            let mut state = self.core.state();
            let policy = &self.core.mux.connection.retry;
            if state.cancelled {
                return;
            }
            let retry = !state.over
                && !state.first_audio
                && error.is_retryable()
                && state.retries < policy.max_retries;
            if retry {
                state.retries += 1;
            }
            retry.then_some(state.retries)
        };
        let Some(retry) = retry else {
            self.fail(error);
            return;
        };
        tracing::debug!(%error, retry, "synthesis failed before its first audio, retrying");
        self.core.link().retire(true);
        let wait = self.core.mux.connection.retry.backoff(retry, &error);
        tokio::time::sleep(wait).await;
        if let Err(error) = self.relink().await {
            self.fail(error);
        }
    }

    /// Alignment mode: the vendor went quiet after a flush's audio without the alignment
    /// covering every character sent (a vendor may drop or rewrite some). When nothing
    /// else is owed, the flushes are taken as complete instead of failing the session.
    fn quiet_after_flush(&mut self) -> bool {
        if self.flush_mode != FlushMode::Alignment {
            return false;
        }
        let pending = {
            let mut state = self.core.state();
            if !state.first_audio
                || state.finished
                || state.text_since_audio
                || state.pending_flushes == 0
            {
                return false;
            }
            state.flush_marks.clear();
            std::mem::take(&mut state.pending_flushes)
        };
        self.end_word();
        for _ in 0..pending {
            self.queue.push_back(Ok(TtsEvent::Flushed));
        }
        true
    }

    /// The session in a new context: registered, opened, and what was sent replayed.
    async fn relink(&mut self) -> Result<(), SpeechError> {
        let core = self.core.clone();
        let socket = core.mux.socket(&core.url, &core.headers).await?;
        let context_id = core.mux.context_id();
        let wire = (core.make_wire)(&context_id);
        let (events, receiver) = mpsc::unbounded_channel();
        let finished = core.state().finished;
        let route = Route {
            events,
            keep_alive: wire.keep_alive().filter(|_| !finished),
        };
        if !socket.routes.register(&context_id, route) {
            return Err(SpeechError::Transport {
                message: "the socket closed while the session was retried".to_owned(),
                source: None,
            });
        }
        let mut link = core.link();
        let mut state = core.state();
        if state.over {
            drop(state);
            socket.routes.remove(&context_id);
            return Ok(());
        }
        if let Some(open) = wire.open() {
            let _ = socket.send(open);
        }
        for op in &state.log {
            for message in op.messages(&*wire) {
                let _ = socket.send(message);
            }
        }
        let now = Instant::now();
        if state.first_text_at.is_some() {
            state.first_text_at = Some(now);
        }
        state.last_activity = now;
        *link = Link {
            socket,
            context_id,
            wire,
        };
        drop(state);
        drop(link);
        self.receiver = receiver;
        Ok(())
    }

    /// A terminal error: the context is cancelled at the vendor (it may still be
    /// speaking), the error is the stream's last item.
    fn fail(&mut self, error: SpeechError) {
        if self.core.state().cancelled {
            return;
        }
        {
            let mut state = self.core.state();
            state.over = true;
        }
        self.core.link().retire(true);
        self.queue.push_back(Err(error));
        self.over = true;
    }

    fn handle(&mut self, event: ServerEvent) {
        if self.core.state().over {
            return;
        }
        {
            let mut state = self.core.state();
            state.last_activity = Instant::now();
        }
        match event {
            ServerEvent::Audio { data, alignment } => self.audio(&data, alignment),
            ServerEvent::Words(words) => {
                if !words.is_empty() {
                    self.queue.push_back(Ok(TtsEvent::Words(words)));
                }
            }
            ServerEvent::FlushDone { .. } => {
                if self.flush_mode == FlushMode::Vendor {
                    let mut state = self.core.state();
                    if state.pending_flushes > 0 {
                        state.pending_flushes -= 1;
                        state.flush_marks.pop_front();
                        drop(state);
                        self.queue.push_back(Ok(TtsEvent::Flushed));
                    }
                }
            }
            ServerEvent::Done => {
                self.end_word();
                let pending = {
                    let mut state = self.core.state();
                    state.flush_marks.clear();
                    std::mem::take(&mut state.pending_flushes)
                };
                for _ in 0..pending {
                    self.queue.push_back(Ok(TtsEvent::Flushed));
                }
                self.queue.push_back(Ok(TtsEvent::Done));
                self.over = true;
                self.core.end(false);
            }
            ServerEvent::Error(error) => {
                let error = error.into_error(&Connection::new(""));
                self.fail(error);
            }
        }
    }

    fn audio(&mut self, data: &[u8], alignment: Option<Alignment>) {
        let start = self.clock();
        {
            let mut state = self.core.state();
            state.first_audio = true;
            state.text_since_audio = false;
            state.log = Vec::new();
        }
        let sample = self.format.bytes_per_sample_frame().unwrap_or(1).max(1);
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(data);
        let whole = bytes.len() - bytes.len() % sample;
        self.carry = bytes.split_off(whole);
        if !bytes.is_empty() {
            let frame = AudioFrame::new(bytes, self.format).with_timestamp(start);
            self.received += whole;
            self.queue.push_back(Ok(TtsEvent::Audio(frame)));
        }
        if let Some(alignment) = alignment {
            let words = self.align(&alignment, start);
            if !words.is_empty() {
                self.queue.push_back(Ok(TtsEvent::Words(words)));
            }
        }
    }

    /// The output clock: the duration of the audio delivered.
    fn clock(&self) -> Duration {
        self.format.duration_of(self.received).unwrap_or_default()
    }

    /// Groups a chunk's characters into words; a word still open at the chunk's end waits
    /// for the next chunk (or a flush, or the end).
    fn align(&mut self, alignment: &Alignment, base: Duration) -> Vec<Word> {
        let mut words = Vec::new();
        for (i, text) in alignment.chars.iter().enumerate() {
            let start = base
                + Duration::from_millis(alignment.starts_ms.get(i).copied().unwrap_or_default());
            let end =
                start + Duration::from_millis(alignment.durations_ms.get(i).copied().unwrap_or(0));
            if text.chars().all(char::is_whitespace) {
                if let Some((word, start, end)) = self.word.take() {
                    words.push(Word::new(word, start, end));
                }
                continue;
            }
            self.aligned += non_space(text);
            match &mut self.word {
                Some((word, _, word_end)) => {
                    word.push_str(text);
                    *word_end = end;
                }
                None => self.word = Some((text.clone(), start, end)),
            }
        }
        words
    }

    /// Ends the word in progress (alignment mode).
    fn end_word(&mut self) {
        if let Some((word, start, end)) = self.word.take() {
            self.queue
                .push_back(Ok(TtsEvent::Words(vec![Word::new(word, start, end)])));
        }
    }

    /// Flushes whose text the alignment has covered (alignment mode).
    fn reached_flushes(&mut self) {
        let mut reached = 0;
        {
            let mut state = self.core.state();
            while state
                .flush_marks
                .front()
                .is_some_and(|mark| *mark <= self.aligned)
            {
                state.flush_marks.pop_front();
                state.pending_flushes = state.pending_flushes.saturating_sub(1);
                reached += 1;
            }
        }
        if reached > 0 {
            self.end_word();
            for _ in 0..reached {
                self.queue.push_back(Ok(TtsEvent::Flushed));
            }
        }
    }
}

/// The non-space characters of `text`.
fn non_space(text: &str) -> u64 {
    text.chars().filter(|c| !c.is_whitespace()).count() as u64
}

/// A duration from seconds as a vendor sends them, to the microsecond; `None` when the
/// number is not a time.
pub(crate) fn seconds(value: f64) -> Option<Duration> {
    if !value.is_finite() || !(0.0..=1.0e9).contains(&value) {
        return None;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked to be a non-negative number below 1e15 microseconds"
    )]
    let micros = (value * 1_000_000.0).round() as u64;
    Some(Duration::from_micros(micros))
}

/// One-shot synthesis over a session: send the text, finish, keep the audio.
pub(crate) fn audio_of(session: TtsSession) -> promptkit_core::AudioStream {
    let TtsSession { sender, events } = session;
    Box::pin(futures_util::stream::unfold(
        (events, Some(sender)),
        |(mut events, sender)| async move {
            loop {
                match events.next().await? {
                    Ok(TtsEvent::Audio(frame)) => return Some((Ok(frame), (events, sender))),
                    Ok(TtsEvent::Done) => return None,
                    Ok(_) => {}
                    Err(error) => return Some((Err(error), (events, sender))),
                }
            }
        },
    ))
}
