//! The golden forms of the realtime configuration, and the realtime seam's defaults.

use std::time::Duration;

use serde_json::json;

use super::golden;
use crate::*;

#[test]
fn realtime_config_round_trips_every_setting() {
    let config = RealtimeConfig::new()
        .with_model("gpt-realtime")
        .with_instructions("be brief")
        .with_tools(vec![ToolDef {
            name: "clock".into(),
            description: "the time".into(),
            input_schema: empty_object_schema(),
            output_schema: None,
        }])
        .with_voice("marin")
        .with_input_format(AudioFormat::MULAW_8K_MONO)
        .with_output_format(AudioFormat::PCM16_24K_MONO)
        .with_output_modalities(vec![Modality::Audio])
        .with_turn_detection(TurnDetection::Semantic(
            SemanticVad::new()
                .with_eagerness(Eagerness::Low)
                .with_interrupt_response(true),
        ))
        .with_input_transcription(true)
        .with_output_transcription(true)
        .with_temperature(0.5)
        .with_max_output_tokens(1024)
        .with_resume_handle("h-41")
        .with_extra("noise_reduction", json!({"type": "near_field"}));
    golden(
        &config,
        &json!({
            "model": "gpt-realtime",
            "instructions": "be brief",
            "tools": [{
                "name": "clock",
                "description": "the time",
                "input_schema": {"type": "object", "properties": {}}
            }],
            "voice": "marin",
            "input_format": {"sample_rate": 8000, "channels": 1, "encoding": "mulaw"},
            "output_format": {"sample_rate": 24000, "channels": 1, "encoding": "pcm16"},
            "output_modalities": ["audio"],
            "turn_detection": {"type": "semantic", "eagerness": "low", "interrupt_response": true},
            "transcribe_input": true,
            "transcribe_output": true,
            "temperature": 0.5,
            "max_output_tokens": 1024,
            "resume_handle": "h-41",
            "extra": {"noise_reduction": {"type": "near_field"}}
        }),
    );
    golden(
        &RealtimeConfig::default(),
        &json!({"turn_detection": {"type": "server"}}),
    );
    // A configuration file may leave everything out.
    let empty: RealtimeConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(empty, RealtimeConfig::default());
}

#[test]
fn turn_detection_forms() {
    golden(
        &TurnDetection::Server(
            ServerVad::new()
                .with_threshold(0.75)
                .with_prefix_padding(Duration::from_millis(300))
                .with_silence_duration(Duration::from_millis(500))
                .with_interrupt_response(false)
                .with_create_response(true),
        ),
        &json!({
            "type": "server",
            "threshold": 0.75,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
            "interrupt_response": false,
            "create_response": true
        }),
    );
    golden(&TurnDetection::Manual, &json!({"type": "manual"}));
    golden(
        &TurnDetection::Semantic(SemanticVad::default()),
        &json!({"type": "semantic"}),
    );
    assert_eq!(
        TurnDetection::default(),
        TurnDetection::Server(ServerVad::default())
    );
    let err = serde_json::from_value::<TurnDetection>(json!({"type": "psychic"})).unwrap_err();
    assert!(err.to_string().contains("unknown variant"), "{err}");
    golden(&Eagerness::Auto, &json!("auto"));
    golden(&Modality::Text, &json!("text"));
}

#[test]
fn output_is_tagged_with_its_response_and_item() {
    let item = ItemRef::new()
        .with_response("resp_1")
        .with_item("item_7")
        .with_content_index(0);
    let audio = RealtimeEvent::Audio {
        frame: AudioFrame::new(vec![0_u8; 960], AudioFormat::PCM16_24K_MONO),
        item: item.clone(),
    };
    let RealtimeEvent::Audio { item: tagged, .. } = &audio else {
        unreachable!()
    };
    assert_eq!(tagged.item_id.as_deref(), Some("item_7"));
    // Tagging a frame shares the ids.
    assert!(std::sync::Arc::ptr_eq(
        tagged.response_id.as_ref().unwrap(),
        item.response_id.as_ref().unwrap()
    ));
    let done = ResponseDone::new(FinishReason::Cancelled)
        .with_response_id("resp_1")
        .with_usage(Usage::new(10, 20));
    assert_eq!(done.response_id.as_deref(), Some("resp_1"));
    assert_eq!(done.usage.and_then(|u| u.total_tokens()), Some(30));
    let image =
        ImageFrame::new(vec![0xff_u8, 0xd8], "image/jpeg").with_timestamp(Duration::from_secs(2));
    assert_eq!(image.timestamp, Some(Duration::from_secs(2)));
}

#[test]
fn realtime_errors_classify() {
    assert!(RealtimeError::Timeout(Duration::from_secs(5)).is_retryable());
    assert!(
        RealtimeError::RateLimited {
            retry_after: None,
            message: "too many sessions".into()
        }
        .is_retryable()
    );
    assert!(
        !RealtimeError::Unsupported {
            message: "truncation".into()
        }
        .is_retryable()
    );
    assert!(!RealtimeError::Closed.is_retryable());
}

#[derive(Debug)]
struct Priced(PricingTable);

impl RealtimeProvider for Priced {
    fn id(&self) -> &str {
        "priced"
    }

    fn model(&self) -> &str {
        "gpt-realtime"
    }

    fn pricing(&self) -> Option<&PricingTable> {
        Some(&self.0)
    }

    fn connect<'a>(
        &'a self,
        config: &'a RealtimeConfig,
    ) -> BoxFuture<'a, Result<RealtimeSession, RealtimeError>> {
        Box::pin(async move {
            Err(RealtimeError::Unsupported {
                message: format!("{:?} turn detection", config.turn_detection),
            })
        })
    }
}

#[tokio::test(flavor = "current_thread")]
async fn realtime_providers_price_audio_tokens() {
    let table = PricingTable::new().with(
        "gpt-realtime",
        ModelPricing::new(4.0, 16.0).with_audio(32.0, 64.0),
    );
    let provider: std::sync::Arc<dyn RealtimeProvider> = std::sync::Arc::new(Priced(table));
    assert_eq!(provider.audio_formats(), vec![AudioFormat::PCM16_24K_MONO]);
    let usage = Usage {
        audio_input_tokens: Some(500_000),
        audio_output_tokens: Some(250_000),
        ..Usage::new(1_000_000, 500_000)
    };
    let cost = provider.cost("gpt-realtime", &usage).unwrap();
    // 0.5 M text in at 4 plus 0.5 M audio in at 32; 0.25 M text out at 16 plus 0.25 M
    // audio out at 64.
    assert!((cost.input_usd - 18.0).abs() < 1e-9, "{cost:?}");
    assert!((cost.output_usd - 20.0).abs() < 1e-9, "{cost:?}");
    assert_eq!(provider.cost("gemini-live", &usage), None);
    let err = provider
        .connect(&RealtimeConfig::new().with_turn_detection(TurnDetection::Manual))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "unsupported: Manual turn detection");
}
