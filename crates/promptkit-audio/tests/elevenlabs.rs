//! The ElevenLabs client against the test kit's ElevenLabs server.

#![cfg(feature = "elevenlabs")]

use std::time::Duration;

use futures_util::StreamExt as _;
use promptkit_audio::client::{ApiKey, Connection, RetryPolicy, Timeouts, TlsRoots};
use promptkit_audio::elevenlabs::{ElevenLabsConfig, ElevenLabsTts};
use promptkit_audio::g711;
use promptkit_core::{
    AudioEncoding, AudioFormat, SpeechError, SpeechPrice, SynthesisOptions, TextToSpeech, TtsEvent,
    TtsEventStream, Word,
};
use promptkit_testkit::speech::{
    Fault, MS_PER_CHAR, Script, SpeechServer, VENDOR_ERROR, Vendor, synth_pcm16, words_of,
};

const KEY: &str = "xi_test_key_4567";

fn connection(server: &SpeechServer) -> Connection {
    Connection::new(server.ws_url())
        .with_api_key(ApiKey::new(KEY))
        .with_timeouts(
            Timeouts::default()
                .with_connect(Duration::from_secs(5))
                .with_first_byte(Duration::from_millis(400))
                .with_idle(Duration::from_millis(400)),
        )
        .with_retry(
            RetryPolicy::default()
                .with_backoff(Duration::from_millis(5), Duration::from_millis(20)),
        )
}

fn client_with(connection: Connection) -> ElevenLabsTts {
    ElevenLabsTts::new(ElevenLabsConfig::new(ApiKey::new(KEY)).with_connection(connection)).unwrap()
}

async fn start() -> (SpeechServer, ElevenLabsTts) {
    let server = SpeechServer::start(Vendor::ElevenLabs).await.unwrap();
    let client = client_with(connection(&server));
    (server, client)
}

/// Every event until the stream ends; an error fails the test.
async fn collect(events: &mut TtsEventStream) -> Vec<TtsEvent> {
    let mut out = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the stream hangs")
    {
        out.push(event.unwrap());
    }
    out
}

/// Events until the first error, which is returned.
async fn error_of(events: &mut TtsEventStream) -> (Vec<TtsEvent>, SpeechError) {
    let mut out = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("the stream hangs")
            .expect("the stream ended without an error");
        match event {
            Ok(event) => out.push(event),
            Err(error) => {
                assert!(events.next().await.is_none(), "an error is terminal");
                return (out, error);
            }
        }
    }
}

fn audio_duration(events: &[TtsEvent]) -> Duration {
    events
        .iter()
        .filter_map(|e| match e {
            TtsEvent::Audio(frame) => frame.duration(),
            _ => None,
        })
        .sum()
}

/// Frames are back to back on the output clock.
fn check_clock(events: &[TtsEvent]) {
    let mut at = Duration::ZERO;
    for event in events {
        if let TtsEvent::Audio(frame) = event {
            assert_eq!(frame.timestamp, Some(at));
            at += frame.duration().unwrap();
        }
    }
}

