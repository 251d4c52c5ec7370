//! The Deepgram client against the test kit's Deepgram server: live sessions, the wire
//! form, every fault class, retries, teardown, batch transcription and TLS.
#![cfg(feature = "deepgram")]

use std::time::Duration;

use futures_util::StreamExt as _;
use promptkit_audio::client::{ApiKey, Connection, RetryPolicy, Timeouts, TlsRoots};
use promptkit_audio::deepgram::{self, DeepgramConfig, DeepgramStt};
use promptkit_core::{
    AudioFormat, AudioFrame, SpeechError, SpeechPrice, SpeechToText, SttEvent, SttSession,
    TranscriptionOptions,
};
use promptkit_testkit::speech::{Fault, Script, Segment, SpeechServer, VENDOR_ERROR, Vendor};

const KEY: &str = "dg-secret-key-123";
const FORMAT: AudioFormat = AudioFormat::PCM16_16K_MONO;

fn timeouts() -> Timeouts {
    Timeouts::default()
        .with_connect(Duration::from_secs(5))
        .with_first_byte(Duration::from_millis(500))
        .with_idle(Duration::from_millis(300))
}

fn connection(base: String) -> Connection {
    Connection::new(base)
        .with_api_key(ApiKey::new(KEY))
        .with_timeouts(timeouts())
        .with_retry(RetryPolicy::none())
}

fn config(server: &SpeechServer) -> DeepgramConfig {
    DeepgramConfig::compatible(connection(server.http_url()))
}

fn client(config: DeepgramConfig) -> DeepgramStt {
    DeepgramStt::new(config).expect("client")
}

async fn server(scripts: Vec<Script>) -> SpeechServer {
    let server = SpeechServer::start(Vendor::Deepgram).await.expect("server");
    for script in scripts {
        server.push(script);
    }
    server
}

/// Sends `ms` of silence in 20 ms frames.
async fn send_ms(session: &SttSession, ms: u64) {
    for _ in 0..ms / 20 {
        session
            .send(AudioFrame::new(vec![0_u8; 640], FORMAT))
            .await
            .expect("send");
    }
}

/// The events until the stream ends.
async fn drain(session: &mut SttSession) -> Vec<Result<SttEvent, SpeechError>> {
    let mut events = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), session.events.next())
        .await
        .expect("the stream ends")
    {
        events.push(event);
    }
    events
}

