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
    #[serde(default)]
    console: Option<RawConsole>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    #[serde(default)]
    secure_cookies: Option<bool>,
    #[serde(default)]
    session: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    connector: String,
    phone_number_id: Option<String>,
    account_id: Option<String>,
    page_id: Option<String>,
    access_token: Option<String>,
    app_secret: Option<String>,
    verify_token: Option<String>,
    api_base: Option<String>,
    template_language: Option<String>,
    /// Messages per second to the platform from this channel, at most.
    rate: Option<f64>,
    /// Time between two messages to the same person, at least.
    per_recipient: Option<String>,
    bot_token: Option<String>,
    secret_token: Option<String>,
    url: Option<String>,
    secret: Option<String>,
}

impl RawChannel {
    /// The keys that name how to reach the platform, with their values.
    fn given(&self) -> [(&'static str, Option<&String>); 11] {
        [
            ("phone_number_id", self.phone_number_id.as_ref()),
            ("account_id", self.account_id.as_ref()),
            ("page_id", self.page_id.as_ref()),
            ("access_token", self.access_token.as_ref()),
            ("app_secret", self.app_secret.as_ref()),
            ("verify_token", self.verify_token.as_ref()),
            ("api_base", self.api_base.as_ref()),
            ("bot_token", self.bot_token.as_ref()),
            ("secret_token", self.secret_token.as_ref()),
            ("url", self.url.as_ref()),
            ("secret", self.secret.as_ref()),
        ]
    }
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

/// How fast a channel may send: the platform's published limits unless host.yaml says.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages per second to the platform from this channel, at most.
    pub rate: f64,
    /// Time between two messages to the same person, at least.
    pub per_recipient: Duration,
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
    /// 80 messages/s per number and one message per 6 s to the same person by default.
    pub limits: Limits,
}

/// Which of Meta's messaging platforms a [`Meta`] connection reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaPlatform {
    /// Instagram DMs and comments (`object: instagram`).
    Instagram,
    /// Messenger and the Page's Facebook comments (`object: page`).
    Messenger,
}

/// An Instagram professional account or a Facebook Page, through the Graph API.
#[derive(Debug, Clone)]
pub struct Meta {
    pub platform: MetaPlatform,
    /// The Instagram account id, or the Page id.
    pub id: String,
    pub access_token: String,
    pub app_secret: String,
    pub verify_token: String,
    /// `https://graph.facebook.com/v23.0`; tests point it at a local mock.
    pub api_base: String,
    /// 100 messages/s and no spacing by default.
    pub limits: Limits,
}

/// The Telegram Bot API connection of a channel.
#[derive(Debug, Clone)]
pub struct Telegram {
    pub bot_token: String,
    /// What Telegram sends in `X-Telegram-Bot-Api-Secret-Token` (set with `setWebhook`).
    pub secret_token: String,
    /// `https://api.telegram.org`; tests point it at a local mock.
    pub api_base: String,
    /// About 30 messages/s from a bot and one a second to the same chat by default.
    pub limits: Limits,
}

/// A channel with no built-in connector (an SMS gateway, say): each send is POSTed as
/// the action's JSON, signed like the sinks' calls.
#[derive(Debug, Clone)]
pub struct WebhookOut {
    pub url: String,
    pub secret: String,
    /// 10 messages/s and no spacing by default.
    pub limits: Limits,
}

/// How a channel of the bundle is reached.
#[derive(Debug, Clone)]
pub enum Connector {
    WhatsApp(WhatsApp),
    Meta(Meta),
    Telegram(Telegram),
    Webhook(WebhookOut),
}

impl Connector {
    fn limits(&self) -> Limits {
        match self {
            Connector::WhatsApp(c) => c.limits,
            Connector::Meta(c) => c.limits,
            Connector::Telegram(c) => c.limits,
            Connector::Webhook(c) => c.limits,
        }
    }

    /// Messages per second to the platform, at most.
    pub fn rate(&self) -> f64 {
        self.limits().rate
    }

    /// Time between two messages to the same person, at least.
    pub fn per_recipient(&self) -> Duration {
        self.limits().per_recipient
    }

