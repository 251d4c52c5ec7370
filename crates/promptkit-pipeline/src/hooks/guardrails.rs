//! Built-in guardrails: banned words, regular expressions, maximum length, JSON Schema on the
//! output, and personal data (e-mail addresses, phone numbers, payment cards with a Luhn check).
//!
//! A [`Guardrail`] is a [`ProviderHook`] and a [`ChunkInterceptor`]: register it with
//! [`Hooks::guardrail`](super::Hooks::guardrail) so streamed output is checked before each
//! chunk is forwarded, and complete answers (and, for input guardrails, the user's message)
//! are checked around each call.
//!
//! ```
//! use promptkit_pipeline::hooks::{ChunkInterceptor, Decision, guardrails};
//!
//! let guard = guardrails::banned_words(["guarantee"]);
//! assert_eq!(guard.on_chunk("we do not", " promise"), Decision::Allow);
//! assert!(matches!(guard.on_chunk("we GUARANTEE", " it"), Decision::Deny(_)));
//! ```

use std::fmt;

use promptkit_core::{BoxFuture, ContentPart, Message, ProviderRequest, Role};
use regex::Regex;
use serde_json::Value;

use super::{ChunkInterceptor, Decision, ProviderHook};

/// Which text a guardrail checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// The user's latest message, before the model sees it.
    Input,
    /// The model's answer (streamed chunks and the complete message).
    #[default]
    Output,
    /// Both.
    Both,
}

impl Direction {
    fn input(self) -> bool {
        matches!(self, Self::Input | Self::Both)
    }

    fn output(self) -> bool {
        matches!(self, Self::Output | Self::Both)
    }
}

/// What a guardrail does when its check fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// Deny (the provider stage then fails the turn or answers with its replacement).
    #[default]
    Deny,
    /// Replace the offending text with `[REDACTED]` in complete messages and go on. Streamed
    /// text cannot be recalled once forwarded, so a redacting output guardrail stops a stream
    /// at the offending chunk instead.
    Redact,
}

/// A text check.
pub trait Check: Send + Sync + fmt::Debug {
    /// Why `text` violates the check, or `None`.
    fn violation(&self, text: &str) -> Option<String>;

    /// How many bytes before a new chunk can still be part of a match; `None` when any
    /// earlier text can matter (the whole answer is checked on every chunk).
    fn window(&self) -> Option<usize> {
        None
    }

    /// Whether the check can judge a partial answer (false for JSON Schema).
    fn streamable(&self) -> bool {
        true
    }

    /// `text` with the offending spans replaced, for [`Action::Redact`].
    fn redact(&self, text: &str) -> String {
        let _ = text;
        "[REDACTED]".to_owned()
    }
}

/// A named check applied to input, output or both.
#[derive(Debug)]
pub struct Guardrail<C> {
    name: String,
    check: C,
    direction: Direction,
    action: Action,
}

impl<C: Check> Guardrail<C> {
    /// A guardrail.
    pub fn new(name: impl Into<String>, check: C) -> Self {
        Self {
            name: name.into(),
            check,
            direction: Direction::Output,
            action: Action::Deny,
        }
    }

    /// Sets the direction.
    #[must_use]
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }

    /// Sets the action.
    #[must_use]
    pub fn action(mut self, action: Action) -> Self {
        self.action = action;
        self
    }

    /// Applies the check to a message's text parts: `Some(reason)` when denied; rewrites the
    /// parts when redacting.
    fn apply(&self, message: &mut Message) -> Option<String> {
        let reason = self.check.violation(&message.text())?;
        match self.action {
            Action::Deny => Some(reason),
            Action::Redact => {
                for part in &mut message.content {
                    if let ContentPart::Text { text, .. } = part
                        && self.check.violation(text).is_some()
                    {
                        *text = self.check.redact(text);
                    }
                }
                None
            }
        }
    }
}

impl<C: Check> ProviderHook for Guardrail<C> {
    fn name(&self) -> &str {
        &self.name
    }