/// The next event.
async fn next(session: &mut SttSession) -> SttEvent {
    tokio::time::timeout(Duration::from_secs(10), session.events.next())
        .await
        .expect("an event comes")
        .expect("the stream goes on")
        .expect("not an error")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn text_of(event: &SttEvent) -> Option<&str> {
    match event {
        SttEvent::Partial { transcript } | SttEvent::Final { transcript, .. } => {
            Some(&transcript.text)
        }
        _ => None,
    }
}

#[tokio::test]
async fn a_live_session_gives_partials_finals_speech_starts_and_utterance_ends() {
    let server = server(vec![Script::transcript(vec![
        Segment::new("Hello there.", 500, 1500),
        Segment::new("How are you?", 2000, 3000).with_speech_final(false),
    ])])
    .await;
    let stt = client(config(&server));
    let mut session = stt
        .open_stream(FORMAT, &TranscriptionOptions::new())
        .await
        .expect("open");
    // 4.2 s: past the second segment, and through a second of silence (whose empty result
    // is not an event).
    send_ms(&session, 4200).await;
    session.finish().await.expect("finish");
    let events: Vec<SttEvent> = drain(&mut session)
        .await
        .into_iter()
        .map(|e| e.expect("no error"))
        .collect();

    assert_eq!(events.len(), 8, "{events:#?}");
    assert_eq!(events[0], SttEvent::SpeechStarted { at: ms(500) });
    let SttEvent::Partial { transcript } = &events[1] else {
        panic!("{:?}", events[1])
    };
    assert_eq!(transcript.text, "Hello");
    let SttEvent::Final {
        transcript,
        speech_final: true,
        from_finalize: false,
    } = &events[2]
    else {
        panic!("{:?}", events[2])
    };
    assert_eq!(transcript.text, "Hello there.");
    assert_eq!(transcript.start, Some(ms(500)));
    assert_eq!(transcript.end, Some(ms(1500)));
    let words: Vec<_> = transcript
        .words
        .iter()
        .map(|w| (w.text.as_str(), w.start, w.end))
        .collect();
    assert_eq!(
        words,
        vec![("Hello", ms(500), ms(1000)), ("there.", ms(1000), ms(1500))]
    );
    assert!(transcript.words.iter().all(|w| w.confidence.is_some()));
    assert_eq!(events[3], SttEvent::UtteranceEnd { at: ms(1500) });
    assert_eq!(events[4], SttEvent::SpeechStarted { at: ms(2000) });
    assert_eq!(text_of(&events[5]), Some("How are"));
    assert!(matches!(events[5], SttEvent::Partial { .. }));
    let SttEvent::Final {
        transcript,
        speech_final: false,
        from_finalize: false,
    } = &events[6]
    else {
        panic!("{:?}", events[6])
    };
    assert_eq!(transcript.text, "How are you?");
    let SttEvent::Metadata(metadata) = &events[7] else {
        panic!("{:?}", events[7])
    };
    assert_eq!(metadata.audio_duration, Some(ms(4200)));
    assert_eq!(metadata.model.as_deref(), Some("general-nova-3"));
    assert!(metadata.request_id.is_some());
}

#[tokio::test]
async fn finalize_flushes_and_keeps_the_session_open_for_the_next_turn() {
    let server = server(vec![Script::transcript(vec![
        Segment::new("first turn", 200, 1200),
        Segment::new("second turn", 2000, 3000),
    ])])
    .await;
    let stt = client(config(&server).with_interim_results(false));
    let mut session = stt
        .open_stream(FORMAT, &TranscriptionOptions::new())
        .await
        .expect("open");
    send_ms(&session, 800).await;
    session.finalize().await.expect("finalize");
    let mut first = None;
    while first.is_none() {
        if let SttEvent::Final {
            transcript,
            speech_final,
            from_finalize,
        } = next(&mut session).await
        {
            first = Some((transcript.text, speech_final, from_finalize));
        }
    }
    assert_eq!(first, Some(("first turn".to_owned(), false, true)));

    send_ms(&session, 2400).await;
    session.finish().await.expect("finish");
    let events: Vec<SttEvent> = drain(&mut session)
        .await
        .into_iter()
        .map(|e| e.expect("no error"))
        .collect();
    let finals: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            SttEvent::Final {
                transcript,
                speech_final,
                from_finalize,
            } => Some((transcript.text.as_str(), *speech_final, *from_finalize)),
            _ => None,
        })
        .collect();
    assert_eq!(finals, vec![("second turn", true, false)]);
    assert!(
        !events.iter().any(|e| matches!(e, SttEvent::Partial { .. })),
        "no partials without interim results"
    );
    assert!(matches!(events.last(), Some(SttEvent::Metadata(_))));
    let recorded = &server.requests()[0];
    assert_eq!(recorded.query_param("interim_results"), Some("false"));
    assert_eq!(
        recorded.query_param("utterance_end_ms"),
        None,
        "Deepgram takes utterance_end_ms only with interim results"
    );
}

#[tokio::test]
async fn finish_flushes_the_rest_and_ends_the_stream() {
    let server = server(vec![Script::transcript(vec![
        Segment::new("cut short", 500, 2000),
        Segment::new("never heard", 3000, 4000),
    ])])
    .await;
    let stt = client(config(&server));
    let mut session = stt
        .open_stream(FORMAT, &TranscriptionOptions::new())
        .await
        .expect("open");
    send_ms(&session, 1000).await;
    session.finish().await.expect("finish");
    let events: Vec<SttEvent> = drain(&mut session)
        .await
        .into_iter()
        .map(|e| e.expect("no error"))
        .collect();
    let finals: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, SttEvent::Final { .. }))
        .filter_map(text_of)
        .collect();
    assert_eq!(finals, vec!["cut short"]);
    let Some(SttEvent::Metadata(metadata)) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(metadata.audio_duration, Some(ms(1000)));

    let late = session.send(AudioFrame::new(vec![0_u8; 640], FORMAT)).await;
    assert!(matches!(late, Err(SpeechError::Closed)), "{late:?}");
    assert!(matches!(session.finish().await, Err(SpeechError::Closed)));
    let close = server.requests()[0].json_messages();
    assert_eq!(
        close.last(),
        Some(&serde_json::json!({"type": "CloseStream"}))
    );
}

