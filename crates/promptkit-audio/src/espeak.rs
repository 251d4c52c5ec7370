//! Local synthesis through the `espeak-ng` program: voice with no key and no network.
//!
//! [`EspeakTts`] implements [`TextToSpeech::synthesize`] by running
//! `espeak-ng --stdout --stdin` (the text goes in on standard input, so no text is ever
//! read as an option, not even one that starts with `-`), reading the WAV it writes as it
//! writes it (22 050 Hz PCM16), resampling it to the format asked for with
//! [`Resampler`](crate::resample::Resampler) (and encoding G.711 when asked), and streaming
//! frames of 20 to 100 ms. The process is killed when the stream is dropped.
//!
//! The voice is robotic but intelligible, and it is always there when the program is
//! installed (`apt-get install espeak-ng`): a fallback when the vendors are unreachable, and
//! a synthesiser for development without keys. [`EspeakTts::available`] says whether the
//! program runs; when it is missing, `synthesize` fails with [`SpeechError::Unsupported`]
//! naming it.
//!
//! # Example
//!
//! ```no_run
//! use futures_util::StreamExt as _;
//! use promptkit_audio::espeak::{EspeakConfig, EspeakTts};
//! use promptkit_core::{AudioFormat, SynthesisOptions, TextToSpeech};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), promptkit_core::SpeechError> {
//! let tts = EspeakTts::new(EspeakConfig::new().with_voice("en-us"))?;
//! if tts.available().await {
//!     let options = SynthesisOptions::new().with_format(AudioFormat::PCM16_16K_MONO);
//!     let mut audio = tts.synthesize("Hello from the fallback voice.", &options).await?;
//!     while let Some(frame) = audio.next().await {
//!         let frame = frame?;
//!         println!("{:?}", frame.duration());
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt as _;
use promptkit_core::{
    AudioFormat, AudioFrame, AudioStream, BoxFuture, SpeechError, SpeechPrice, SynthesisOptions,
    TextToSpeech,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::synth::{self, PcmFramer};

/// The program run unless another is configured.
pub const DEFAULT_PROGRAM: &str = "espeak-ng";
/// espeak-ng's own speaking rate, in words per minute.
pub const DEFAULT_WORDS_PER_MINUTE: u32 = 175;

/// The most of a WAV header read before its `data` chunk.
const MAX_HEADER: usize = 64 << 10;
/// The most of the program's error output kept.
const MAX_STDERR: u64 = 4 << 10;
/// A `data` length at least this large is espeak-ng's placeholder for "until the end".
const STREAMING_DATA_LEN: u32 = 0x7fff_0000;

/// Configuration of an [`EspeakTts`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EspeakConfig {
    /// The program ([`DEFAULT_PROGRAM`], looked up on `PATH`), or a path to it.
    pub program: PathBuf,
    /// The voice (`en-us`, `de`, `fr+f3`); [`SynthesisOptions::voice`] overrides it, and
    /// without either the options' language is used as the voice, else espeak-ng's default.
    pub voice: Option<String>,
    /// The speaking rate in words per minute (80 to 450; espeak-ng's default is
    /// [`DEFAULT_WORDS_PER_MINUTE`]); [`SynthesisOptions::speed`] scales it.
    pub words_per_minute: Option<u32>,
    /// The pitch (0 to 99; espeak-ng's default is 50).
    pub pitch: Option<u8>,
    /// How long to wait for the first audio, and between two reads of it (10 s).
    pub timeout: Duration,
    /// The instance name ("espeak").
    pub id: String,
}

impl Default for EspeakConfig {
    fn default() -> Self {
        Self {
            program: PathBuf::from(DEFAULT_PROGRAM),
            voice: None,
            words_per_minute: None,
            pitch: None,
            timeout: Duration::from_secs(10),
            id: "espeak".to_owned(),
        }
    }
}