    fn before_call<'a>(&'a self, request: &'a mut ProviderRequest) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            if !self.direction.input() {
                return Decision::Allow;
            }
            // Only a fresh user message is checked, not every tool round again.
            match request.messages.last_mut() {
                Some(last) if last.role == Role::User => match self.apply(last) {
                    Some(reason) => Decision::deny(&self.name, reason),
                    None => Decision::Allow,
                },
                _ => Decision::Allow,
            }
        })
    }

    fn after_call<'a>(&'a self, message: &'a mut Message) -> BoxFuture<'a, Decision> {
        Box::pin(async move {
            if !self.direction.output() {
                return Decision::Allow;
            }
            match self.apply(message) {
                Some(reason) => Decision::deny(&self.name, reason),
                None => Decision::Allow,
            }
        })
    }
}

impl<C: Check> ChunkInterceptor for Guardrail<C> {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_chunk(&self, text: &str, delta: &str) -> Decision {
        if !self.direction.output() || !self.check.streamable() {
            return Decision::Allow;
        }
        let scope = match self.check.window() {
            Some(w) => tail(text, delta.len() + w),
            None => text,
        };
        match self.check.violation(scope) {
            Some(reason) => Decision::deny(&self.name, reason),
            None => Decision::Allow,
        }
    }
}

/// The last `bytes` bytes of `text` (widened to a character boundary).
fn tail(text: &str, bytes: usize) -> &str {
    if bytes >= text.len() {
        return text;
    }
    let mut start = text.len() - bytes;
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    &text[start..]
}

/// Words that must not appear (case-insensitive, whole words).
#[derive(Debug, Clone)]
pub struct BannedWords {
    regex: Regex,
    longest: usize,
}

impl Check for BannedWords {
    fn violation(&self, text: &str) -> Option<String> {
        self.regex
            .find(text)
            .map(|m| format!("banned word `{}`", m.as_str().to_lowercase()))
    }

    fn window(&self) -> Option<usize> {
        Some(self.longest + 1)
    }

    fn redact(&self, text: &str) -> String {
        self.regex.replace_all(text, "[REDACTED]").into_owned()
    }
}

/// A guardrail denying any of `words` in the output.
pub fn banned_words<I, S>(words: I) -> Guardrail<BannedWords>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let words: Vec<String> = words.into_iter().map(|w| w.as_ref().to_owned()).collect();
    let longest = words.iter().map(String::len).max().unwrap_or(0);
    let alternatives: Vec<String> = words.iter().map(|w| regex::escape(w)).collect();
    // An empty list matches nothing.
    let pattern = if alternatives.is_empty() {
        "[^\\s\\S]".to_owned()
    } else {
        format!("(?i)\\b(?:{})\\b", alternatives.join("|"))
    };
    let regex =
        Regex::new(&pattern).unwrap_or_else(|_| Regex::new("[^\\s\\S]").expect("static pattern"));
    Guardrail::new("banned_words", BannedWords { regex, longest })
}

/// Text that must not match a regular expression.
#[derive(Debug, Clone)]
pub struct Pattern {
    regex: Regex,
}

impl Check for Pattern {
    fn violation(&self, text: &str) -> Option<String> {
        self.regex.find(text).map(|_| {
            format!(
                "text matches the forbidden pattern `{}`",
                self.regex.as_str()
            )
        })
    }

    fn redact(&self, text: &str) -> String {
        self.regex.replace_all(text, "[REDACTED]").into_owned()
    }
}

/// A guardrail denying output that matches `pattern`.
///
/// # Errors
/// The regex crate's error when `pattern` is invalid.
pub fn regex(pattern: &str) -> Result<Guardrail<Pattern>, regex::Error> {
    Ok(Guardrail::new(
        "regex",
        Pattern {
            regex: Regex::new(pattern)?,
        },
    ))
}

/// A maximum length in characters.
#[derive(Debug, Clone, Copy)]
pub struct MaxLength(pub usize);

impl Check for MaxLength {
    fn violation(&self, text: &str) -> Option<String> {
        let n = text.chars().count();
        (n > self.0).then(|| format!("answer is {n} characters long, the limit is {}", self.0))
    }

    fn redact(&self, text: &str) -> String {
        text.chars().take(self.0).collect()
    }
}

