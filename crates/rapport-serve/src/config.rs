//! `host.yaml`: the deployment's file (where to listen, how to reach each channel, where
//! to post handoffs and events). Secrets are never written in it: a value `${NAME}` is
//! read from the environment, and a variable that is not set is an error naming it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// A problem with the configuration, in the style of `rapport check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub error: bool,
    /// Where: `host.yaml:3:5`, or a key path such as `channels.whatsapp.app_secret`.
    pub at: String,
    pub message: String,
    pub help: Option<String>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = if self.error { "error" } else { "warning" };
        write!(f, "{level}: {}: {}", self.at, self.message)?;
        if let Some(h) = &self.help {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: String,
    api_token: String,
    #[serde(default)]
    tick: Option<String>,
    #[serde(default)]
    channels: BTreeMap<String, RawChannel>,
    #[serde(default)]
    sinks: BTreeMap<String, RawSink>,
    #[serde(default)]
    delivery: Option<RawDelivery>,
    #[serde(default)]
    grace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    connector: String,
    phone_number_id: Option<String>,
    access_token: Option<String>,
    app_secret: Option<String>,
    verify_token: Option<String>,
    api_base: Option<String>,
    template_language: Option<String>,
    /// Messages per second to the platform from this number, at most.
    rate: Option<f64>,
    /// Seconds between two messages to the same person, at least.
    per_recipient: Option<String>,
    bot_token: Option<String>,
    secret_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    url: String,
    secret: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    max_attempts: Option<u32>,
    backoff: Option<RawBackoff>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    first: Option<String>,
    max: Option<String>,
}

/// The WhatsApp Cloud API connection of a channel.
#[derive(Debug, Clone)]
pub struct WhatsApp {
    pub phone_number_id: String,
    pub access_token: String,
    pub app_secret: String,
    pub verify_token: String,
    /// `https://graph.facebook.com/v23.0`; tests point it at a local mock.
    pub api_base: String,
    /// The language code of templates (`en` unless set).
    pub template_language: String,
    /// Messages per second from this number, at most (WhatsApp's default: 80).
    pub rate: f64,
    /// Time between two messages to the same person, at least (WhatsApp: 6 s).
    pub per_recipient: Duration,
}

/// The Telegram Bot API connection of a channel.
#[derive(Debug, Clone)]
pub struct Telegram {
    pub bot_token: String,
    /// What Telegram sends in `X-Telegram-Bot-Api-Secret-Token` (set with `setWebhook`).
    pub secret_token: String,
    /// `https://api.telegram.org`; tests point it at a local mock.
    pub api_base: String,
    /// Messages per second from the bot, at most (Telegram's guidance: about 30).
    pub rate: f64,
    /// Time between two messages to the same chat, at least (Telegram: about 1 s).
    pub per_recipient: Duration,
}

/// How a channel of the bundle is reached.
#[derive(Debug, Clone)]
pub enum Connector {
    WhatsApp(WhatsApp),
    Telegram(Telegram),
}

impl Connector {
    /// Messages per second to the platform, at most.
    pub fn rate(&self) -> f64 {
        match self {
            Connector::WhatsApp(c) => c.rate,
            Connector::Telegram(c) => c.rate,
        }
    }

    /// Time between two messages to the same person, at least.
    pub fn per_recipient(&self) -> Duration {
        match self {
            Connector::WhatsApp(c) => c.per_recipient,
            Connector::Telegram(c) => c.per_recipient,
        }
    }
}

/// Where actions that are not messages go.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub url: String,
    pub secret: String,
}

/// Retries of a delivery.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryConfig {
    pub max_attempts: u32,
    pub first: Duration,
    pub max: Duration,
    /// One call's time limit.
    pub timeout: Duration,
}

/// A checked `host.yaml`, with its secrets read from the environment.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub listen: SocketAddr,
    pub api_token: String,
    pub tick: Duration,
    pub channels: BTreeMap<String, Connector>,
    /// By action type: `handoff` (also `handoff_closed`), `review`, `emit`, `tag`, `alert`.
    pub sinks: BTreeMap<String, SinkConfig>,
    pub delivery: DeliveryConfig,
    /// How long a stop waits for calls in flight.
    pub grace: Duration,
}

/// The sink names `host.yaml` knows.
pub const SINKS: [&str; 5] = ["handoff", "review", "emit", "tag", "alert"];