#[tokio::test]
async fn keep_alives_go_out_while_no_audio_is_sent() {
    let server = server(vec![Script::transcript(vec![])]).await;
    let stt = client(config(&server).with_keep_alive(ms(40)));
    let mut session = stt
        .open_stream(FORMAT, &TranscriptionOptions::new())
        .await
        .expect("open");
    let keep_alives = || {
        server.requests()[0]
            .json_messages()
            .iter()
            .filter(|m| m["type"] == "KeepAlive")
            .count()
    };
    let mut waited = 0;
    while keep_alives() < 2 {
        assert!(waited < 500, "no keep-alives came");
        tokio::time::sleep(ms(20)).await;
        waited += 1;
    }
    session.finish().await.expect("finish");
    let events = drain(&mut session).await;
    assert!(
        matches!(events.as_slice(), [Ok(SttEvent::Metadata(_))]),
        "{events:?}"
    );
}

#[tokio::test]
async fn the_wire_form_has_the_settings_in_the_query_and_the_key_only_in_its_header() {
    let server = server(vec![Script::transcript(vec![]), Script::transcript(vec![])]).await;
    let config = config(&server)
        .with_language("en-GB")
        .with_keyterms(["PromptKit", "Deep gram"])
        .with_price(SpeechPrice::per_minute(0.0077));
    assert!(!format!("{config:?}").contains(KEY), "Debug shows no key");
    let stt = client(config);
    assert_eq!(stt.price(), Some(SpeechPrice::per_minute(0.0077)));
    assert_eq!(stt.formats()[0], AudioFormat::PCM16_16K_MONO);
    assert!(stt.formats().contains(&AudioFormat::MULAW_8K_MONO));

    let options = TranscriptionOptions::new()
        .with_model("nova-2-phonecall")
        .with_extra("diarize", true)
        .with_extra("endpointing", 500);
    let mut session = stt.open_stream(FORMAT, &options).await.expect("open");
    send_ms(&session, 100).await;
    let wrong = session
        .send(AudioFrame::new(vec![0_u8; 160], AudioFormat::MULAW_8K_MONO))
        .await;
    assert!(
        matches!(wrong, Err(SpeechError::InvalidInput { .. })),
        "{wrong:?}"
    );
    session.finalize().await.expect("finalize");
    session.finish().await.expect("finish");
    drain(&mut session).await;

    let recorded = &server.requests()[0];
    assert_eq!(recorded.method, "GET");
    assert_eq!(recorded.path, "/v1/listen");
    assert_eq!(
        recorded.header("authorization").map(str::to_owned),
        Some(format!("Token {KEY}"))
    );
    assert!(!recorded.query.contains(KEY) && !recorded.path.contains(KEY));
    for (name, value) in [
        ("model", "nova-2-phonecall"),
        ("language", "en-GB"),
        ("encoding", "linear16"),
        ("sample_rate", "16000"),
        ("channels", "1"),
        ("interim_results", "true"),
        ("endpointing", "500"),
        ("utterance_end_ms", "1000"),
        ("vad_events", "true"),
        ("smart_format", "true"),
        ("punctuate", "true"),
        ("diarize", "true"),
    ] {
        assert_eq!(recorded.query_param(name), Some(value), "{name}");
    }
    assert!(
        recorded
            .query
            .contains("keyterm=PromptKit&keyterm=Deep%20gram")
    );
    assert!(!recorded.query.contains("endpointing=300"));
    assert_eq!(recorded.binary_bytes(), 5 * 640);
    let controls: Vec<_> = recorded
        .json_messages()
        .into_iter()
        .filter(|m| m["type"] != "KeepAlive")
        .collect();
    assert_eq!(
        controls,
        vec![
            serde_json::json!({"type": "Finalize"}),
            serde_json::json!({"type": "CloseStream"})
        ]
    );

    // Telephony audio goes as mu-law at 8 kHz.
    let mut session = stt
        .open_stream(AudioFormat::MULAW_8K_MONO, &TranscriptionOptions::new())
        .await
        .expect("open");
    session
        .send(AudioFrame::new(
            vec![0xff_u8; 160],
            AudioFormat::MULAW_8K_MONO,
        ))
        .await
        .expect("send");
    session.finish().await.expect("finish");
    drain(&mut session).await;
    let recorded = &server.requests()[1];
    assert_eq!(recorded.query_param("encoding"), Some("mulaw"));
    assert_eq!(recorded.query_param("sample_rate"), Some("8000"));
    assert_eq!(recorded.query_param("model"), Some("nova-3"));

    let unsupported = stt
        .open_stream(
            AudioFormat::new(16_000, 1, promptkit_core::AudioEncoding::F32),
            &options,
        )
        .await;
    assert!(matches!(
        unsupported,
        Err(SpeechError::UnsupportedFormat(_))
    ));
}