impl EspeakConfig {
    /// `espeak-ng` from `PATH`, with its default voice, rate and pitch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the program.
    #[must_use]
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Sets the voice.
    #[must_use]
    pub fn with_voice(mut self, voice: impl Into<String>) -> Self {
        self.voice = Some(voice.into());
        self
    }

    /// Sets the speaking rate.
    #[must_use]
    pub fn with_words_per_minute(mut self, words_per_minute: u32) -> Self {
        self.words_per_minute = Some(words_per_minute);
        self
    }

    /// Sets the pitch.
    #[must_use]
    pub fn with_pitch(mut self, pitch: u8) -> Self {
        self.pitch = Some(pitch);
        self
    }

    /// Sets the timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the instance name.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }
}

/// Synthesis by the local `espeak-ng` program.
///
/// [`formats`](TextToSpeech::formats): PCM16 at 16, 24, 8 and 48 kHz, 8 kHz mu-law and
/// A-law (any mono PCM16, mu-law or A-law rate is accepted; the program's 22 050 Hz is
/// resampled); without a format in the options the audio is 16 kHz PCM16. Options read: [`voice`](SynthesisOptions::voice),
/// [`language`](SynthesisOptions::language) (as the voice when no voice is set),
/// [`speed`](SynthesisOptions::speed), [`format`](SynthesisOptions::format). Its
/// [`price`](TextToSpeech::price) is zero.
#[derive(Debug, Clone)]
pub struct EspeakTts {
    config: EspeakConfig,
}

impl EspeakTts {
    /// A synthesiser for `config`. The program is not run until it is used.
    ///
    /// # Errors
    /// [`SpeechError::InvalidInput`] when the voice, rate or pitch is out of range.
    pub fn new(config: EspeakConfig) -> Result<Self, SpeechError> {
        if let Some(voice) = &config.voice {
            check_voice(voice)?;
        }
        if let Some(wpm) = config.words_per_minute {
            check_rate(wpm)?;
        }
        if let Some(pitch) = config.pitch
            && pitch > 99
        {
            return Err(SpeechError::InvalidInput {
                message: format!("the espeak-ng pitch {pitch} is not within 0 and 99"),
            });
        }
        Ok(Self { config })
    }

    /// The configuration.
    pub fn config(&self) -> &EspeakConfig {
        &self.config
    }

    /// Whether the program runs (`espeak-ng --version` succeeds within the timeout).
    pub async fn available(&self) -> bool {
        let run = Command::new(&self.config.program)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status();
        matches!(
            tokio::time::timeout(self.config.timeout, run).await,
            Ok(Ok(status)) if status.success()
        )
    }