/// A guardrail denying output longer than `chars` characters (streaming stops at the chunk
/// that crosses the limit).
pub fn max_length(chars: usize) -> Guardrail<MaxLength> {
    Guardrail::new("max_length", MaxLength(chars))
}

/// Output that must be JSON valid against a schema.
pub struct JsonSchema {
    validator: jsonschema::Validator,
}

impl fmt::Debug for JsonSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonSchema").finish_non_exhaustive()
    }
}

impl Check for JsonSchema {
    fn violation(&self, text: &str) -> Option<String> {
        let body = strip_code_fence(text.trim());
        let value: Value = match serde_json::from_str(body) {
            Ok(v) => v,
            Err(e) => return Some(format!("answer is not valid JSON: {e}")),
        };
        self.validator
            .iter_errors(&value)
            .next()
            .map(|e| format!("answer does not match the schema: {e}"))
    }

    fn streamable(&self) -> bool {
        false
    }
}

fn strip_code_fence(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

/// A guardrail denying output that is not JSON valid against `schema` (checked on complete
/// answers only).
///
/// # Errors
/// The validator's message when `schema` is not a valid JSON Schema.
pub fn json_schema(schema: &Value) -> Result<Guardrail<JsonSchema>, String> {
    let validator = jsonschema::validator_for(schema).map_err(|e| e.to_string())?;
    Ok(Guardrail::new("json_schema", JsonSchema { validator }))
}

/// Kinds of personal data [`pii`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PiiKind {
    /// E-mail addresses.
    Email,
    /// Phone numbers written with separators or an international prefix.
    Phone,
    /// Payment card numbers (13 to 19 digits passing the Luhn check).
    PaymentCard,
}

/// Personal data detection.
#[derive(Debug, Clone)]
pub struct Pii {
    kinds: Vec<PiiKind>,
    email: Regex,
    phone: Regex,
    card: Regex,
}

impl Pii {
    fn spans(&self, text: &str) -> Vec<(usize, usize, PiiKind)> {
        let mut spans = Vec::new();
        for kind in &self.kinds {
            match kind {
                PiiKind::Email => spans.extend(
                    self.email
                        .find_iter(text)
                        .map(|m| (m.start(), m.end(), *kind)),
                ),
                PiiKind::Phone => spans.extend(
                    self.phone
                        .find_iter(text)
                        .map(|m| (m.start(), m.end(), *kind)),
                ),
                PiiKind::PaymentCard => spans.extend(
                    self.card
                        .find_iter(text)
                        .filter(|m| luhn_valid(m.as_str()))
                        .map(|m| (m.start(), m.end(), *kind)),
                ),
            }
        }
        spans.sort_by_key(|s| s.0);
        spans
    }
}

impl Check for Pii {
    fn violation(&self, text: &str) -> Option<String> {
        self.spans(text).first().map(|(_, _, kind)| {
            let what = match kind {
                PiiKind::Email => "an e-mail address",
                PiiKind::Phone => "a phone number",
                PiiKind::PaymentCard => "a payment card number",
            };
            format!("text contains {what}")
        })
    }

    fn window(&self) -> Option<usize> {
        Some(320)
    }

    fn redact(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for (start, end, _) in self.spans(text) {
            if start < last {
                continue;
            }
            out.push_str(&text[last..start]);
            out.push_str("[REDACTED]");
            last = end;
        }
        out.push_str(&text[last..]);
        out
    }
}