/// `${NAME}` as the parser sees it: `{` and `}` end a plain value inside a YAML flow
/// mapping (`{ secret: ${X} }`), so references are rewritten to brackets YAML gives no
/// meaning to (of the same length in characters, so error columns stay right).
const OPEN: &str = "$\u{27E8}";
const CLOSE: char = '\u{27E9}';

fn protect_references(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('}') {
            out.push_str(OPEN);
            out.push_str(&after[..name_len]);
            out.push(CLOSE);
            rest = &after[name_len + 1..];
        } else {
            out.push_str("${");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Reads a duration written `500ms`, `20s`, `10m`, `1h` or `7d`.
pub fn duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// Parses `host.yaml` (named `file` in messages), reading `${NAME}` values with `env`.
/// Returns the configuration when nothing is an error, and every problem found.
pub fn parse(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<HostConfig>, Vec<Problem>) {
    let mut problems = Vec::new();
    let text = &protect_references(text);
    let raw: Raw = match serde_yaml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let at = match e.location() {
                Some(l) => format!("{file}:{}:{}", l.line(), l.column()),
                None => file.to_string(),
            };
            problems.push(Problem {
                error: true,
                at,
                message: e.to_string(),
                help: Some("see docs/deploy.md for every key of host.yaml".into()),
            });
            return (None, problems);
        }
    };
    let mut err = |at: String, message: String, help: Option<&str>| {
        problems.push(Problem {
            error: true,
            at,
            message,
            help: help.map(str::to_string),
        })
    };
    // `${NAME}` anywhere in a value is replaced by the variable.
    let expand = |path: &str, value: &str, err: &mut dyn FnMut(String, String, Option<&str>)| {
        if value.contains("${") {
            err(
                path.to_string(),
                format!("`{value}` has a `${{` that is not a reference"),
                Some("write secrets as ${NAME}, NAME of letters, digits and _"),
            );
            return String::new();
        }
        let mut out = String::new();
        let mut rest = value;
        while let Some(start) = rest.find(OPEN) {
            out.push_str(&rest[..start]);
            let after = &rest[start + OPEN.len()..];
            let Some(end) = after.find(CLOSE) else {
                err(
                    path.to_string(),
                    format!("`{value}` opens `${{` without closing it"),
                    Some("write secrets as ${NAME}"),
                );
                return String::new();
            };
            let name = &after[..end];
            match env(name) {
                Some(v) if !v.is_empty() => out.push_str(&v),
                _ => err(
                    path.to_string(),
                    format!("the environment variable `{name}` is not set (or is empty)"),
                    Some("set it in the service's environment (see docs/deploy.md, the systemd unit)"),
                ),
            }
            rest = &after[end + CLOSE.len_utf8()..];
        }
        out.push_str(rest);
        out
    };
    let listen_text = expand("listen", &raw.listen, &mut err);
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            err(
                "listen".into(),
                format!("`{listen_text}` is not an address and port"),
                Some("write it like 127.0.0.1:8080"),
            );
            None
        }
    };
    let api_token = expand("api_token", &raw.api_token, &mut err);
    if !api_token.is_empty() && api_token.len() < 16 {
        err(
            "api_token".into(),
            "the API token is shorter than 16 characters".into(),
            Some("generate one with `openssl rand -hex 32`"),
        );
    }
    let dur = |path: &str,
               text: Option<&String>,
               default: Duration,
               err: &mut dyn FnMut(String, String, Option<&str>)|
     -> Duration {
        match text {
            None => default,
            Some(t) => match duration(t) {
                Some(d) if !d.is_zero() => d,
                _ => {
                    err(
                        path.to_string(),
                        format!("`{t}` is not a duration"),
                        Some("write a whole number and a unit: 500ms, 20s, 10m, 1h, 7d"),
                    );
                    default
                }
            },
        }
    };
    let tick = dur("tick", raw.tick.as_ref(), Duration::from_secs(1), &mut err);
    let grace = dur(
        "grace",
        raw.grace.as_ref(),
        Duration::from_secs(20),
        &mut err,
    );
    let d = raw.delivery.as_ref();
    let b = d.and_then(|d| d.backoff.as_ref());
    let delivery = DeliveryConfig {
        max_attempts: d.and_then(|d| d.max_attempts).unwrap_or(8).max(1),
        first: dur(
            "delivery.backoff.first",
            b.and_then(|b| b.first.as_ref()),
            Duration::from_secs(1),
            &mut err,
        ),
        max: dur(
            "delivery.backoff.max",
            b.and_then(|b| b.max.as_ref()),
            Duration::from_secs(600),
            &mut err,
        ),
        timeout: dur(
            "delivery.timeout",
            d.and_then(|d| d.timeout.as_ref()),
            Duration::from_secs(15),
            &mut err,
        ),
    };
    let mut channels = BTreeMap::new();
    for (name, c) in &raw.channels {
        let at = |k: &str| format!("channels.{name}.{k}");
        match c.connector.as_str() {
            "whatsapp_cloud" => {
                let need =
                    |k: &str,
                     v: &Option<String>,
                     err: &mut dyn FnMut(String, String, Option<&str>)| match v
                    {
                        Some(v) => expand(&at(k), v, err),
                        None => {
                            err(
                                format!("channels.{name}"),
                                format!("the whatsapp_cloud connector needs `{k}`"),
                                None,
                            );
                            String::new()
                        }
                    };
                let phone_number_id = need("phone_number_id", &c.phone_number_id, &mut err);
                let access_token = need("access_token", &c.access_token, &mut err);
                let app_secret = need("app_secret", &c.app_secret, &mut err);
                let verify_token = need("verify_token", &c.verify_token, &mut err);
                let api_base = c
                    .api_base
                    .as_deref()
                    .map(|v| expand(&at("api_base"), v, &mut err))
                    .unwrap_or_else(|| "https://graph.facebook.com/v23.0".into());
                if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
                    err(
                        at("api_base"),
                        format!("`{api_base}` is not an http(s) URL"),
                        None,
                    );
                }
                let rate = c.rate.unwrap_or(80.0);
                if !(rate.is_finite() && rate > 0.0) {
                    err(
                        at("rate"),
                        format!("`{rate}` is not a positive number of messages per second"),
                        None,
                    );
                }
                let per_recipient = dur(
                    &at("per_recipient"),
                    c.per_recipient.as_ref(),
                    Duration::from_secs(6),
                    &mut err,
                );
                channels.insert(
                    name.clone(),
                    Connector::WhatsApp(WhatsApp {
                        phone_number_id,
                        access_token,
                        app_secret,
                        verify_token,
                        api_base: api_base.trim_end_matches('/').to_string(),
                        template_language: c
                            .template_language
                            .as_deref()
                            .map(|v| expand(&at("template_language"), v, &mut err))
                            .unwrap_or_else(|| "en".into()),
                        rate: if rate.is_finite() && rate > 0.0 {
                            rate
                        } else {
                            80.0
                        },
                        per_recipient,
                    }),
                );
            }
            "telegram" => {
                let mut need = |k: &str, v: &Option<String>| match v {
                    Some(v) => expand(&at(k), v, &mut err),
                    None => {
                        err(
                            format!("channels.{name}"),
                            format!("the telegram connector needs `{k}`"),
                            None,
                        );
                        String::new()
                    }
                };
                let bot_token = need("bot_token", &c.bot_token);
                let secret_token = need("secret_token", &c.secret_token);
                // Telegram allows A-Z, a-z, 0-9, _ and - in a secret token, 1 to 256 long.
                let token_ok = !secret_token.is_empty()
                    && secret_token.len() <= 256
                    && secret_token
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
                if c.secret_token.is_some() && !secret_token.is_empty() && !token_ok {
                    err(
                        at("secret_token"),
                        "a Telegram secret token is 1 to 256 characters of A-Z, a-z, 0-9, _ and -".into(),
                        None,
                    );
                }
                let api_base = c
                    .api_base
                    .as_deref()
                    .map(|v| expand(&at("api_base"), v, &mut err))
                    .unwrap_or_else(|| "https://api.telegram.org".into());
                if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
                    err(at("api_base"), format!("`{api_base}` is not an http(s) URL"), None);
                }
                let rate = c.rate.unwrap_or(30.0);
                if !(rate.is_finite() && rate > 0.0) {
                    err(at("rate"), format!("`{rate}` is not a positive number of messages per second"), None);
                }
                let per_recipient = dur(&at("per_recipient"), c.per_recipient.as_ref(), Duration::from_secs(1), &mut err);
                channels.insert(
                    name.clone(),
                    Connector::Telegram(Telegram {
                        bot_token,
                        secret_token,
                        api_base: api_base.trim_end_matches('/').to_string(),
                        rate: if rate.is_finite() && rate > 0.0 { rate } else { 30.0 },
                        per_recipient,
                    }),
                );
            }
            "instagram" | "messenger" | "webhook" => err(
                at("connector"),
                format!(
                    "the `{}` connector is not available in this version of rapport serve",
                    c.connector
                ),
                Some(
                    "this version connects WhatsApp (whatsapp_cloud) and Telegram (telegram); the other channels come next",
                ),
            ),
            other => err(
                at("connector"),
                format!("unknown connector `{other}`"),
                Some("use whatsapp_cloud or telegram"),
            ),
        }
    }
    let mut sinks = BTreeMap::new();
    for (name, s) in &raw.sinks {
        if !SINKS.contains(&name.as_str()) {
            err(
                format!("sinks.{name}"),
                format!("unknown sink `{name}`"),
                Some("sinks are handoff, review, emit, tag and alert"),
            );
            continue;
        }
        let url = expand(&format!("sinks.{name}.url"), &s.url, &mut err);
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            err(
                format!("sinks.{name}.url"),
                format!("`{url}` is not an http(s) URL"),
                None,
            );
        }
        let secret = expand(&format!("sinks.{name}.secret"), &s.secret, &mut err);
        sinks.insert(name.clone(), SinkConfig { url, secret });
    }
    if let Some(a) = listen {
        if !is_private(&a) {
            problems.push(Problem {
                error: false,
                at: "listen".into(),
                message: format!("{a} is not a loopback or private address"),
                help: Some("serve plain HTTP only behind a TLS proxy on the same host or network (docs/deploy.md)".into()),
            });
        }
    }
    // Messages quote values as written: `${NAME}`, not the parser's brackets.
    for p in &mut problems {
        p.message = p.message.replace(OPEN, "${").replace(CLOSE, "}");
    }
    let ok = !problems.iter().any(|p| p.error);
    let config = match (ok, listen) {
        (true, Some(listen)) => Some(HostConfig {
            listen,
            api_token,
            tick,
            channels,
            sinks,
            delivery,
            grace,
        }),
        _ => None,
    };
    (config, problems)
}

