//! Audio for the PromptKit runtime.
//!
//! This crate will hold voice activity detection and turn detection (implementing
//! [`promptkit_core::VoiceActivityDetector`]), resampling, G.711 codecs, and STT and TTS
//! clients (implementing [`promptkit_core::SpeechToText`] and
//! [`promptkit_core::TextToSpeech`]). Until they land, the crate re-exports the seams.
//!
//! # Example
//!
//! ```
//! use promptkit_audio::{AudioFormat, AudioFrame};
//! use std::time::Duration;
//!
//! // 20 ms of 16 kHz mono PCM16 is 640 bytes.
//! let frame = AudioFrame::new(vec![0_u8; 640], AudioFormat::PCM16_16K_MONO);
//! assert_eq!(frame.duration(), Some(Duration::from_millis(20)));
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

pub use promptkit_core::{
    AudioFormat, AudioFrame, SpeechToText, TextToSpeech, VoiceActivityDetector,
};
