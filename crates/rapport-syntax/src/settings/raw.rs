//! `rapport.yaml` exactly as written. Durations and clock times stay text here so every
//! malformed one can be reported (serde would stop at the first); `resolve` applies the
//! defaults (docs/language.md, `rapport.yaml`).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::*;
use crate::parser::build::parse_duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSettings {
    brand: Option<String>,
    vars: Option<BTreeMap<String, String>>,
    channels: Option<BTreeMap<String, RawChannel>>,
    templates: Option<RawTemplates>,
    queues: Option<Vec<String>>,
    profile: Option<BTreeMap<String, FieldType>>,
    events: Option<BTreeMap<String, BTreeMap<String, FieldType>>>,
    disclosure: Option<String>,
    opt_out: Option<RawOptOut>,
    rate_limit: Option<RawRateLimit>,
    quiet_hours: Option<RawQuietHours>,
    escalation: Option<RawEscalation>,
    retention: Option<RawRetention>,
    dedupe_window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOptOut {
    keywords: Option<Vec<String>>,
    confirm: Option<String>,
    resubscribe: Option<Vec<String>>,
    resubscribe_confirm: Option<String>,
    help: Option<Vec<String>>,
    help_reply: Option<String>,
    footer: Option<String>,
    ambiguous: Option<Vec<String>>,
    clarify: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    max: u32,
    per: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuietHours {
    from: String,
    to: String,
    zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEscalation {
    #[serde(default)]
    keywords: Vec<String>,
    sentiment_below: Option<f64>,
    queue: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    transcripts: Option<String>,
    transactional: Option<String>,
}

/// `templates:` as a map of parameter lists or as a plain list of names.
#[derive(Debug)]
struct RawTemplates(BTreeMap<String, Option<Vec<String>>>);

impl<'de> Deserialize<'de> for RawTemplates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TemplatesVisitor;
        impl<'de> Visitor<'de> for TemplatesVisitor {
            type Value = RawTemplates;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of template names, or a map of names to their parameters")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawTemplates, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(name) = seq.next_element::<String>()? {
                    out.insert(name, None);
                }
                Ok(RawTemplates(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawTemplates, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((name, params)) = map.next_entry::<String, Option<Vec<String>>>()? {
                    out.insert(name, Some(params.unwrap_or_default()));
                }
                Ok(RawTemplates(out))
            }
        }
        d.deserialize_any(TemplatesVisitor)
    }
}

const DEFAULT_KEYWORDS: [&str; 9] = [
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
    "OPT OUT",
];
const DEFAULT_AMBIGUOUS: [&str; 4] = ["STOP", "UNSUBSCRIBE", "OPT OUT", "REVOKE"];

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn duration_or(text: &Option<String>, default_seconds: u64) -> Duration {
    text.as_deref()
        .and_then(|t| parse_duration(t.trim()).ok())
        .unwrap_or(Duration {
            seconds: default_seconds,
        })
}

/// `HH:MM`, 24-hour.
pub(crate) fn parse_clock(text: &str) -> Option<ClockTime> {
    let (h, m) = text.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(ClockTime {
        minutes: h * 60 + m,
    })
}

impl RawSettings {
    /// Reports what serde accepted but Rapport does not: malformed durations and times,
    /// a zero rate limit, an escalation with no queue.
    pub(super) fn validate(&self, source: &str, diags: &mut Vec<Diagnostic>) {
        let mut duration = |text: Option<&String>, path: &[&str]| {
            let Some(text) = text else { return };
            if let Err(problem) = parse_duration(text.trim()) {
                let why = match problem {
                    crate::DurationProblem::NoUnit => "it has no unit",
                    crate::DurationProblem::UnknownUnit => "its unit is not s, m, h or d",
                    crate::DurationProblem::Fraction => "it is not a whole number",
                    crate::DurationProblem::Zero => "it is zero",
                    crate::DurationProblem::TooLong => "it is too long",
                };
                diags.push(
                    Diagnostic::error(
                        Code::YamlBadValue,
                        format!("`{}` is not a duration: {why}", text.trim()),
                    )
                    .label(
                        key_span(source, path),
                        format!("`{}` is set here", path.join(".")),
                    )
                    .help("write a whole number and a unit: `30s`, `15m`, `24h` or `7d`"),
                );
            }
        };
        if let Some(channels) = &self.channels {
            for (name, ch) in channels {
                duration(ch.window.as_ref(), &["channels", name, "window"]);
            }
        }
        if let Some(r) = &self.rate_limit {
            duration(Some(&r.per), &["rate_limit", "per"]);
        }
        if let Some(r) = &self.retention {
            duration(r.transcripts.as_ref(), &["retention", "transcripts"]);
            duration(r.transactional.as_ref(), &["retention", "transactional"]);
        }
        duration(self.dedupe_window.as_ref(), &["dedupe_window"]);

        if let Some(r) = &self.rate_limit {
            if r.max == 0 {
                diags.push(
                    Diagnostic::error(
                        Code::YamlBadValue,
                        "`rate_limit.max` is 0, which would block every automated message",
                    )
                    .label(key_span(source, &["rate_limit", "max"]), "set here")
                    .help("use at least 1, or remove `rate_limit` for no limit"),
                );
            }
        }
        // A project must keep a way to opt out: STOP that does nothing is never wanted.
        if let Some(keywords) = self.opt_out.as_ref().and_then(|o| o.keywords.as_ref()) {
            let span = key_span(source, &["opt_out", "keywords"]);
            if keywords.is_empty() {
                diags.push(
                    Diagnostic::error(
                        Code::YamlBadValue,
                        "`opt_out.keywords` is empty: nobody could opt out",
                    )
                    .label(span, "set here")
                    .help("keep at least `STOP` (or remove the key for the defaults: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT, OPT OUT)"),
                );
            }
            for k in keywords {
                if !k.chars().any(char::is_alphanumeric) {
                    diags.push(
                        Diagnostic::error(
                            Code::YamlBadValue,
                            format!("the opt-out keyword {k:?} has no letters or digits, so no message could match it"),
                        )
                        .label(span, "in this list")
                        .help("write a word people send to opt out, such as `STOP`"),
                    );
                }
            }
        }
        if let Some(q) = &self.quiet_hours {
            for (key, text) in [("from", &q.from), ("to", &q.to)] {
                if parse_clock(text).is_none() {
                    diags.push(
                        Diagnostic::error(
                            Code::YamlBadValue,
                            format!("`{text}` is not a time of day"),
                        )
                        .label(
                            key_span(source, &["quiet_hours", key]),
                            format!("`quiet_hours.{key}` is set here"),
                        )
                        .help("write 24-hour time in quotes, e.g. \"21:00\""),
                    );
                }
            }
        }
        if let Some(e) = &self.escalation {
            if e.queue.is_none() {
                diags.push(
                    Diagnostic::error(
                        Code::YamlBadValue,
                        "`escalation` does not say which queue gets the conversation",
                    )
                    .label(key_span(source, &["escalation"]), "set here")
                    .help("add `queue: support` (one of `queues`)"),
                );
            }
            if let (Some(queue), Some(queues)) = (&e.queue, &self.queues) {
                if !queues.contains(queue) {
                    let help = match did_you_mean(queue, queues.iter().map(String::as_str)) {
                        Some(s) => format!("did you mean `{s}`? Or add `{queue}` to `queues`"),
                        None => format!(
                            "use one of `queues` ({}), or add `{queue}` to it",
                            queues.join(", ")
                        ),
                    };
                    diags.push(
                        Diagnostic::error(
                            Code::YamlBadValue,
                            format!("escalation queue `{queue}` is not one of `queues`"),
                        )
                        .label(key_span(source, &["escalation", "queue"]), "set here")
                        .help(help),
                    );
                }
            }
            if let Some(s) = e.sentiment_below {
                if !(-1.0..=1.0).contains(&s) {
                    diags.push(
                        Diagnostic::error(
                            Code::YamlBadValue,
                            format!("`sentiment_below` is {s}, outside -1 to 1"),
                        )
                        .label(
                            key_span(source, &["escalation", "sentiment_below"]),
                            "set here",
                        )
                        .help("sentiment scores run from -1 (negative) to 1 (positive), e.g. -0.6"),
                    );
                }
            }
        }
    }

    /// Applies the defaults (docs/language.md, `rapport.yaml`).
    pub(super) fn resolve(&self) -> Settings {
        let brand = self.brand.clone().unwrap_or_else(|| "Our team".into());
        let channels = match &self.channels {
            Some(c) => c
                .iter()
                .map(|(name, ch)| {
                    let window = ch
                        .window
                        .as_deref()
                        .and_then(|w| parse_duration(w.trim()).ok());
                    (name.clone(), Channel { window })
                })
                .collect(),
            None => {
                let day = Some(Duration { seconds: 86_400 });
                [
                    ("whatsapp", day),
                    ("messenger", day),
                    ("instagram", day),
                    ("sms", None),
                ]
                .into_iter()
                .map(|(n, window)| (n.to_string(), Channel { window }))
                .collect()
            }
        };
        let o = self.opt_out.as_ref();
        let text = |f: Option<&String>, default: String| f.cloned().unwrap_or(default);
        let list = |f: Option<&Vec<String>>, default: &[&str]| {
            f.cloned().unwrap_or_else(|| strings(default))
        };
        let opt_out = OptOut {
            keywords: list(o.and_then(|o| o.keywords.as_ref()), &DEFAULT_KEYWORDS),
            confirm: text(
                o.and_then(|o| o.confirm.as_ref()),
                format!("You're unsubscribed from automated messages from {brand}. Reply START to resubscribe."),
            ),
            resubscribe: list(o.and_then(|o| o.resubscribe.as_ref()), &["START", "UNSTOP"]),
            resubscribe_confirm: text(
                o.and_then(|o| o.resubscribe_confirm.as_ref()),
                "You're resubscribed. Reply STOP to opt out.".into(),
            ),
            help: list(o.and_then(|o| o.help.as_ref()), &["HELP", "INFO"]),
            help_reply: text(
                o.and_then(|o| o.help_reply.as_ref()),
                format!("{brand}: automated assistant. Reply STOP to opt out, or write 'agent' for a person."),
            ),
            footer: text(o.and_then(|o| o.footer.as_ref()), "Reply STOP to opt out.".into()),
            ambiguous: list(o.and_then(|o| o.ambiguous.as_ref()), &DEFAULT_AMBIGUOUS),
            clarify: text(
                o.and_then(|o| o.clarify.as_ref()),
                "Did you mean to stop our automated offers? Reply STOP to confirm, or START to keep them.".into(),
            ),
        };
        Settings {
            vars: self.vars.clone().unwrap_or_default(),
            channels,
            templates: self
                .templates
                .as_ref()
                .map(|t| t.0.clone())
                .unwrap_or_default(),
            queues: self.queues.clone().unwrap_or_default(),
            profile: self.profile.clone().unwrap_or_default(),
            events: self.events.clone().unwrap_or_default(),
            disclosure: self
                .disclosure
                .clone()
                .unwrap_or_else(|| "Automated reply:".into()),
            opt_out,
            rate_limit: self.rate_limit.as_ref().and_then(|r| {
                Some(RateLimit {
                    max: r.max,
                    per: parse_duration(r.per.trim()).ok()?,
                })
            }),
            quiet_hours: self.quiet_hours.as_ref().and_then(|q| {
                Some(QuietHours {
                    from: parse_clock(&q.from)?,
                    to: parse_clock(&q.to)?,
                    zone: q.zone.clone().unwrap_or_else(|| "UTC".into()),
                })
            }),
            escalation: self.escalation.as_ref().and_then(|e| {
                Some(Escalation {
                    keywords: e.keywords.clone(),
                    sentiment_below: e.sentiment_below,
                    queue: e.queue.clone()?,
                })
            }),
            retention: Retention {
                transcripts: duration_or(
                    &self.retention.as_ref().and_then(|r| r.transcripts.clone()),
                    180 * 86_400,
                ),
                transactional: duration_or(
                    &self
                        .retention
                        .as_ref()
                        .and_then(|r| r.transactional.clone()),
                    365 * 86_400,
                ),
            },
            dedupe_window: duration_or(&self.dedupe_window, 86_400),
            brand,
        }
    }
}
