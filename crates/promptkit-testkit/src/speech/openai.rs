//! The OpenAI speech protocol: `POST /v1/audio/transcriptions` (multipart) and
//! `POST /v1/audio/speech` (JSON in, raw audio out), as OpenAI and the OpenAI-compatible
//! local servers speak them.
//!
//! - A client's base URL is `{http_url}/v1`, as OpenAI's is `https://api.openai.com/v1`.
//! - Every request needs `Authorization: Bearer <key>` (any key); without it the answer is
//!   OpenAI's 401 `{"error": {"message", "type", "param", "code"}}`.
//! - **Transcriptions** read the uploaded WAV's header (sample rate, channels, sample size,
//!   data length) for the audio's duration and answer with the script's segments that start
//!   within it: `json` (`{"text", "usage"}`; the usage is a duration for `whisper*` models,
//!   tokens otherwise, as OpenAI does), `verbose_json` (`task`, `language`, `duration`,
//!   `text`, `segments`, and `words` when `timestamp_granularities[]` has `word`) or `text`.
//!   The multipart fields are recorded as one JSON text message (a field sent more than
//!   once as an array; the file as `{"filename", "content_type", "bytes"}`), the file as a
//!   binary message of its length.
//! - **Speech** records the JSON body as a text message and answers `response_format:
//!   "pcm"` with [`synth_pcm16`] of the input's characters at 24 kHz, in body chunks of at
//!   most 100 ms. The chunks are an odd number of bytes, so samples are split across them:
//!   a client must join them. Other formats are refused with a 400.
//! - Faults: `Status` refuses with OpenAI's error JSON for that status and `Retry-After`;
//!   `VendorError` and `CloseMidStream` cut the body after its first chunk (a transcription's
//!   first half) and drop the connection; `SlowFirstChunk` delays the transcription's
//!   response, or the first chunk of speech after the headers; `Stall` sends nothing after
//!   the first chunk and keeps the connection open.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use futures_util::StreamExt as _;
use futures_util::stream::{self, BoxStream};
use serde_json::{Map, Value, json};

use super::{AudioClock, Fault, Heard, RecordedMessage, Shared, Transcriber, synth_pcm16};

/// The largest request body read (OpenAI takes 25 MB uploads).
const MAX_BODY: usize = 64 << 20;
/// OpenAI's limit on the text of one speech request.
const MAX_INPUT_CHARS: usize = 4096;
/// The rate of the `pcm` speech format.
const PCM_RATE: u32 = 24_000;
/// Bytes per speech body chunk: just under 100 ms of 24 kHz PCM16, and odd.
const SPEECH_CHUNK: usize = 4_799;

pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/audio/speech", post(speech))
        .with_state(shared)
}