async fn open_error(server: &SpeechServer, config: DeepgramConfig) -> SpeechError {
    let stt = client(config);
    match stt.open_stream(FORMAT, &TranscriptionOptions::new()).await {
        Ok(_) => panic!("the handshake should be refused ({:?})", server.requests()),
        Err(error) => error,
    }
}

#[tokio::test]
async fn refused_handshakes_map_to_the_error_classes() {
    let status = |status, retry_after_secs| {
        Script::fault(Fault::Status {
            status,
            retry_after_secs,
        })
    };
    let server = server(vec![
        status(401, None),
        status(403, None),
        status(429, Some(1)),
        status(503, None),
    ])
    .await;
    for _ in 0..2 {
        let error = open_error(&server, config(&server)).await;
        assert!(matches!(error, SpeechError::Auth { .. }), "{error:?}");
        assert!(!error.to_string().contains(KEY));
    }
    let error = open_error(&server, config(&server)).await;
    assert!(
        matches!(
            error,
            SpeechError::RateLimited {
                retry_after: Some(wait),
                ..
            } if wait == Duration::from_secs(1)
        ),
        "{error:?}"
    );
    let error = open_error(&server, config(&server)).await;
    assert!(
        matches!(error, SpeechError::Service { status: 503, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());

    // Nothing listening: a transport error (retryable), after the retries.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let retry = RetryPolicy::default()
        .with_max_retries(1)
        .with_backoff(ms(5), ms(10));
    let error = open_error(
        &server,
        DeepgramConfig::compatible(connection(dead).with_retry(retry)),
    )
    .await;
    assert!(
        matches!(error, SpeechError::Transport { .. }) && error.is_retryable(),
        "{error:?}"
    );

    // No key: Deepgram's 401.
    let no_key = DeepgramConfig::compatible(
        Connection::new(server.http_url())
            .with_timeouts(timeouts())
            .with_retry(RetryPolicy::none()),
    );
    let error = open_error(&server, no_key).await;
    assert!(
        matches!(&error, SpeechError::Auth { message } if message.contains("Invalid credentials")),
        "{error:?}"
    );
}

/// A session of `script` fed 3 s of audio: its events up to the end.
async fn faulty_session(script: Script) -> Vec<Result<SttEvent, SpeechError>> {
    let server = server(vec![script]).await;
    let stt = client(config(&server));
    let mut session = stt
        .open_stream(FORMAT, &TranscriptionOptions::new())
        .await
        .expect("open");
    for _ in 0..150 {
        if session
            .send(AudioFrame::new(vec![0_u8; 640], FORMAT))
            .await
            .is_err()
        {
            break;
        }
    }
    drain(&mut session).await
}

fn segments() -> Vec<Segment> {
    vec![Segment::new("hello world", 200, 600)]
}

#[tokio::test]
async fn a_vendor_error_in_the_stream_is_a_terminal_service_error() {
    let events =
        faulty_session(Script::transcript(segments()).with_fault(Fault::VendorError)).await;
    let (last, before) = events.split_last().expect("events");
    assert!(before.iter().all(Result::is_ok));
    assert!(
        before
            .iter()
            .any(|e| matches!(e, Ok(SttEvent::Partial { .. })))
    );
    assert!(
        matches!(last, Err(SpeechError::Service { status: 0, message }) if message.contains(VENDOR_ERROR)),
        "{last:?}"
    );
}

#[tokio::test]
async fn a_connection_dropped_mid_stream_is_a_transport_error() {
    let events =
        faulty_session(Script::transcript(segments()).with_fault(Fault::CloseMidStream)).await;
    let last = events.last().expect("events");
    assert!(
        matches!(last, Err(SpeechError::Transport { .. })),
        "{events:?}"
    );
    assert!(events[..events.len() - 1].iter().all(Result::is_ok));
}

#[tokio::test]
async fn a_stalled_stream_times_out_after_the_idle_timeout() {
    let events = faulty_session(Script::transcript(segments()).with_fault(Fault::Stall)).await;
    let last = events.last().expect("events");
    assert!(
        matches!(last, Err(SpeechError::Timeout(wait)) if *wait == timeouts().idle),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Ok(SttEvent::Partial { .. })))
    );
}

