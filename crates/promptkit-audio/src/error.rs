//! The error of the audio toolbox.

use promptkit_core::{AudioFormat, SpeechError};

/// Why an audio operation failed. Every case is the caller's input, so none is worth a retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The audio is in a format this operation does not handle.
    #[error("unsupported audio format: {0:?}")]
    UnsupportedFormat(AudioFormat),
    /// The byte length is not a whole number of samples.
    #[error("{len} bytes is not a whole number of {sample_bytes}-byte samples")]
    PartialSample {
        /// The byte length given.
        len: usize,
        /// Bytes per sample (all channels).
        sample_bytes: usize,
    },
    /// A setting is out of range.
    #[error("invalid {what}: {message}")]
    InvalidSetting {
        /// The setting.
        what: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A WAV file could not be read or written (the cause is shown, not chained, so that it
    /// survives the conversion to a [`SpeechError`]).
    #[error("WAV: {0}")]
    Wav(hound::Error),
}

impl From<AudioError> for SpeechError {
    fn from(err: AudioError) -> Self {
        match err {
            AudioError::UnsupportedFormat(format) => Self::UnsupportedFormat(format),
            other => Self::InvalidInput {
                message: other.to_string(),
            },
        }
    }
}
