//! `/metrics` in the Prometheus text format (docs/deploy.md lists every series).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TypeChannel {
    pub(crate) r#type: String,
    pub(crate) channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Reason {
    pub(crate) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Endpoint {
    pub(crate) endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ActionLabels {
    pub(crate) r#type: String,
    pub(crate) flow: String,
    pub(crate) version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Attempt {
    pub(crate) channel: String,
    pub(crate) outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Status {
    /// The channel, or `sink:NAME` for a sink's answer.
    pub(crate) channel: String,
    /// The action's type: `send`, `reply`, `hide`, `handoff`, …
    pub(crate) r#type: String,
    pub(crate) status: String,
}

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) events_received: Family<TypeChannel, Counter>,
    pub(crate) events_rejected: Family<Reason, Counter>,
    pub(crate) signature_failures: Family<Endpoint, Counter>,
    pub(crate) duplicates: Counter,
    pub(crate) actions: Family<ActionLabels, Counter>,
    pub(crate) suppressions: Family<Reason, Counter>,
    pub(crate) delivery_attempts: Family<Attempt, Counter>,
    pub(crate) delivery_statuses: Family<Status, Counter>,
    pub(crate) delivery_latency: Histogram,
    pub(crate) first_response: Histogram,
    pub(crate) webhook_seconds: Histogram,
    pub(crate) open_handoffs: Gauge,
    pub(crate) oldest_open_handoff: Gauge,
    pub(crate) inbox_lag: Gauge,
    pub(crate) outbox_depth: Gauge,
    pub(crate) resends_after_crash: Counter,
    pub(crate) ignored_parts: Counter,
    /// `delivery` events made by the host and not recorded by the engine yet, with
    /// their labels (see [`Metrics::expect_status`]).
    pending_statuses: std::sync::Mutex<std::collections::HashMap<String, Status>>,
}

impl Metrics {
    /// A `delivery` event the host made (the outcome of a call, or a platform's status):
    /// its labels, kept until the engine records the event, which is when it counts. A
    /// redelivered status is a duplicate the engine drops, and counts nothing.
    pub(crate) fn expect_status(&self, event: &str, channel: &str, kind: &str, status: &str) {
        if let Ok(mut pending) = self.pending_statuses.lock() {
            if pending.len() > 100_000 {
                // Events lost to a stop never come back here; keep memory bounded.
                pending.clear();
            }
            pending.insert(
                event.to_string(),
                Status {
                    channel: channel.to_string(),
                    r#type: kind.to_string(),
                    status: status.to_string(),
                },
            );
        }
    }

    /// The engine recorded the `delivery` event `event` (`counted`), or dropped it as a
    /// duplicate. An event the host did not make (a gateway's, through `/v1/events`) is
    /// counted with the channel of its contact and no type.
    pub(crate) fn status_recorded(
        &self,
        event: &str,
        counted: bool,
        contact: Option<&str>,
        status: &str,
    ) {
        let labels = self
            .pending_statuses
            .lock()
            .ok()
            .and_then(|mut p| p.remove(event));
        if !counted {
            return;
        }
        let labels = labels.unwrap_or_else(|| Status {
            channel: contact
                .and_then(|c| c.split_once(':'))
                .map(|(ch, _)| ch.to_string())
                .unwrap_or_default(),
            r#type: String::new(),
            status: status.to_string(),
        });
        self.delivery_statuses.get_or_create(&labels).inc();
    }

    /// An event of `kind` accepted into the inbox from `channel`.
    pub(crate) fn received(&self, kind: &str, channel: &str) {
        self.events_received
            .get_or_create(&TypeChannel {
                r#type: kind.to_string(),
                channel: channel.to_string(),
            })
            .inc();
    }

    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("rapport");
        let m = Metrics {
            events_received: Family::default(),
            events_rejected: Family::default(),
            signature_failures: Family::default(),
            duplicates: Counter::default(),
            actions: Family::default(),
            suppressions: Family::default(),
            delivery_attempts: Family::default(),
            delivery_statuses: Family::default(),
            // 1 ms to about 9 minutes.
            delivery_latency: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            first_response: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            webhook_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            open_handoffs: Gauge::default(),
            oldest_open_handoff: Gauge::default(),
            inbox_lag: Gauge::default(),
            outbox_depth: Gauge::default(),
            resends_after_crash: Counter::default(),
            ignored_parts: Counter::default(),
            pending_statuses: Default::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "events_received",
            "Events accepted into the inbox, by type and channel",
            m.events_received.clone(),
        );
        r.register(
            "events_rejected",
            "Events rejected, by reason",
            m.events_rejected.clone(),
        );
        r.register(
            "webhook_signature_failures",
            "Webhooks refused for a bad or missing signature",
            m.signature_failures.clone(),
        );
        r.register(
            "duplicate_events",
            "Events already processed (platform redeliveries)",
            m.duplicates.clone(),
        );
        r.register(
            "actions",
            "Actions released, by type, flow and version",
            m.actions.clone(),
        );
        r.register(
            "suppressions",
            "Sends suppressed, by reason",
            m.suppressions.clone(),
        );
        r.register(
            "delivery_attempts",
            "Calls to platforms and sinks, by channel and outcome",
            m.delivery_attempts.clone(),
        );
        r.register(
            "delivery_statuses",
            "Delivery outcomes and the platforms' status webhooks, by channel (sink:NAME for a sink), action type and status",
            m.delivery_statuses.clone(),
        );
        r.register(
            "delivery_latency_seconds",
            "From an action's release to its 2xx",
            m.delivery_latency.clone(),
        );
        r.register(
            "first_response_seconds",
            "From an inbound message to the first automated message to that contact",
            m.first_response.clone(),
        );
        r.register(
            "webhook_seconds",
            "From a webhook's arrival to its answer",
            m.webhook_seconds.clone(),
        );
        r.register(
            "open_handoffs",
            "Handoffs open (contacts waiting for a person)",
            m.open_handoffs.clone(),
        );
        r.register(
            "oldest_open_handoff_seconds",
            "Age of the oldest open handoff (0 when none is open)",
            m.oldest_open_handoff.clone(),
        );
        r.register(
            "inbox_lag",
            "Events acknowledged but not processed yet",
            m.inbox_lag.clone(),
        );
        r.register(
            "outbox_depth",
            "Actions released but not delivered yet",
            m.outbox_depth.clone(),
        );
        r.register(
            "resends_after_crash",
            "Actions sent again because a stop came between the platform's answer and its record",
            m.resends_after_crash.clone(),
        );
        r.register(
            "ignored_payload_parts",
            "Signed webhook parts that could not be understood (answered 200, audited)",
            m.ignored_parts.clone(),
        );
        Metrics { registry, ..m }
    }

    pub(crate) fn delivery_attempt(&self, channel: &str, outcome: &str) {
        self.delivery_attempts
            .get_or_create(&Attempt {
                channel: channel.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