async fn transcriptions(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let index = shared.record(&parts);
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return too_large();
    };
    let Some(form) = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|content_type| parse_multipart(content_type, &body))
    else {
        shared.message(index, RecordedMessage::Binary(body.len()));
        return invalid("The request must be multipart/form-data.", None);
    };
    let mut fields = Map::new();
    let mut file = None;
    for part in &form {
        if part.name == "file" {
            fields.insert(
                "file".to_owned(),
                json!({
                    "filename": part.filename,
                    "content_type": part.content_type,
                    "bytes": part.data.len(),
                }),
            );
            file = Some(part);
        } else {
            let value = Value::String(String::from_utf8_lossy(&part.data).into_owned());
            match fields.get_mut(&part.name) {
                Some(Value::Array(values)) => values.push(value),
                Some(first) => *first = Value::Array(vec![first.take(), value]),
                None => {
                    fields.insert(part.name.clone(), value);
                }
            }
        }
    }
    shared.message(
        index,
        RecordedMessage::Text(Value::Object(fields.clone()).to_string()),
    );
    if let Some(file) = file {
        shared.message(index, RecordedMessage::Binary(file.data.len()));
    }
    if let Some(refused) = unauthorized(&parts.headers) {
        return refused;
    }
    let script = shared.next_script();
    if let Some(Fault::Status {
        status,
        retry_after_secs,
    }) = script.fault
    {
        return status_error(status, retry_after_secs);
    }
    let Some(file) = file else {
        return invalid("Missing required parameter: 'file'.", Some("file"));
    };
    let field = |name: &str| fields.get(name).and_then(Value::as_str);
    let Some(model) = field("model") else {
        return invalid("Missing required parameter: 'model'.", Some("model"));
    };
    let Some(duration) = wav_duration(&file.data) else {
        return invalid(
            "Invalid file format. The test kit reads WAV files only.",
            Some("file"),
        );
    };
    let mut transcriber = Transcriber::new(script.segments.clone());
    let heard: Vec<usize> = transcriber
        .flush(duration)
        .into_iter()
        .filter_map(|h| match h {
            Heard::Final { index, .. } => Some(index),
            Heard::Partial(_) => None,
        })
        .collect();
    let segments: Vec<_> = heard
        .iter()
        .filter_map(|&i| transcriber.segments().get(i))
        .collect();
    let text = segments
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let granularities: Vec<&str> = match fields.get("timestamp_granularities[]") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let seconds = duration.as_secs_f64();
    let billed = seconds.ceil();
    let (content_type, answer) = match field("response_format").unwrap_or("json") {
        "json" => {
            let usage = if model.starts_with("whisper") {
                json!({"type": "duration", "seconds": billed})
            } else {
                let words = text.split_whitespace().count();
                let audio_tokens = (seconds * 10.0).ceil();
                json!({
                    "type": "tokens",
                    "input_tokens": audio_tokens,
                    "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                    "output_tokens": words,
                    "total_tokens": audio_tokens + words as f64,
                })
            };
            (
                "application/json",
                json!({"text": text, "usage": usage}).to_string(),
            )
        }
        "verbose_json" => {
            let mut answer = json!({
                "task": "transcribe",
                "language": field("language").map_or("english", language_name),
                "duration": seconds,
                "text": text,
                "usage": {"type": "duration", "seconds": billed},
            });
            if granularities.is_empty() || granularities.contains(&"segment") {
                answer["segments"] = segments
                    .iter()
                    .zip(0..)
                    .map(|(s, id)| {
                        json!({
                            "id": id, "seek": 0, "start": s.start.as_secs_f64(),
                            "end": s.end.as_secs_f64(), "text": s.text, "tokens": [],
                            "temperature": 0.0, "avg_logprob": -0.1,
                            "compression_ratio": 1.0, "no_speech_prob": 0.01,
                        })
                    })
                    .collect();
            }
            if granularities.contains(&"word") {
                answer["words"] = segments
                    .iter()
                    .flat_map(|s| s.words())
                    .map(|(word, start, end)| {
                        json!({"word": word, "start": start.as_secs_f64(), "end": end.as_secs_f64()})
                    })
                    .collect();
            }
            ("application/json", answer.to_string())
        }
        "text" => ("text/plain; charset=utf-8", format!("{text}\n")),
        other => {
            return invalid(
                &format!("The test kit does not answer response_format '{other}'."),
                Some("response_format"),
            );
        }
    };
    let answer = Bytes::from(answer);
    let (first, rest) = answer.split_at(answer.len() / 2);
    let chunks = vec![Bytes::copy_from_slice(first), Bytes::copy_from_slice(rest)];
    if let Some(Fault::SlowFirstChunk(delay)) = script.fault {
        tokio::time::sleep(delay).await;
    }
    streamed(content_type, chunks, script.fault.as_ref(), false)
}