/// Whether the digits of `candidate` (separators ignored) pass the Luhn check.
pub fn luhn_valid(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A guardrail for personal data of the given kinds.
pub fn pii(kinds: impl IntoIterator<Item = PiiKind>) -> Guardrail<Pii> {
    let build = |p: &str| Regex::new(p).expect("static pattern");
    Guardrail::new(
        "pii",
        Pii {
            kinds: kinds.into_iter().collect(),
            email: build(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
            phone: build(
                r"(?:\+\d{1,3}[ .-]?(?:\(?\d{1,4}\)?[ .-]?){2,4}\d{2,4})|(?:\(?\b\d{3}\)?[ .-]\d{3}[ .-]\d{4}\b)",
            ),
            card: build(r"\b\d(?:[ -]?\d){12,18}\b"),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn denies<C: Check>(g: &Guardrail<C>, text: &str) -> bool {
        g.check.violation(text).is_some()
    }

    #[test]
    fn banned_words_are_whole_words_case_insensitive() {
        let g = banned_words(["guarantee", "free money"]);
        assert!(denies(&g, "We GUARANTEE it"));
        assert!(denies(&g, "get free money now"));
        assert!(
            !denies(&g, "guaranteed? no: guarantees are plural"),
            "whole words only"
        );
        assert!(!denies(&banned_words(Vec::<String>::new()), "anything"));
        assert_eq!(g.check.redact("a guarantee!"), "a [REDACTED]!");
    }

    #[test]
    fn streaming_windows_catch_words_split_across_chunks() {
        let g = banned_words(["guarantee"]);
        assert_eq!(g.on_chunk("we guar", "guar"), Decision::Allow);
        assert!(matches!(
            g.on_chunk("we guarantee", "antee"),
            Decision::Deny(_)
        ));
        // Multibyte text near the window edge does not panic.
        assert_eq!(g.on_chunk("ééééééééééé guar", "r"), Decision::Allow);
    }

    #[test]
    fn regex_and_max_length() {
        let g = regex(r"(?i)internal use only").unwrap();
        assert!(denies(&g, "This is INTERNAL USE ONLY."));
        assert!(regex("(").is_err());
        let m = max_length(5);
        assert!(!denies(&m, "héllo"));
        assert_eq!(
            m.check.violation("hello!").unwrap(),
            "answer is 6 characters long, the limit is 5"
        );
    }

    #[test]
    fn json_schema_checks_complete_answers_only() {
        let g = json_schema(&json!({"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}})).unwrap();
        assert!(!denies(&g, r#"{"answer": "42"}"#));
        assert!(!denies(&g, "```json\n{\"answer\": \"42\"}\n```"));
        assert!(
            g.check
                .violation(r#"{"answer": 42}"#)
                .unwrap()
                .contains("does not match the schema")
        );
        assert!(
            g.check
                .violation("not json")
                .unwrap()
                .contains("not valid JSON")
        );
        assert_eq!(
            g.on_chunk("{\"answ", "{\"answ"),
            Decision::Allow,
            "partial JSON is not judged"
        );
        assert!(json_schema(&json!({"type": 12})).is_err());
    }

    #[test]
    fn pii_detection_with_luhn() {
        let g = pii([PiiKind::Email, PiiKind::Phone, PiiKind::PaymentCard]);
        assert!(denies(&g, "write to jane.doe@example.co.uk"));
        assert!(denies(&g, "call +44 20 7946 0958"));
        assert!(denies(&g, "call (555) 123-4567"));
        assert!(denies(&g, "card 4111 1111 1111 1111"));
        assert!(!denies(&g, "card 4111 1111 1111 1112"), "fails Luhn");
        assert!(!denies(&g, "order 12345 shipped in 2026"));
        assert!(luhn_valid("4111-1111-1111-1111"));
        assert!(!luhn_valid("1234"));
        assert_eq!(
            g.check.redact("mail a@b.io or pay with 4111111111111111."),
            "mail [REDACTED] or pay with [REDACTED]."
        );
    }

    #[tokio::test]
    async fn input_guardrails_check_only_a_fresh_user_message_and_can_redact() {
        let g = pii([PiiKind::Email])
            .direction(Direction::Input)
            .action(Action::Redact);
        let mut request = ProviderRequest::new(vec![Message::user("I am x@y.com")]);
        assert_eq!(g.before_call(&mut request).await, Decision::Allow);
        assert_eq!(request.messages[0].text(), "I am [REDACTED]");
        let deny = banned_words(["secret"]).direction(Direction::Input);
        let mut tool_round =
            ProviderRequest::new(vec![Message::user("secret"), Message::assistant("ok")]);
        assert_eq!(
            deny.before_call(&mut tool_round).await,
            Decision::Allow,
            "not re-checked on tool rounds"
        );
        let mut fresh = ProviderRequest::new(vec![Message::user("the secret plan")]);
        assert!(
            matches!(deny.before_call(&mut fresh).await, Decision::Deny(v) if v.hook == "banned_words")
        );
    }
}