fn is_private(a: &SocketAddr) -> bool {
    match a.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        std::net::IpAddr::V6(ip) => ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// What `host.yaml` and the bundle say about each other: a channel of the bundle with no
/// connector is an error; a connector for a channel the bundle lacks is a warning.
pub fn against_bundle(config: &HostConfig, bundle: &rapport_bundle::Bundle) -> Vec<Problem> {
    let mut problems = Vec::new();
    for name in bundle.settings.channels.keys() {
        if !config.channels.contains_key(name) {
            problems.push(Problem {
                error: true,
                at: format!("channels.{name}"),
                message: format!("the bundle uses channel `{name}`, which host.yaml does not connect"),
                help: Some(format!("add `channels: {{ {name}: {{ connector: ... }} }}`, or remove the channel from rapport.yaml")),
            });
        }
    }
    for name in config.channels.keys() {
        if !bundle.settings.channels.contains_key(name) {
            problems.push(Problem {
                error: false,
                at: format!("channels.{name}"),
                message: format!("host.yaml connects `{name}`, which the bundle does not use: its messages start no flow"),
                help: None,
            });
        }
    }
    let whatsapp = config
        .channels
        .values()
        .any(|c| matches!(c, Connector::WhatsApp(_)));
    if whatsapp && bundle.settings.dedupe_window < 7 * 86_400 {
        problems.push(Problem {
            error: false,
            at: "rapport.yaml dedupe_window".into(),
            message: format!(
                "the project keeps event ids {}s; WhatsApp redelivers for up to 7 days, so the host keeps them 7d",
                bundle.settings.dedupe_window
            ),
            help: None,
        });
    }
    let missing: Vec<&str> = SINKS
        .iter()
        .copied()
        .filter(|s| !config.sinks.contains_key(*s))
        .collect();
    if !missing.is_empty() {
        problems.push(Problem {
            error: false,
            at: "sinks".into(),
            message: format!(
                "no sink for {}: such actions are recorded as failed with code no_sink",
                missing.join(", ")
            ),
            help: Some("add `sinks: { NAME: { url: ..., secret: ${NAME_SECRET} } }` for the ones the flows use".into()),
        });
    }
    problems
}