async fn speech(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let index = shared.record(&parts);
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return too_large();
    };
    shared.message(
        index,
        RecordedMessage::Text(String::from_utf8_lossy(&body).into_owned()),
    );
    if let Some(refused) = unauthorized(&parts.headers) {
        return refused;
    }
    let script = shared.next_script();
    if let Some(Fault::Status {
        status,
        retry_after_secs,
    }) = script.fault
    {
        return status_error(status, retry_after_secs);
    }
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        return invalid("We could not parse the JSON body of your request.", None);
    };
    for required in ["model", "input", "voice"] {
        if json.get(required).is_none() {
            return invalid(
                &format!("Missing required parameter: '{required}'."),
                Some(required),
            );
        }
    }
    let Some(input) = json["input"].as_str() else {
        return invalid("'input' must be a string.", Some("input"));
    };
    let chars = input.chars().count();
    if chars > MAX_INPUT_CHARS {
        return invalid(
            &format!("'input' is too long: {chars} characters, at most {MAX_INPUT_CHARS}."),
            Some("input"),
        );
    }
    match json.get("response_format").and_then(Value::as_str) {
        Some("pcm") => {}
        other => {
            return invalid(
                &format!(
                    "The test kit speaks response_format 'pcm' only, not {}.",
                    other.unwrap_or("the default 'mp3'")
                ),
                Some("response_format"),
            );
        }
    }
    let audio = synth_pcm16(chars, PCM_RATE);
    let chunks = audio
        .chunks(SPEECH_CHUNK)
        .map(Bytes::copy_from_slice)
        .collect();
    streamed("audio/pcm", chunks, script.fault.as_ref(), true)
}

/// A body of `chunks`, shaped by `fault` after its first chunk; `slow_first` applies a
/// [`Fault::SlowFirstChunk`] to the first chunk (speech: after the headers went out).
fn streamed(
    content_type: &str,
    chunks: Vec<Bytes>,
    fault: Option<&Fault>,
    slow_first: bool,
) -> Response {
    let delay = match fault {
        Some(Fault::SlowFirstChunk(delay)) if slow_first => *delay,
        _ => Duration::ZERO,
    };
    let mut chunks = chunks.into_iter();
    let first = chunks.next();
    let head = stream::once(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        first
    })
    .filter_map(|chunk| async move { chunk.map(Ok) });
    let tail: BoxStream<'static, Result<Bytes, std::io::Error>> = match fault {
        // The pause lets the first chunk go out (hyper writes what it has when the body
        // is pending) before the error drops the connection.
        Some(Fault::VendorError | Fault::CloseMidStream) => stream::once(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the test kit cut the body short",
            ))
        })
        .boxed(),
        Some(Fault::Stall) => stream::pending().boxed(),
        _ => stream::iter(chunks.map(Ok)).boxed(),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(head.chain(tail)))
        .unwrap_or_default()
}

/// OpenAI's 401 when there is no bearer key.
fn unauthorized(headers: &HeaderMap) -> Option<Response> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|key| !key.is_empty());
    key.is_none().then(|| {
        error_response(
            401,
            None,
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            "invalid_request_error",
            None,
        )
    })
}

/// The error OpenAI sends with `status`.
fn status_error(status: u16, retry_after_secs: Option<u64>) -> Response {
    let (message, kind, code) = match status {
        401 => (
            "Incorrect API key provided: sk-***. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        403 => (
            "Country, region, or territory not supported",
            "request_forbidden",
            Some("unsupported_country_region_territory"),
        ),
        429 => (
            "Rate limit reached for requests. Please try again later.",
            "requests",
            Some("rate_limit_exceeded"),
        ),
        400..=499 => ("Invalid request.", "invalid_request_error", None),
        _ => (
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
    };
    error_response(status, retry_after_secs, message, kind, code)
}

fn invalid(message: &str, param: Option<&str>) -> Response {
    error_body(400, None, message, "invalid_request_error", None, param)
}

fn too_large() -> Response {
    error_body(
        413,
        None,
        "The request is too large for the test kit.",
        "invalid_request_error",
        None,
        None,
    )
}

fn error_response(
    status: u16,
    retry_after_secs: Option<u64>,
    message: &str,
    kind: &str,
    code: Option<&str>,
) -> Response {
    error_body(status, retry_after_secs, message, kind, code, None)
}

fn error_body(
    status: u16,
    retry_after_secs: Option<u64>,
    message: &str,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
) -> Response {
    let body = json!({
        "error": {"message": message, "type": kind, "param": param, "code": code}
    });
    let mut response = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(secs) = retry_after_secs {
        response = response.header(header::RETRY_AFTER, secs.to_string());
    }
    response
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

/// The English name OpenAI's `verbose_json` gives a language code.
fn language_name(code: &str) -> &'static str {
    match code {
        "de" => "german",
        "fr" => "french",
        "es" => "spanish",
        "it" => "italian",
        "ja" => "japanese",
        "nl" => "dutch",
        "pt" => "portuguese",
        _ => "english",
    }
}

/// The duration of a WAV file's audio, from its header: the `fmt ` chunk's rate, channels
/// and sample size, and the `data` chunk's length (at most what was uploaded).
pub(crate) fn wav_duration(bytes: &[u8]) -> Option<Duration> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let mut at = 12;
    let mut format = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = usize::try_from(u32_at(at + 4)?).ok()?;
        let body = at + 8;
        if id == b"fmt " {
            let channels = u16_at(body + 2)?;
            let rate = u32_at(body + 4)?;
            let bits = u16_at(body + 14)?;
            format = Some((rate, channels, bits.div_ceil(8)));
        } else if id == b"data" {
            let (rate, channels, bytes_per_sample) = format?;
            let available = bytes.len() - body;
            let mut clock = AudioClock::new(rate, channels, bytes_per_sample);
            return Some(clock.advance(len.min(available)));
        }
        at = body.checked_add(len)?.checked_add(len & 1)?;
    }
    None
}

