//! The provider stage in continuous mode: one run, many turns (a session).
//!
//! The conversation lives once, in the stage, for the whole run: a turn appends to it, and
//! nothing copies it per turn. Each end-of-turn element starts a turn, which answers the turn
//! id it carries (or begins one); an interrupt of the run ends the answer in progress at its
//! next await point, keeping what was said (see [`ProviderStage::turn`]). With
//! [`Settle::AfterPlayback`] the final answer is held until its playback is settled, then cut
//! to what the user heard.

use std::collections::BTreeMap;

use promptkit_core::{Message, Role};
use tokio::sync::watch;

use super::tool_loop::{Scope, cut_to_heard};
use super::{ProviderStage, Settle};
use crate::context::StageContext;
use crate::element::{Control, Element, Payload};
use crate::input::StageInput;
use crate::output::StageOutput;
use crate::run_context::Playback;
use crate::stage::StageError;

/// A final answer waiting for its playback to settle.
struct Held {
    message: Message,
    turn_id: u64,
    /// The run's interrupt epoch when the answer started.
    epoch: u64,
}

/// What the session loop woke up for.
enum Wake {
    Element(Option<Element>),
    /// The held answer's playback is settled (it ended, or was interrupted).
    Settled,
}

impl ProviderStage {
    pub(super) async fn run_continuous(
        &self,
        cx: &StageContext,
        mut input: StageInput,
        output: &StageOutput,
    ) -> Result<(), StageError> {
        let no_approvals = BTreeMap::new();
        let mut conversation: Vec<Message> = Vec::new();
        let mut held: Option<Held> = None;
        let mut playback = cx.run().watch_playback();
        // The turn of the latest user message, for an end of turn that carries none.
        let mut user_turn: Option<u64> = None;
        loop {
            let wake = match &held {
                Some(answer) => wait(cx, &mut input, &mut playback, answer).await,
                None => Wake::Element(input.recv().await),
            };
            let element = match wake {
                Wake::Settled => {
                    self.settle(cx, output, &mut conversation, held.take())
                        .await?;
                    continue;
                }
                Wake::Element(None) => break,
                Wake::Element(Some(element)) => element,
            };
            match &element.payload {
                Payload::Message(m) if element.meta.from_history => {
                    conversation.push((**m).clone());
                    output.send(element).await?;
                }
                Payload::Message(m) => {
                    // The conversation moves on: what the user heard of the last answer is
                    // recorded first, and open calls are closed, so the order stays valid.
                    self.settle(cx, output, &mut conversation, held.take())
                        .await?;
                    let turn_id = element.meta.turn_id;
                    if m.role == Role::User {
                        user_turn = turn_id;
                    }
                    let scope = Scope::new(
                        cx,
                        output,
                        turn_id
                            .or_else(|| cx.run().current_turn())
                            .unwrap_or_default(),
                        true,
                        self.config.settle,
                    );
                    self.settle_history(&scope, &mut conversation, &no_approvals, true)
                        .await?;
                    conversation.push((**m).clone());
                    output.send(element).await?;
                }
                Payload::Control(Control::EndOfTurn | Control::EndOfStream) => {
                    self.settle(cx, output, &mut conversation, held.take())
                        .await?;
                    let end_of_stream = element.is_end_of_stream();
                    let turn_id = element
                        .meta
                        .turn_id
                        .or(user_turn.take())
                        .unwrap_or_else(|| cx.run().begin_turn());
                    held = self.answer(cx, output, &mut conversation, turn_id).await?;
                    output.send(element.with_turn(Some(turn_id))).await?;
                    if end_of_stream {
                        break;
                    }
                }
                _ => output.send(element).await?,
            }
        }
        self.settle(cx, output, &mut conversation, held.take())
            .await?;
        while let Some(element) = input.recv().await {
            output.send(element).await?;
        }
        Ok(())
    }

    /// Runs one turn of the session. A failed turn does not end the session: what was said
    /// is kept, and the failure goes downstream as a typed error element. Returns the final
    /// answer when it is held for its playback.
    async fn answer(
        &self,
        cx: &StageContext,
        output: &StageOutput,
        conversation: &mut Vec<Message>,
        turn_id: u64,
    ) -> Result<Option<Held>, StageError> {
        let scope = Scope::new(cx, output, turn_id, true, self.config.settle);
        match self.turn(&scope, conversation).await {
            Ok(end) => {
                tracing::debug!(stage = %cx.name(), turn_id, outcome = ?end.outcome, "turn ended");
                Ok(end.held.map(|message| Held {
                    message,
                    turn_id,
                    epoch: scope.epoch,
                }))
            }
            Err(super::TurnError::Output(closed)) => Err(closed.into()),
            Err(error) => {
                let element = Element::error_from(cx.name(), &error).with_turn(Some(turn_id));
                output.send(element).await?;
                Ok(None)
            }
        }
    }

    /// Records a held answer: whole when it was not interrupted, otherwise cut to what the
    /// user heard, with finish reason `cancelled`.
    async fn settle(
        &self,
        cx: &StageContext,
        output: &StageOutput,
        conversation: &mut Vec<Message>,
        held: Option<Held>,
    ) -> Result<(), StageError> {
        let Some(Held {
            mut message,
            turn_id,
            epoch,
        }) = held
        else {
            return Ok(());
        };
        if cx.run().epoch() > epoch {
            cut_to_heard(cx, turn_id, &mut message);
            if message.text().is_empty() {
                // Interrupted before a word was heard: nothing was said.
                return Ok(());
            }
        }
        let scope = Scope::new(cx, output, turn_id, true, Settle::Immediately);
        self.push(&scope, conversation, message).await?;
        Ok(())
    }
}

/// Waits for the next element, or for the held answer's playback to settle: an interrupt
/// after the answer started, or a report that its playback stopped.
async fn wait(
    cx: &StageContext,
    input: &mut StageInput,
    playback: &mut watch::Receiver<Playback>,
    held: &Held,
) -> Wake {
    let interrupted = cx.run().interrupted_after(held.epoch);
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            biased;
            _ = &mut interrupted => return Wake::Settled,
            changed = playback.changed() => {
                let report = *playback.borrow_and_update();
                if changed.is_err() || (report.turn_id == Some(held.turn_id) && !report.playing) {
                    return Wake::Settled;
                }
            }
            element = input.recv() => return Wake::Element(element),
        }
    }
}