    /// The app secret that signs this channel's webhooks and the verify token of Meta's
    /// handshake, for the channels Meta serves.
    pub fn meta_secrets(&self) -> Option<(&str, &str)> {
        match self {
            Connector::WhatsApp(c) => Some((&c.app_secret, &c.verify_token)),
            Connector::Meta(c) => Some((&c.app_secret, &c.verify_token)),
            Connector::Telegram(_) | Connector::Webhook(_) => None,
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
    pub console: ConsoleConfig,
}

/// The web console's sessions.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Session cookies are `Secure` (sent over HTTPS only): turn it off only when the
    /// console is reached over plain HTTP on a trusted network.
    pub secure_cookies: bool,
    /// How long a sign-in lasts.
    pub session: Duration,
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
        let connector = c.connector.as_str();
        // What each connector needs, and what it must not be given.
        let needs: &[&str] = match connector {
            "whatsapp_cloud" => &[
                "phone_number_id",
                "access_token",
                "app_secret",
                "verify_token",
            ],
            "instagram" => &["account_id", "access_token", "app_secret", "verify_token"],
            "messenger" => &["page_id", "access_token", "app_secret", "verify_token"],
            "telegram" => &["bot_token", "secret_token"],
            "webhook" => &["url", "secret"],
            other => {
                err(
                    at("connector"),
                    format!("unknown connector `{other}`"),
                    Some("use whatsapp_cloud, instagram, messenger, telegram or webhook"),
                );
                continue;
            }
        };
        let given = c.given();
        for (key, _) in given
            .iter()
            .filter(|(k, v)| v.is_some() && !needs.contains(k))
        {
            if !matches!(*key, "api_base" | "template_language") || connector == "webhook" {
                err(
                    at(key),
                    format!("the {connector} connector has no `{key}`"),
                    Some(&format!("it takes {}", needs.join(", "))),
                );
            }
        }
        if c.template_language.is_some() && connector != "whatsapp_cloud" {
            err(
                at("template_language"),
                "only WhatsApp sends templates".into(),
                None,
            );
        }
        let mut values = BTreeMap::new();
        for key in needs {
            match given.iter().find(|(k, _)| k == key).and_then(|(_, v)| *v) {
                // An empty secret would let anyone sign a webhook.
                Some(v) if v.trim().is_empty() => err(
                    at(key),
                    format!("`{key}` is empty"),
                    Some("give it a value, or `${NAME}` to read it from the environment"),
                ),
                Some(v) => {
                    values.insert(*key, expand(&at(key), v, &mut err));
                }
                None => err(
                    format!("channels.{name}"),
                    format!("the {connector} connector needs `{key}`"),
                    None,
                ),
            }
        }
        let mut value = |k: &str| values.remove(k).unwrap_or_default();
        let (default_rate, default_spacing, default_base) = match connector {
            "whatsapp_cloud" => (80.0, 6, "https://graph.facebook.com/v23.0"),
            "instagram" | "messenger" => (100.0, 0, "https://graph.facebook.com/v23.0"),
            "telegram" => (30.0, 1, "https://api.telegram.org"),
            _ => (10.0, 0, ""),
        };
        let api_base = c
            .api_base
            .as_deref()
            .map(|v| expand(&at("api_base"), v, &mut err))
            .unwrap_or_else(|| default_base.into());
        if connector != "webhook"
            && !(api_base.starts_with("https://") || api_base.starts_with("http://"))
        {
            err(
                at("api_base"),
                format!("`{api_base}` is not an http(s) URL"),
                None,
            );
        }
        let api_base = api_base.trim_end_matches('/').to_string();
        let rate = match c.rate {
            None => default_rate,
            Some(r) if r.is_finite() && r > 0.0 => r,
            Some(r) => {
                err(
                    at("rate"),
                    format!("`{r}` is not a positive number of messages per second"),
                    None,
                );
                default_rate
            }
        };
        let per_recipient = match &c.per_recipient {
            // `0s` is allowed here: no spacing.
            Some(t) if duration(t).is_some_and(|d| d.is_zero()) => Duration::ZERO,
            other => dur(
                &at("per_recipient"),
                other.as_ref(),
                Duration::from_secs(default_spacing),
                &mut err,
            ),
        };
        let limits = Limits {
            rate,
            per_recipient,
        };
        let connector = match connector {
            "whatsapp_cloud" => Connector::WhatsApp(WhatsApp {
                phone_number_id: value("phone_number_id"),
                access_token: value("access_token"),
                app_secret: value("app_secret"),
                verify_token: value("verify_token"),
                api_base,
                template_language: c
                    .template_language
                    .as_deref()
                    .map(|v| expand(&at("template_language"), v, &mut err))
                    .unwrap_or_else(|| "en".into()),
                limits,
            }),
            "instagram" | "messenger" => Connector::Meta(Meta {
                platform: if connector == "instagram" {
                    MetaPlatform::Instagram
                } else {
                    MetaPlatform::Messenger
                },
                id: value(if connector == "instagram" {
                    "account_id"
                } else {
                    "page_id"
                }),
                access_token: value("access_token"),
                app_secret: value("app_secret"),
                verify_token: value("verify_token"),
                api_base,
                limits,
            }),
            "telegram" => {
                let secret_token = value("secret_token");
                // Telegram allows A-Z, a-z, 0-9, _ and - in a secret token, 1 to 256 long.
                let token_ok = secret_token.len() <= 256
                    && secret_token
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
                if !secret_token.is_empty() && !token_ok {
                    err(
                        at("secret_token"),
                        "a Telegram secret token is 1 to 256 characters of A-Z, a-z, 0-9, _ and -"
                            .into(),
                        None,
                    );
                }
                Connector::Telegram(Telegram {
                    bot_token: value("bot_token"),
                    secret_token,
                    api_base,
                    limits,
                })
            }
            _ => {
                let url = value("url");
                if !(url.is_empty() || url.starts_with("https://") || url.starts_with("http://")) {
                    err(at("url"), format!("`{url}` is not an http(s) URL"), None);
                }
                Connector::Webhook(WebhookOut {
                    url,
                    secret: value("secret"),
                    limits,
                })
            }
        };
        channels.insert(name.clone(), connector);
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
        if s.secret.trim().is_empty() {
            err(
                format!("sinks.{name}.secret"),
                "the sink's `secret` is empty".into(),
                Some("give it a value, or `${NAME}` to read it from the environment"),
            );
        }
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
    let console = ConsoleConfig {
        secure_cookies: raw
            .console
            .as_ref()
            .and_then(|c| c.secure_cookies)
            .unwrap_or(true),
        session: match raw.console.as_ref().and_then(|c| c.session.as_deref()) {
            None => Duration::from_secs(12 * 3600),
            Some(text) => match duration(text).filter(|d| *d >= Duration::from_secs(60)) {
                Some(d) => d,
                None => {
                    problems.push(Problem {
                        error: true,
                        at: "console.session".into(),
                        message: format!("`{text}` is not a session length of a minute or more"),
                        help: Some("write it like `12h` or `30m`".into()),
                    });
                    Duration::from_secs(12 * 3600)
                }
            },
        },
    };
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
            console,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        Some(format!("value-of-{name}-long-enough"))
    }