#[tokio::test]
async fn a_slow_first_result_times_out_after_the_first_byte_timeout() {
    let events = faulty_session(
        Script::transcript(segments()).with_fault(Fault::SlowFirstChunk(Duration::from_secs(5))),
    )
    .await;
    assert!(
        matches!(events.as_slice(), [Err(SpeechError::Timeout(wait))] if *wait == timeouts().first_byte),
        "{events:?}"
    );
}

#[tokio::test]
async fn opening_is_retried_before_the_first_result() {
    let server = server(vec![
        Script::fault(Fault::Status {
            status: 429,
            retry_after_secs: Some(0),
        }),
        Script::transcript(vec![Segment::new("after a retry", 100, 500)]),
    ])
    .await;
    let config = config(&server);
    let retry = RetryPolicy::default()
        .with_max_retries(2)
        .with_backoff(ms(10), ms(50));
    let connection = config.connection.clone().with_retry(retry);
    let stt = client(DeepgramConfig::compatible(connection));
    let mut session = stt
        .open_stream(FORMAT, &TranscriptionOptions::new())
        .await
        .expect("the retry opens the session");
    send_ms(&session, 600).await;
    session.finish().await.expect("finish");
    let events = drain(&mut session).await;
    assert!(events.iter().any(
        |e| matches!(e, Ok(event @ SttEvent::Final { .. }) if text_of(event) == Some("after a retry"))
    ), "{events:?}");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn dropping_the_session_closes_the_socket() {
    let server = server(vec![Script::transcript(vec![Segment::new(
        "going away",
        100,
        5000,
    )])])
    .await;
    let stt = client(config(&server));
    let session = stt
        .open_stream(FORMAT, &TranscriptionOptions::new())
        .await
        .expect("open");
    send_ms(&session, 200).await;
    drop(session);
    let mut polls = 0;
    while !server.requests()[0].closed {
        assert!(polls < 500, "the server never saw the socket close");
        tokio::time::sleep(ms(10)).await;
        polls += 1;
    }

    // Dropping only the event stream closes it too.
    server.push(Script::transcript(vec![]));
    let SttSession { sender, events } = stt
        .open_stream(FORMAT, &TranscriptionOptions::new())
        .await
        .expect("open");
    drop(events);
    let mut polls = 0;
    while !server.requests()[1].closed {
        assert!(polls < 500, "the server never saw the socket close");
        tokio::time::sleep(ms(10)).await;
        polls += 1;
    }
    let late = sender.send(AudioFrame::new(vec![0_u8; 640], FORMAT)).await;
    assert!(matches!(late, Err(SpeechError::Closed)), "{late:?}");
}

fn pcm_frames(ms_total: u64) -> Vec<AudioFrame> {
    (0..ms_total / 20)
        .map(|_| AudioFrame::new(vec![0_u8; 640], FORMAT))
        .collect()
}

#[tokio::test]
async fn batch_transcription_posts_a_wav_and_reads_the_transcript() {
    let server = server(vec![
        Script::transcript(vec![
            Segment::new("Hello there.", 500, 1500),
            Segment::new("Bye.", 1600, 1900),
            Segment::new("Beyond the audio.", 2500, 3000),
        ]),
        Script::transcript(vec![Segment::new("mu law", 100, 500)]),
        Script::fault(Fault::Status {
            status: 429,
            retry_after_secs: Some(3),
        }),
        Script::transcript(segments()).with_fault(Fault::VendorError),
        Script::transcript(segments()).with_fault(Fault::SlowFirstChunk(Duration::from_secs(5))),
        Script::transcript(segments()).with_fault(Fault::Stall),
    ])
    .await;
    let stt = client(config(&server).with_language("en-US"));
    let transcript = stt
        .transcribe(&pcm_frames(2000), &TranscriptionOptions::new())
        .await
        .expect("transcribe");
    assert_eq!(transcript.text, "Hello there. Bye.");
    assert_eq!(transcript.audio_duration, Some(ms(2000)));
    assert_eq!(transcript.start, Some(ms(500)));
    assert_eq!(transcript.end, Some(ms(1900)));
    assert_eq!(transcript.words.len(), 3);
    assert_eq!(transcript.words[2].text, "Bye.");
    let recorded = &server.requests()[0];
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path, "/v1/listen");
    assert_eq!(recorded.header("content-type"), Some("audio/wav"));
    assert_eq!(
        recorded.header("authorization").map(str::to_owned),
        Some(format!("Token {KEY}"))
    );
    assert_eq!(recorded.query_param("language"), Some("en-US"));
    assert_eq!(recorded.query_param("model"), Some("nova-3"));
    assert_eq!(recorded.query_param("interim_results"), None);
    assert!(!recorded.query.contains(KEY));
    assert_eq!(recorded.binary_bytes(), 64_000 + 44);

    let mulaw: Vec<AudioFrame> = (0..25)
        .map(|_| AudioFrame::new(vec![0xff_u8; 160], AudioFormat::MULAW_8K_MONO))
        .collect();
    let transcript = stt
        .transcribe(&mulaw, &TranscriptionOptions::new())
        .await
        .expect("transcribe");
    assert_eq!(transcript.text, "mu law");
    assert_eq!(transcript.audio_duration, Some(ms(500)));
    assert_eq!(server.requests()[1].query_param("encoding"), Some("mulaw"));

    let error = stt
        .transcribe(&pcm_frames(200), &TranscriptionOptions::new())
        .await
        .expect_err("429");
    assert!(
        matches!(error, SpeechError::RateLimited { retry_after: Some(wait), .. } if wait == Duration::from_secs(3)),
        "{error:?}"
    );
    let error = stt
        .transcribe(&pcm_frames(200), &TranscriptionOptions::new())
        .await
        .expect_err("a cut body");
    assert!(matches!(error, SpeechError::Transport { .. }), "{error:?}");
    let error = stt
        .transcribe(&pcm_frames(200), &TranscriptionOptions::new())
        .await
        .expect_err("a slow answer");
    // The first-byte timeout plus the 200 ms of audio: recognition grows with the audio.
    assert!(
        matches!(error, SpeechError::Timeout(wait) if wait == timeouts().first_byte + Duration::from_millis(200)),
        "{error:?}"
    );
    let error = stt
        .transcribe(&pcm_frames(200), &TranscriptionOptions::new())
        .await
        .expect_err("a stalled body");
    assert!(
        matches!(error, SpeechError::Timeout(wait) if wait == timeouts().idle),
        "{error:?}"
    );

    assert!(matches!(
        stt.transcribe(&[], &TranscriptionOptions::new()).await,
        Err(SpeechError::EmptyAudio)
    ));
    let mixed = [
        AudioFrame::new(vec![0_u8; 640], FORMAT),
        AudioFrame::new(vec![0_u8; 160], AudioFormat::MULAW_8K_MONO),
    ];
    assert!(matches!(
        stt.transcribe(&mixed, &TranscriptionOptions::new()).await,
        Err(SpeechError::InvalidInput { .. })
    ));
}