    fn command(&self, options: &SynthesisOptions) -> Result<Command, SpeechError> {
        let mut command = Command::new(&self.config.program);
        command.args(["--stdout", "--stdin", "-b", "1"]);
        let voice = options
            .voice
            .clone()
            .or_else(|| self.config.voice.clone())
            .or_else(|| options.language.as_ref().map(|l| l.to_ascii_lowercase()));
        if let Some(voice) = voice {
            check_voice(&voice)?;
            command.arg("-v").arg(voice);
        }
        let base = self.config.words_per_minute;
        let wpm = match (base, options.speed) {
            (base, Some(speed)) => {
                if !(speed.is_finite() && speed > 0.0) {
                    return Err(SpeechError::InvalidInput {
                        message: format!("the speaking rate {speed} is not a positive number"),
                    });
                }
                let base = f64::from(base.unwrap_or(DEFAULT_WORDS_PER_MINUTE));
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "clamped to espeak-ng's range first"
                )]
                let scaled = (base * f64::from(speed)).round().clamp(80.0, 450.0) as u32;
                Some(scaled)
            }
            (Some(base), None) => Some(base),
            (None, None) => None,
        };
        if let Some(wpm) = wpm {
            command.arg("-s").arg(wpm.to_string());
        }
        if let Some(pitch) = self.config.pitch {
            command.arg("-p").arg(pitch.to_string());
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Ok(command)
    }

    async fn start(
        &self,
        text: &str,
        options: &SynthesisOptions,
    ) -> Result<AudioStream, SpeechError> {
        if text.trim().is_empty() {
            return Err(SpeechError::InvalidInput {
                message: "there is no text to speak".to_owned(),
            });
        }
        let format = options.format.unwrap_or(AudioFormat::PCM16_16K_MONO);
        if !synth::supports(format) {
            return Err(SpeechError::UnsupportedFormat(format));
        }
        let program = self.config.program.display().to_string();
        let mut child = self
            .command(options)?
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    SpeechError::Unsupported {
                        message: format!(
                            "local synthesis needs the espeak-ng program, and `{program}` could not be run ({e}); install espeak-ng (`apt-get install espeak-ng`) or configure its path"
                        ),
                    }
                }
                _ => SpeechError::Service {
                    status: 0,
                    message: format!("could not start `{program}`: {e}"),
                },
            })?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SpeechError::Service {
                status: 0,
                message: format!("`{program}` started without its pipes"),
            });
        };
        // The text is written by a task of its own, so a long text cannot fill the pipe
        // while nobody reads the audio; the task ends once the text is written or the
        // program is gone.
        let mut input = text.replace('\0', " ");
        input.push('\n');
        tokio::spawn(async move {
            let _ = stdin.write_all(input.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
        let mut process = Process {
            child,
            stdout,
            stderr: Some(stderr),
            program,
            timeout: self.config.timeout,
            buf: vec![0; 8 << 10].into_boxed_slice(),
        };
        let (rate, remaining, rest) = process.header().await?;
        let mut framer = PcmFramer::new(rate, format)?;
        let mut ready = Vec::new();
        let take = rest
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        framer.push(&rest[..take], &mut ready)?;
        let state = Speech {
            process,
            framer,
            remaining: remaining - take as u64,
            ready: ready.into(),
            done: false,
        };
        Ok(futures_util::stream::unfold(state, Speech::next).boxed())
    }
}

impl TextToSpeech for EspeakTts {
    fn id(&self) -> &str {
        &self.config.id
    }

    fn formats(&self) -> Vec<AudioFormat> {
        synth::framed_formats(AudioFormat::PCM16_16K_MONO)
    }

    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        options: &'a SynthesisOptions,
    ) -> BoxFuture<'a, Result<AudioStream, SpeechError>> {
        Box::pin(self.start(text, options))
    }

    fn price(&self) -> Option<SpeechPrice> {
        Some(SpeechPrice::per_million_characters(0.0))
    }
}

/// A voice name espeak-ng can take: letters, digits and `-_+.`, not starting with `-`.
fn check_voice(voice: &str) -> Result<(), SpeechError> {
    let ok = !voice.is_empty()
        && voice.len() <= 64
        && !voice.starts_with('-')
        && voice
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '.'));
    if ok {
        Ok(())
    } else {
        Err(SpeechError::InvalidInput {
            message: format!("`{voice}` is not an espeak-ng voice name"),
        })
    }
}

fn check_rate(wpm: u32) -> Result<(), SpeechError> {
    if (80..=450).contains(&wpm) {
        Ok(())
    } else {
        Err(SpeechError::InvalidInput {
            message: format!("the espeak-ng rate {wpm} words per minute is not within 80 and 450"),
        })
    }
}

/// The running program.
#[derive(Debug)]
struct Process {
    child: Child,
    stdout: ChildStdout,
    stderr: Option<ChildStderr>,
    program: String,
    timeout: Duration,
    buf: Box<[u8]>,
}

impl Process {
    /// Reads the next bytes of output into `buf`: how many, 0 at its end.
    async fn read(&mut self) -> Result<usize, SpeechError> {
        let read = tokio::time::timeout(self.timeout, self.stdout.read(&mut self.buf))
            .await
            .map_err(|_| SpeechError::Timeout(self.timeout))?
            .map_err(|e| crate::client::transport(format!("reading `{}`", self.program), e))?;
        Ok(read)
    }