/// One part of a multipart form.
#[derive(Debug)]
struct Part {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    data: Vec<u8>,
}

/// Parses a `multipart/form-data` body (RFC 7578): `None` when it is not one.
fn parse_multipart(content_type: &str, body: &[u8]) -> Option<Vec<Part>> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let boundary = params.split(';').find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
    })?;
    let delimiter = format!("--{boundary}").into_bytes();
    let next_delimiter = format!("\r\n--{boundary}").into_bytes();
    let mut at = find(body, &delimiter, 0)? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Some(parts);
        }
        if body.get(at..at + 2) != Some(b"\r\n") {
            return None;
        }
        at += 2;
        let headers_end = find(body, b"\r\n\r\n", at)?;
        let headers = std::str::from_utf8(&body[at..headers_end]).ok()?;
        let data_start = headers_end + 4;
        let data_end = find(body, &next_delimiter, data_start)?;
        let mut part = Part {
            name: String::new(),
            filename: None,
            content_type: None,
            data: body[data_start..data_end].to_vec(),
        };
        for line in headers.split("\r\n") {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("content-disposition") {
                for param in value.split(';').skip(1) {
                    let Some((key, value)) = param.split_once('=') else {
                        continue;
                    };
                    let value = value.trim().trim_matches('"').to_owned();
                    match key.trim() {
                        "name" => part.name = value,
                        "filename" => part.filename = Some(value),
                        _ => {}
                    }
                }
            } else if name.trim().eq_ignore_ascii_case("content-type") {
                part.content_type = Some(value.trim().to_owned());
            }
        }
        parts.push(part);
        at = data_end + next_delimiter.len();
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_forms_parse() {
        let body = b"--xyz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--x\r\n--xyz--\r\n";
        let parts = parse_multipart("multipart/form-data; boundary=xyz", body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "model");
        assert_eq!(parts[0].data, b"whisper-1");
        assert_eq!(parts[1].filename.as_deref(), Some("a.wav"));
        assert_eq!(parts[1].content_type.as_deref(), Some("audio/wav"));
        assert_eq!(parts[1].data, b"RIFF\r\n--x");
        assert!(parse_multipart("application/json", body).is_none());
    }

    #[test]
    fn wav_headers_give_the_duration() {
        let mut wav = Vec::new();
        wav.extend_from_slice(b"RIFF\0\0\0\0WAVEfmt ");
        wav.extend_from_slice(&16_u32.to_le_bytes());
        wav.extend_from_slice(&1_u16.to_le_bytes());
        wav.extend_from_slice(&1_u16.to_le_bytes());
        wav.extend_from_slice(&16_000_u32.to_le_bytes());
        wav.extend_from_slice(&32_000_u32.to_le_bytes());
        wav.extend_from_slice(&2_u16.to_le_bytes());
        wav.extend_from_slice(&16_u16.to_le_bytes());
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&16_000_u32.to_le_bytes());
        wav.extend_from_slice(&[0; 16_000]);
        assert_eq!(wav_duration(&wav), Some(Duration::from_millis(500)));
        assert_eq!(wav_duration(b"ID3"), None);
    }
}
