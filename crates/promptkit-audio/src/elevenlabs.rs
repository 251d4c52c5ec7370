//! ElevenLabs streaming synthesis (to come).
