//! What the binary's tests share.

use std::path::Path;
use std::process::Command;

#[allow(dead_code, reason = "only the serve tests start servers")]
pub(crate) mod server;

/// The `promptkit` binary with `home` as its data directory and nothing taken from the
/// environment it runs in: every `PROMPTKIT_*` variable and every provider key is removed, so
/// a developer's own settings never change what a test sees.
pub(crate) fn promptkit(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_promptkit"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PROMPTKIT_") {
            command.env_remove(key);
        }
    }
    for key in [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "AZURE_OPENAI_API_KEY",
    ] {
        command.env_remove(key);
    }
    command.env("PROMPTKIT_HOME", home);
    command
}