    /// Reads the WAV header: the sample rate, the data length (`u64::MAX` for "until the
    /// end"), and the audio bytes read past the header.
    async fn header(&mut self) -> Result<(u32, u64, Vec<u8>), SpeechError> {
        let mut head = Vec::new();
        loop {
            match parse_header(&head) {
                Ok(Some(header)) => {
                    let rest = head[header.data_offset..].to_vec();
                    return Ok((header.sample_rate, header.data_len, rest));
                }
                Ok(None) if head.len() > MAX_HEADER => {
                    return Err(self.failure("wrote no WAV audio").await);
                }
                Ok(None) => {}
                Err(why) => return Err(self.failure(why).await),
            }
            let read = self.read().await?;
            if read == 0 {
                return Err(self.failure("wrote no audio").await);
            }
            head.extend_from_slice(&self.buf[..read]);
        }
    }

    /// The error for a run that went wrong: what went wrong, the exit status and the
    /// program's own message.
    async fn failure(&mut self, what: &str) -> SpeechError {
        let mut message = format!("`{}` {what}", self.program);
        if let Ok(Ok(status)) = tokio::time::timeout(self.timeout, self.child.wait()).await
            && !status.success()
        {
            message.push_str(&format!(" ({status})"));
        }
        let stderr = self.stderr_text().await;
        if !stderr.is_empty() {
            message.push_str(": ");
            message.push_str(&stderr);
        }
        SpeechError::Service { status: 0, message }
    }

    async fn stderr_text(&mut self) -> String {
        let Some(stderr) = self.stderr.take() else {
            return String::new();
        };
        let mut text = Vec::new();
        let _ =
            tokio::time::timeout(self.timeout, read_bounded(stderr, MAX_STDERR, &mut text)).await;
        String::from_utf8_lossy(&text).trim().to_owned()
    }
}

async fn read_bounded(
    reader: impl AsyncRead + Unpin,
    limit: u64,
    out: &mut Vec<u8>,
) -> std::io::Result<usize> {
    reader.take(limit).read_to_end(out).await
}

/// What the start of a WAV file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WavHeader {
    sample_rate: u32,
    /// Bytes of audio, `u64::MAX` for "until the end".
    data_len: u64,
    /// Where the audio starts.
    data_offset: usize,
}

/// Parses a mono PCM16 WAV header up to its `data` chunk: `Ok(None)` when more bytes are
/// needed.
fn parse_header(bytes: &[u8]) -> Result<Option<WavHeader>, &'static str> {
    if bytes.len() < 12 {
        return Ok(None);
    }
    if &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("wrote something that is not a WAV file");
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let mut at = 12;
    let mut rate = None;
    loop {
        if bytes.len() < at + 8 {
            return Ok(None);
        }
        let id = &bytes[at..at + 4];
        let len = u32_at(at + 4);
        let body = at + 8;
        if id == b"data" {
            let Some(sample_rate) = rate else {
                return Err("wrote a WAV file without a format chunk before its audio");
            };
            let data_len = if len == 0 || len >= STREAMING_DATA_LEN {
                u64::MAX
            } else {
                u64::from(len)
            };
            return Ok(Some(WavHeader {
                sample_rate,
                data_len,
                data_offset: body,
            }));
        }
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if id == b"fmt " {
            if len < 16 {
                return Err("wrote a WAV format chunk that is too short");
            }
            if bytes.len() < body + 16 {
                return Ok(None);
            }
            let tag = u16_at(body);
            let channels = u16_at(body + 2);
            let sample_rate = u32_at(body + 4);
            let bits = u16_at(body + 14);
            if !matches!(tag, 1 | 0xfffe) || channels != 1 || bits != 16 || sample_rate == 0 {
                return Err("wrote WAV audio that is not mono PCM16");
            }
            rate = Some(sample_rate);
        }
        at = body
            .checked_add(len)
            .and_then(|end| end.checked_add(len & 1))
            .ok_or("wrote a WAV chunk of an impossible length")?;
        if at > MAX_HEADER {
            return Err("wrote a WAV header that is too long");
        }
    }
}