    fn errors(text: &str) -> Vec<String> {
        parse("host.yaml", text, &env)
            .1
            .into_iter()
            .filter(|p| p.error)
            .map(|p| format!("{}: {}", p.at, p.message))
            .collect()
    }

    const HEAD: &str = "listen: 127.0.0.1:8080\napi_token: ${TOKEN}\nchannels:\n";

    #[test]
    fn every_connector_reads_its_keys_and_the_platforms_limits_by_default() {
        let text = format!(
            "{HEAD}  whatsapp: {{ connector: whatsapp_cloud, phone_number_id: \"1\", access_token: ${{A}}, app_secret: ${{S}}, verify_token: v }}
  instagram: {{ connector: instagram, account_id: \"178\", access_token: ${{A}}, app_secret: ${{S}}, verify_token: v }}
  messenger: {{ connector: messenger, page_id: \"102\", access_token: ${{A}}, app_secret: ${{S}}, verify_token: v, rate: 20, per_recipient: 0s }}
  telegram: {{ connector: telegram, bot_token: ${{B}}, secret_token: abc_DEF-1 }}
  sms: {{ connector: webhook, url: https://gw.example/send, secret: ${{G}} }}
"
        );
        let (config, problems) = parse("host.yaml", &text, &env);
        assert!(problems.iter().all(|p| !p.error), "{problems:?}");
        let config = config.expect("a configuration");
        let limits = |name: &str| {
            let c = &config.channels[name];
            (c.rate(), c.per_recipient())
        };
        assert_eq!(limits("whatsapp"), (80.0, Duration::from_secs(6)));
        assert_eq!(limits("instagram"), (100.0, Duration::ZERO));
        assert_eq!(limits("messenger"), (20.0, Duration::ZERO));
        assert_eq!(limits("telegram"), (30.0, Duration::from_secs(1)));
        assert_eq!(limits("sms"), (10.0, Duration::ZERO));
        let Connector::Meta(ig) = &config.channels["instagram"] else {
            panic!("instagram is a Meta connection");
        };
        assert_eq!(ig.platform, MetaPlatform::Instagram);
        assert_eq!(ig.id, "178");
        assert_eq!(ig.app_secret, "value-of-S-long-enough");
        assert_eq!(ig.api_base, "https://graph.facebook.com/v23.0");
        let Connector::Webhook(sms) = &config.channels["sms"] else {
            panic!("sms is a webhook");
        };
        assert_eq!(
            (sms.url.as_str(), sms.secret.as_str()),
            ("https://gw.example/send", "value-of-G-long-enough")
        );
    }

    #[test]
    fn a_missing_key_a_foreign_key_and_an_unknown_connector_are_named() {
        let text = format!(
            "{HEAD}  instagram: {{ connector: instagram, page_id: \"1\", access_token: a, app_secret: s, verify_token: v }}
  sms: {{ connector: webhook, url: ftp://gw.example, secret: s, api_base: https://x.example }}
  tiktok: {{ connector: tiktok }}
  telegram: {{ connector: telegram, bot_token: b, secret_token: \"\" }}
"
        );
        let errors = errors(&text);
        assert_eq!(
            errors,
            vec![
                "channels.instagram.page_id: the instagram connector has no `page_id`",
                "channels.instagram: the instagram connector needs `account_id`",
                "channels.sms.api_base: the webhook connector has no `api_base`",
                "channels.sms.url: `ftp://gw.example` is not an http(s) URL",
                "channels.telegram.secret_token: `secret_token` is empty",
                "channels.tiktok.connector: unknown connector `tiktok`",
            ]
        );
    }
}