#[tokio::test]
async fn a_session_and_a_batch_request_over_tls() {
    let server = SpeechServer::start_tls(Vendor::Deepgram)
        .await
        .expect("server");
    server.push(Script::transcript(vec![Segment::new(
        "secure words",
        100,
        600,
    )]));
    server.push(Script::transcript(vec![Segment::new(
        "secure batch",
        100,
        600,
    )]));
    let roots = TlsRoots::system().with_root_der(server.certificate_der().expect("cert"));
    let connection = connection(server.ws_url()).with_tls(roots);
    let stt = client(DeepgramConfig::compatible(connection));
    let mut session = stt
        .open_stream(FORMAT, &TranscriptionOptions::new())
        .await
        .expect("open over wss");
    send_ms(&session, 800).await;
    session.finish().await.expect("finish");
    let events = drain(&mut session).await;
    assert!(events.iter().any(
        |e| matches!(e, Ok(event @ SttEvent::Final { .. }) if text_of(event) == Some("secure words"))
    ), "{events:?}");

    // Batch over https: the same client, whose base is wss://, posts to https://.
    let transcript = stt
        .transcribe(&pcm_frames(1000), &TranscriptionOptions::new())
        .await
        .expect("transcribe over https");
    assert_eq!(transcript.text, "secure batch");
}