/// The state of a run being turned into frames.
struct Speech {
    process: Process,
    framer: PcmFramer,
    /// Audio bytes still to come, per the header.
    remaining: u64,
    ready: VecDeque<AudioFrame>,
    done: bool,
}

impl Speech {
    async fn next(mut self) -> Option<(Result<AudioFrame, SpeechError>, Self)> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Some((Ok(frame), self));
            }
            if self.done {
                return None;
            }
            let mut frames = Vec::new();
            let step = match self.process.read().await {
                Ok(read) if read > 0 && self.remaining > 0 => {
                    let take = read.min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                    self.remaining -= take as u64;
                    let bytes = &self.process.buf[..take];
                    self.framer.push(bytes, &mut frames)
                }
                Ok(_) => {
                    self.done = true;
                    self.end(&mut frames).await
                }
                Err(error) => Err(error),
            };
            if let Err(error) = step {
                self.done = true;
                self.ready.clear();
                return Some((Err(error), self));
            }
            self.ready.extend(frames);
        }
    }

    /// The end of the audio: the last frames, once the program has exited well.
    async fn end(&mut self, frames: &mut Vec<AudioFrame>) -> Result<(), SpeechError> {
        let timeout = self.process.timeout;
        match tokio::time::timeout(timeout, self.process.child.wait()).await {
            Ok(Ok(status)) if status.success() => self.framer.finish(frames),
            Ok(Ok(status)) => Err(self.process.failure(&format!("stopped ({status})")).await),
            Ok(Err(e)) => Err(crate::client::transport(
                format!("waiting for `{}`", self.process.program),
                e,
            )),
            Err(_) => Err(SpeechError::Timeout(timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(rate: u32, data_len: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&36_u32.to_le_bytes());
        h.extend_from_slice(b"WAVE");
        h.extend_from_slice(b"LIST");
        h.extend_from_slice(&3_u32.to_le_bytes());
        h.extend_from_slice(b"abc\0");
        h.extend_from_slice(b"fmt ");
        h.extend_from_slice(&16_u32.to_le_bytes());
        h.extend_from_slice(&1_u16.to_le_bytes());
        h.extend_from_slice(&1_u16.to_le_bytes());
        h.extend_from_slice(&rate.to_le_bytes());
        h.extend_from_slice(&(rate * 2).to_le_bytes());
        h.extend_from_slice(&2_u16.to_le_bytes());
        h.extend_from_slice(&16_u16.to_le_bytes());
        h.extend_from_slice(b"data");
        h.extend_from_slice(&data_len.to_le_bytes());
        h
    }

    #[test]
    fn headers_parse_in_pieces_and_streaming_lengths_are_open() {
        let h = header(22_050, 0x7fff_f000);
        for cut in 0..h.len() {
            assert_eq!(parse_header(&h[..cut]), Ok(None), "{cut}");
        }
        let parsed = parse_header(&h).unwrap().unwrap();
        assert_eq!(parsed.sample_rate, 22_050);
        assert_eq!(parsed.data_len, u64::MAX);
        assert_eq!(parsed.data_offset, h.len());
        assert_eq!(
            parse_header(&header(16_000, 100))
                .unwrap()
                .unwrap()
                .data_len,
            100
        );
        assert!(parse_header(b"RIFX\0\0\0\0WAVE").is_err());
    }

    #[test]
    fn voices_cannot_be_options() {
        assert!(check_voice("en-us").is_ok());
        assert!(check_voice("fr+f3").is_ok());
        assert!(check_voice("--stdout").is_err());
        assert!(check_voice("en us").is_err());
        assert!(EspeakTts::new(EspeakConfig::new().with_pitch(100)).is_err());
        assert!(EspeakTts::new(EspeakConfig::new().with_words_per_minute(10)).is_err());
    }
}
