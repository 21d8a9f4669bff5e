//! Rapport's runtime core: a pure, deterministic function of (bundle, contact state,
//! event) to (new state, actions, audit records), enforcing the policies of
//! docs/runtime.md: consent, STOP/START/HELP, rate limits, quiet hours, messaging windows,
//! disclosure, handoffs, timers and staged rollouts.
//!
//! Event time is the clock: there is no wall clock, no I/O and no randomness here.

pub mod deploy;
mod engine;
pub mod event;
mod matching;
pub mod output;
pub mod rollout;
mod state;

pub use engine::{Changes, Engine, Loaded, Loader, Output, RunFact, SeenEvents, TimerChange};
pub use event::{
    decode, format_time, line_text, parse_time, Body, DeliveryEffect, DeliveryStatus, Event,
    Millis, Rejected,
};
pub use output::{Action, ActionKind, Audit};
pub use state::{Name, VersionStats};