#[test]
fn the_decoder_is_public_and_pure() {
    let event = deepgram::decode(r#"{"type":"UtteranceEnd","last_word_end":1.25}"#).unwrap();
    assert_eq!(event, Some(SttEvent::UtteranceEnd { at: ms(1250) }));
}

proptest::proptest! {
    #[test]
    fn the_decoder_never_panics_on_any_text(text in ".*") {
        let _ = deepgram::decode(&text);
    }

    #[test]
    fn the_decoder_never_panics_on_deepgram_shaped_json(
        kind in proptest::sample::select(vec!["Results", "Metadata", "SpeechStarted", "UtteranceEnd", "Error", "x"]),
        number in proptest::num::f64::ANY,
        flag in proptest::bool::ANY,
        text in ".{0,20}",
        speaker in proptest::num::i64::ANY,
    ) {
        let json = serde_json::json!({
            "type": kind,
            "start": number, "duration": number, "timestamp": number, "last_word_end": number,
            "is_final": flag, "speech_final": flag, "from_finalize": flag,
            "channel": {"alternatives": [{"transcript": text, "confidence": number,
                "words": [{"word": text, "start": number, "end": number, "confidence": number,
                           "speaker": speaker, "punctuated_word": text}]}]},
            "models": [text], "model_info": {text.clone(): {"name": text}}, "request_id": text,
        });
        let _ = deepgram::decode(&json.to_string());
        // JSON cannot hold NaN or infinities; Deepgram never sends them either.
        let _ = deepgram::decode(&json.to_string().replace("null", "1e999"));
    }
}

#[tokio::test]
async fn the_sender_is_shared_by_several_tasks() {
    let server = server(vec![Script::transcript(vec![])]).await;
    let stt = client(config(&server));
    let SttSession { sender, mut events } = stt
        .open_stream(FORMAT, &TranscriptionOptions::new())
        .await
        .expect("open");
    let sender: std::sync::Arc<dyn promptkit_core::AudioSender> = sender.into();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let sender = sender.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    sender
                        .send(AudioFrame::new(vec![0_u8; 640], FORMAT))
                        .await
                        .expect("send");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    sender.finish().await.expect("finish");
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the stream ends")
    {
        event.expect("no error");
    }
    assert_eq!(server.requests()[0].binary_bytes(), 40 * 640);
}