fn words(events: &[TtsEvent]) -> Vec<Word> {
    events
        .iter()
        .filter_map(|e| match e {
            TtsEvent::Words(words) => Some(words.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn expected_words(chunks: &[&str]) -> Vec<Word> {
    let mut before = 0;
    let mut out = Vec::new();
    for chunk in chunks {
        for (text, start, end) in words_of(chunk, before) {
            out.push(Word::new(text, start, end));
        }
        before += chunk.chars().count();
    }
    out
}

fn chars_ms(text: &str) -> Duration {
    Duration::from_millis(MS_PER_CHAR * text.chars().count() as u64)
}

async fn wait_closed(server: &SpeechServer, index: usize) {
    for _ in 0..500 {
        if server.requests()[index].closed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server never saw connection {index} close");
}

#[tokio::test]
async fn a_streamed_answer_is_spoken_with_its_words() {
    let (server, client) = start().await;
    let mut session = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    let chunks = ["Hello there, ", "how are you ", "today? Fine."];
    for chunk in chunks {
        session.sender.send((*chunk).to_owned()).await.unwrap();
    }
    session.sender.finish().await.unwrap();
    let events = collect(&mut session.events).await;
    assert_eq!(events.last(), Some(&TtsEvent::Done));
    assert_eq!(audio_duration(&events), chars_ms(&chunks.concat()));
    check_clock(&events);
    assert_eq!(words(&events), expected_words(&chunks));
    for event in &events {
        if let TtsEvent::Audio(frame) = event {
            assert_eq!(frame.format, AudioFormat::PCM16_24K_MONO);
            assert!(frame.duration().unwrap() <= Duration::from_millis(100));
        }
    }
    assert!(matches!(
        session.sender.send("more".to_owned()).await,
        Err(SpeechError::Closed)
    ));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_flush_is_answered_after_its_audio_and_the_session_goes_on() {
    let (_server, client) = start().await;
    let mut session = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    session
        .sender
        .send("First part. ".to_owned())
        .await
        .unwrap();
    session.sender.flush().await.unwrap();
    let mut before = Vec::new();
    loop {
        let event = session.events.next().await.unwrap().unwrap();
        if event == TtsEvent::Flushed {
            break;
        }
        assert_ne!(event, TtsEvent::Done);
        before.push(event);
    }
    assert_eq!(audio_duration(&before), chars_ms("First part. "));
    session.sender.send("Second.".to_owned()).await.unwrap();
    session.sender.finish().await.unwrap();
    let after = collect(&mut session.events).await;
    assert_eq!(after.last(), Some(&TtsEvent::Done));
    assert_eq!(audio_duration(&after), chars_ms("Second."));
    let all: Vec<TtsEvent> = before.into_iter().chain(after).collect();
    check_clock(&all);
    assert_eq!(words(&all), expected_words(&["First part. ", "Second."]));
}

#[tokio::test]
async fn late_audio_of_a_cancelled_session_never_reaches_another() {
    let (server, client) = start().await;
    server.push(Script::fault(Fault::LateAudioAfterCancel));
    let mut first = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    let mut second = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    first
        .sender
        .send("This answer is interrupted by the user. ".to_owned())
        .await
        .unwrap();
    second.sender.send("The other ".to_owned()).await.unwrap();
    let Some(Ok(TtsEvent::Audio(_))) = first.events.next().await else {
        panic!("no audio")
    };
    first.sender.cancel().await.unwrap();
    first.sender.cancel().await.unwrap();
    assert!(
        first.events.next().await.is_none(),
        "a cancel ends the stream"
    );
    assert!(matches!(
        first.sender.send("x".to_owned()).await,
        Err(SpeechError::Closed)
    ));
    second
        .sender
        .send("answer goes on.".to_owned())
        .await
        .unwrap();
    second.sender.finish().await.unwrap();
    let events = collect(&mut second.events).await;
    assert_eq!(
        audio_duration(&events),
        chars_ms("The other answer goes on.")
    );
    assert_eq!(
        events.iter().filter(|e| **e == TtsEvent::Done).count(),
        1,
        "{events:?}"
    );
    check_clock(&events);
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "one socket");
    let messages = requests[0].json_messages();
    let first_id = messages[0]["context_id"].as_str().unwrap().to_owned();
    assert!(
        messages
            .iter()
            .any(|m| m["context_id"] == first_id.as_str() && m["close_context"] == true)
    );
}

#[tokio::test]
async fn concurrent_sessions_share_one_socket() {
    let (server, client) = start().await;
    let client = std::sync::Arc::new(client);
    let texts = [
        ["One, ", "two, ", "three."],
        ["Alpha beta ", "gamma delta ", "epsilon zeta eta."],
    ];
    let tasks: Vec<_> = texts
        .iter()
        .map(|chunks| {
            let client = client.clone();
            let chunks = *chunks;
            tokio::spawn(async move {
                let mut session = client.open_stream(&SynthesisOptions::new()).await.unwrap();
                for chunk in chunks {
                    session.sender.send(chunk.to_owned()).await.unwrap();
                    tokio::task::yield_now().await;
                }
                session.sender.finish().await.unwrap();
                let events = collect(&mut session.events).await;
                (chunks, events)
            })
        })
        .collect();
    for task in tasks {
        let (chunks, events) = task.await.unwrap();
        assert_eq!(audio_duration(&events), chars_ms(&chunks.concat()));
        assert_eq!(words(&events), expected_words(&chunks));
        check_clock(&events);
    }
    assert_eq!(server.requests().len(), 1, "the server saw one connection");
}

#[tokio::test]
async fn the_wire_form_is_elevenlabs() {
    let (server, _) = start().await;
    let client = ElevenLabsTts::new(
        ElevenLabsConfig::new(ApiKey::new(KEY))
            .with_connection(connection(&server))
            .with_model("eleven-test")
            .with_voice("voice-1")
            .with_extra("voice_settings", serde_json::json!({"stability": 0.4})),
    )
    .unwrap();
    let options = SynthesisOptions::new()
        .with_language("de")
        .with_speed(1.1)
        .with_format(AudioFormat::pcm16(16_000, 1))
        .with_extra("apply_text_normalization", "off");
    let mut session = client.open_stream(&options).await.unwrap();
    session.sender.send("Hallo ".to_owned()).await.unwrap();
    session.sender.flush().await.unwrap();
    session.sender.send("Welt.".to_owned()).await.unwrap();
    session.sender.finish().await.unwrap();
    let events = collect(&mut session.events).await;
    assert_eq!(audio_duration(&events), chars_ms("Hallo Welt."));
    assert_eq!(
        events.iter().filter(|e| **e == TtsEvent::Flushed).count(),
        1,
        "{events:?}"
    );

    let request = &server.requests()[0];
    assert_eq!(
        request.path,
        "/v1/text-to-speech/voice-1/multi-stream-input"
    );
    assert_eq!(request.query_param("model_id"), Some("eleven-test"));
    assert_eq!(request.query_param("output_format"), Some("pcm_16000"));
    assert_eq!(request.query_param("language_code"), Some("de"));
    assert_eq!(request.query_param("inactivity_timeout"), Some("180"));
    assert_eq!(request.query_param("auto_mode"), Some("true"));
    assert_eq!(request.query_param("apply_text_normalization"), Some("off"));
    assert_eq!(request.header("xi-api-key"), Some(KEY));
    assert!(!request.query.contains(KEY) && !request.path.contains(KEY));
    let messages = request.json_messages();
    assert_eq!(messages.len(), 6, "{messages:?}");
    let id = messages[0]["context_id"].as_str().unwrap();
    assert!(messages.iter().all(|m| m["context_id"] == id));
    assert_eq!(messages[0]["text"], " ");
    assert_eq!(messages[0]["voice_settings"]["stability"], 0.4);
    assert!((messages[0]["voice_settings"]["speed"].as_f64().unwrap() - 1.1).abs() < 1e-6);
    assert_eq!(messages[1]["text"], "Hallo ");
    assert_eq!(messages[2]["flush"], true);
    assert_eq!(messages[3]["text"], "Welt.");
    assert_eq!(messages[4]["flush"], true);
    assert_eq!(messages[5]["close_context"], true);

    // Another voice is another socket; the same settings share one.
    let other = client
        .open_stream(&SynthesisOptions::new().with_voice("voice-2"))
        .await
        .unwrap();
    let same = client.open_stream(&options).await.unwrap();
    drop((other, same));
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].path,
        "/v1/text-to-speech/voice-2/multi-stream-input"
    );
    assert!(!format!("{client:?}").contains(KEY));
}

#[tokio::test]
async fn a_flush_after_no_new_text_is_answered_at_once() {
    let (_server, client) = start().await;
    let mut session = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    session.sender.flush().await.unwrap();
    assert_eq!(
        session.events.next().await.unwrap().unwrap(),
        TtsEvent::Flushed
    );
    session.sender.send("Split wo".to_owned()).await.unwrap();
    session.sender.send("rds join.".to_owned()).await.unwrap();
    session.sender.finish().await.unwrap();
    let events = collect(&mut session.events).await;
    let texts: Vec<String> = words(&events).into_iter().map(|w| w.text).collect();
    assert_eq!(texts, ["Split", "words", "join."]);
    assert_eq!(
        words(&events)[1],
        Word::new(
            "words",
            Duration::from_millis(60),
            Duration::from_millis(110)
        )
    );
}
#[tokio::test]
async fn refused_handshakes_map_to_their_error_classes() {
    let server = SpeechServer::start(Vendor::ElevenLabs).await.unwrap();
    let no_retry = || connection(&server).with_retry(RetryPolicy::none());
    let open = |connection: Connection| async move {
        client_with(connection)
            .open_stream(&SynthesisOptions::new())
            .await
            .map(drop)
    };

    let mut keyless = no_retry();
    keyless.api_key = None;
    assert!(matches!(open(keyless).await, Err(SpeechError::Auth { .. })));

    server.push(Script::fault(Fault::Status {
        status: 401,
        retry_after_secs: None,
    }));
    assert!(matches!(
        open(no_retry()).await,
        Err(SpeechError::Auth { .. })
    ));

    server.push(Script::fault(Fault::Status {
        status: 429,
        retry_after_secs: Some(3),
    }));
    let Err(SpeechError::RateLimited { retry_after, .. }) = open(no_retry()).await else {
        panic!("not rate limited")
    };
    assert_eq!(retry_after, Some(Duration::from_secs(3)));

    server.push(Script::fault(Fault::Status {
        status: 503,
        retry_after_secs: None,
    }));
    assert!(matches!(
        open(no_retry()).await,
        Err(SpeechError::Service { status: 503, .. })
    ));
    for request in server.requests() {
        assert!(!request.query.contains(KEY));
    }
}

#[tokio::test]
async fn a_refused_handshake_is_retried_before_the_first_audio() {
    let (server, client) = start().await;
    server.push(Script::fault(Fault::Status {
        status: 503,
        retry_after_secs: None,
    }));
    server.push(Script::fault(Fault::Status {
        status: 429,
        retry_after_secs: Some(0),
    }));
    let mut session = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    session
        .sender
        .send("Third time lucky.".to_owned())
        .await
        .unwrap();
    session.sender.finish().await.unwrap();
    let events = collect(&mut session.events).await;
    assert_eq!(audio_duration(&events), chars_ms("Third time lucky."));
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn faults_in_the_stream_map_to_their_error_classes() {
    let (server, client) = start().await;
    let text = "A sentence long enough for several chunks of audio.";

    server.push(Script::fault(Fault::VendorError));
    let mut session = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    session.sender.send(text.to_owned()).await.unwrap();
    session.sender.finish().await.unwrap();
    let (before, error) = error_of(&mut session.events).await;
    assert!(matches!(before[0], TtsEvent::Audio(_)));
    let SpeechError::Service { status, message } = error else {
        panic!("{error:?}")
    };
    assert_eq!(status, 500);
    assert!(message.contains(VENDOR_ERROR), "{message}");
    // The socket itself survived the context's error.
    let mut again = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    again.sender.send("Fine.".to_owned()).await.unwrap();
    again.sender.finish().await.unwrap();
    assert_eq!(
        audio_duration(&collect(&mut again.events).await),
        chars_ms("Fine.")
    );
    assert_eq!(server.requests().len(), 1);

    // The next socket is dropped after its first chunk; the one after that works.
    let (server, client) = start().await;
    server.push(Script::fault(Fault::CloseMidStream));
    let mut session = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    session.sender.send(text.to_owned()).await.unwrap();
    let (_, error) = error_of(&mut session.events).await;
    assert!(matches!(error, SpeechError::Transport { .. }), "{error:?}");
    let mut again = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    again.sender.send("Reopened.".to_owned()).await.unwrap();
    again.sender.finish().await.unwrap();
    assert_eq!(
        audio_duration(&collect(&mut again.events).await),
        chars_ms("Reopened.")
    );
    assert_eq!(server.requests().len(), 2, "the socket was opened again");

    let (server, client) = start().await;
    server.push(Script::fault(Fault::Stall));
    let mut session = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    session.sender.send(text.to_owned()).await.unwrap();
    session.sender.finish().await.unwrap();
    let (before, error) = error_of(&mut session.events).await;
    assert_eq!(
        before
            .iter()
            .filter(|e| matches!(e, TtsEvent::Audio(_)))
            .count(),
        1
    );
    assert!(
        matches!(error, SpeechError::Timeout(d) if d == Duration::from_millis(400)),
        "{error:?}"
    );

    let (server, client) = start().await;
    server.push(Script::fault(Fault::SlowFirstChunk(Duration::from_secs(3))));
    let slow = client_with(
        connection(&server).with_timeouts(
            Timeouts::default()
                .with_first_byte(Duration::from_millis(150))
                .with_idle(Duration::from_secs(20)),
        ),
    );
    drop(client);
    let mut session = slow.open_stream(&SynthesisOptions::new()).await.unwrap();
    session.sender.send(text.to_owned()).await.unwrap();
    let (before, error) = error_of(&mut session.events).await;
    assert!(before.is_empty());
    assert!(
        matches!(error, SpeechError::Timeout(d) if d == Duration::from_millis(150)),
        "{error:?}"
    );
}

#[tokio::test]
async fn no_timeout_runs_while_no_audio_is_owed() {
    let (_server, client) = start().await;
    let mut session = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    // Waiting for the model's first text is not a stall.
    let waited = tokio::time::timeout(Duration::from_millis(700), session.events.next()).await;
    assert!(waited.is_err(), "nothing arrives and nothing fails");
    session.sender.send("Late text.".to_owned()).await.unwrap();
    session.sender.finish().await.unwrap();
    let events = collect(&mut session.events).await;
    assert_eq!(audio_duration(&events), chars_ms("Late text."));
}

#[tokio::test]
async fn dropping_the_client_closes_the_socket() {
    let (server, client) = start().await;
    let mut session = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    session.sender.send("Bye.".to_owned()).await.unwrap();
    session.sender.finish().await.unwrap();
    collect(&mut session.events).await;
    drop(session);
    assert!(
        !server.requests()[0].closed,
        "a finished session keeps the socket"
    );
    drop(client);
    wait_closed(&server, 0).await;

    // A session dropped mid-answer cancels its context; dropping the client and it closes
    // the socket.
    let (server, client) = start().await;
    let mut session = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    session
        .sender
        .send("Something long to say. ".to_owned())
        .await
        .unwrap();
    let _ = session.events.next().await;
    drop(session);
    for _ in 0..500 {
        if server.requests()[0]
            .json_messages()
            .iter()
            .any(|m| m["close_context"] == true)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        server.requests()[0]
            .json_messages()
            .iter()
            .any(|m| m["close_context"] == true)
    );
    drop(client);
    wait_closed(&server, 0).await;
}

#[tokio::test]
async fn mulaw_is_spoken_at_8_khz() {
    let (server, client) = start().await;
    assert!(client.formats().contains(&AudioFormat::MULAW_8K_MONO));
    assert_eq!(client.formats()[0], AudioFormat::PCM16_24K_MONO);
    let options = SynthesisOptions::new().with_format(AudioFormat::MULAW_8K_MONO);
    let text = "Telephone call.";
    let mut session = client.open_stream(&options).await.unwrap();
    session.sender.send(text.to_owned()).await.unwrap();
    session.sender.finish().await.unwrap();
    let events = collect(&mut session.events).await;
    assert_eq!(audio_duration(&events), chars_ms(text));
    let mut bytes = Vec::new();
    for event in &events {
        if let TtsEvent::Audio(frame) = event {
            assert_eq!(frame.format.encoding, AudioEncoding::Mulaw);
            bytes.extend_from_slice(&frame.data);
        }
    }
    let pcm = synth_pcm16(text.chars().count(), 8_000);
    assert_eq!(bytes.len() * 2, pcm.len());
    for (code, expected) in bytes.iter().zip(pcm.chunks_exact(2)) {
        let expected = i32::from(i16::from_le_bytes([expected[0], expected[1]]));
        let decoded = i32::from(g711::decode_ulaw_sample(*code));
        assert!((decoded - expected).abs() <= 300, "{decoded} vs {expected}");
    }
    assert_eq!(
        server.requests()[0].query_param("output_format"),
        Some("ulaw_8000")
    );
    let bad = SynthesisOptions::new().with_format(AudioFormat::pcm16(11_025, 1));
    assert!(matches!(
        client.open_stream(&bad).await,
        Err(SpeechError::UnsupportedFormat(_))
    ));
}

#[tokio::test]
async fn one_shot_synthesis_runs_over_a_session() {
    let (_server, client) = start().await;
    let frames: Vec<_> = client
        .synthesize("One shot.", &SynthesisOptions::new())
        .await
        .unwrap()
        .collect()
        .await;
    let total: Duration = frames
        .iter()
        .map(|f| f.as_ref().unwrap().duration().unwrap())
        .sum();
    assert_eq!(total, chars_ms("One shot."));
    assert_eq!(client.price(), None);
    let priced = ElevenLabsTts::new(
        ElevenLabsConfig::new(ApiKey::new(KEY))
            .with_price(SpeechPrice::per_million_characters(50.0)),
    )
    .unwrap();
    assert_eq!(
        priced.price(),
        Some(SpeechPrice::per_million_characters(50.0))
    );
}

#[tokio::test]
async fn a_session_runs_over_tls() {
    let server = SpeechServer::start_tls(Vendor::ElevenLabs).await.unwrap();
    let roots = TlsRoots::system().with_root_der(server.certificate_der().unwrap().to_vec());
    let client = client_with(connection(&server).with_tls(roots));
    let mut session = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    session
        .sender
        .send("Secure hello.".to_owned())
        .await
        .unwrap();
    session.sender.finish().await.unwrap();
    let events = collect(&mut session.events).await;
    assert_eq!(audio_duration(&events), chars_ms("Secure hello."));
    assert!(server.ws_url().starts_with("wss://"));
}

#[tokio::test]
async fn open_contexts_are_kept_alive_and_unused_sockets_close() {
    let server = SpeechServer::start(Vendor::ElevenLabs).await.unwrap();
    let client = ElevenLabsTts::new(
        ElevenLabsConfig::new(ApiKey::new(KEY))
            .with_connection(connection(&server))
            .with_keep_alive(Duration::from_millis(30))
            .with_idle_close(Duration::ZERO),
    )
    .unwrap();
    let session = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    let keep_alive = |server: &SpeechServer| {
        server.requests()[0]
            .json_messages()
            .iter()
            .any(|m| m["text"] == "" && m.get("flush").is_none())
    };
    for _ in 0..500 {
        if keep_alive(&server) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(keep_alive(&server), "no keep-alive was sent");
    drop(session);
    wait_closed(&server, 0).await;
}

#[tokio::test]
async fn a_flush_the_alignment_never_covers_is_answered_after_the_idle_time() {
    let (server, client) = start().await;
    // The server stalls after its first chunk: the alignment covers 10 of 22 characters.
    server.push(Script::fault(Fault::Stall));
    let mut session = client.open_stream(&SynthesisOptions::new()).await.unwrap();
    session
        .sender
        .send("Hello there everyone, ".to_owned())
        .await
        .unwrap();
    session.sender.flush().await.unwrap();
    let mut events = Vec::new();
    loop {
        let event = session.events.next().await.unwrap().unwrap();
        if event == TtsEvent::Flushed {
            break;
        }
        events.push(event);
    }
    assert_eq!(audio_duration(&events), Duration::from_millis(100));
    // The end of the text is owed, though: a stall then is a timeout.
    session.sender.finish().await.unwrap();
    let (_, error) = error_of(&mut session.events).await;
    assert!(matches!(error, SpeechError::Timeout(_)), "{error:?}");
}

#[tokio::test]
async fn the_server_also_speaks_single_context_stream_input() {
    use base64::Engine as _;
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    let server = SpeechServer::start(Vendor::ElevenLabs).await.unwrap();
    let url = format!(
        "{}/v1/text-to-speech/v/stream-input?model_id=m&output_format=pcm_16000",
        server.ws_url()
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("xi-api-key", KEY.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    for text in [" ", "Hi there ", ""] {
        let message = serde_json::json!({ "text": text }).to_string();
        socket.send(Message::Text(message.into())).await.unwrap();
    }
    let mut audio = 0;
    let mut last = serde_json::Value::Null;
    while let Some(Ok(Message::Text(text))) = socket.next().await {
        let message: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(message.get("contextId").is_none());
        if let Some(data) = message["audio"].as_str() {
            audio += base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap()
                .len();
        }
        last = message;
    }
    assert_eq!(audio, 9 * 10 * 16 * 2, "9 characters of 16 kHz PCM16");
    assert_eq!(last["isFinal"], true);
}
