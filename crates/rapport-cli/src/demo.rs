//! `rapport demo`: the example project live, with a week behind it. It builds the
//! project, generates a week of traffic for it (seeded, so the same every time), runs the
//! week into a store with `rapport run --store`, then serves that store with `rapport
//! serve`, every platform and sink pointed at a mock platform on 127.0.0.1 that answers
//! like the real ones. The console shows a full week at once.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use serde_json::{json, Value};

/// splitmix64: the generator's seeded stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

const NAMES: [&str; 12] = [
    "Ana", "Mihai", "Ioana", "Andrei", "Elena", "Radu", "Maria", "Vlad", "Sofia", "Luca", "Irina",
    "Dan",
];
const PRODUCTS: [&str; 5] = [
    "Trail Runner 2",
    "City Sneaker",
    "Chelsea Boot",
    "Summer Sandal",
    "Kids Light-Up",
];

/// The events of a generated week ending at `end` (milliseconds), in time order.
pub(crate) fn week(contacts: usize, seed: u64, end: i64) -> Vec<String> {
    let mut rng = Rng(seed);
    let start = end - 7 * DAY;
    let mut events: Vec<(i64, Value)> = Vec::new();
    // Two live shows this week: everyone signed up to one sees it end at its time.
    let lives = [
        ("L-autumn", start + 2 * DAY + 19 * HOUR, 52),
        ("L-boots", start + 5 * DAY + 19 * HOUR, 7),
    ];
    for i in 0..contacts {
        let name = *rng.pick(&NAMES);
        let mut channel = *rng.pick(&[
            "instagram",
            "instagram",
            "instagram",
            "whatsapp",
            "whatsapp",
            "messenger",
            "tiktok",
        ]);
        let u = rng.unit();
        // Price questions come where the assistant is connected (not TikTok); comments
        // on the Instagram account and the Facebook Page.
        if (0.42..0.52).contains(&u) && channel == "tiktok" {
            channel = "instagram";
        }
        if (0.62..0.8).contains(&u) {
            channel = if rng.unit() < 0.75 {
                "instagram"
            } else {
                "messenger"
            };
        }
        // The platforms' ids: a channel's contacts are `CHANNEL:ID`.
        let c = format!("{channel}:{}", 100_000_000 + i);
        // A moment of the week, in shop hours (08:00–21:00 UTC).
        let day = rng.below(8) as i64;
        let t = (start.div_euclid(DAY) * DAY
            + day * DAY
            + 8 * HOUR
            + rng.below(13 * 60) as i64 * MINUTE)
            .clamp(start, end - 10 * MINUTE);
        let mut n = 0;
        let mut ev = |at: i64, mut v: Value| {
            n += 1;
            v["id"] = Value::from(format!("{c}-{n}"));
            v["at"] = Value::from(rapport_engine::format_time(at));
            v["contact"] = Value::from(c.as_str());
            events.push((at, v));
            format!("{c}-{n}")
        };
        let msg = |text: &str| {
            json!({"type": "message", "channel": channel, "text": text,
                "profile": {"first_name": name, "timezone": "Europe/Bucharest"}})
        };
        let consent = json!({"type": "consent", "purpose": "marketing", "granted": true,
            "source": "checkout", "wording": "Offers and news by DM"});
        let open_ok = |at: i64| at < end - HOUR;
        if u < 0.25 {
            ev(t, msg("hi"));
            let r = rng.unit();
            if r < 0.35 {
                ev(t + MINUTE, msg("1"));
                ev(t + 2 * MINUTE, msg(rng.pick::<&str>(&["2", "1", "3"])));
                let budget = rng.pick(&["90", "120", "250", "300"]).to_string();
                ev(t + 3 * MINUTE, msg(&budget));
                ev(
                    t + 4 * MINUTE,
                    msg(rng.pick::<&str>(&["42", "39", "not sure"])),
                );
                if budget.parse::<u32>().unwrap_or(0) > 200 {
                    ev(t + 5 * MINUTE, msg(rng.pick::<&str>(&["yes", "no"])));
                }
            } else if r < 0.5 {
                ev(t + MINUTE, msg("2"));
                ev(t + 2 * MINUTE, msg("AS-10233"));
            } else if r < 0.65 {
                ev(t + MINUTE, msg("3"));
                let after = t + (5 + rng.below(50) as i64) * MINUTE;
                if open_ok(after) && rng.unit() < 0.85 {
                    ev(
                        after,
                        json!({"type": "agent", "action": "released", "agent": "support-7"}),
                    );
                }
            }
        } else if u < 0.42 {
            if rng.unit() < 0.85 {
                ev(t - DAY, consent.clone());
            }
            let product = *rng.pick(&PRODUCTS);
            let total = 40 + rng.below(160);
            ev(
                t,
                json!({"type": "event", "name": "cart.abandoned", "channel": channel,
                "data": {"product_name": product, "cart_url": format!("https://acmeshoes.example/c/{i}"),
                    "cart_total": total, "item_count": 1 + rng.below(3)}}),
            );
            let r = rng.unit();
            if r < 0.22 {
                let at = t + 2 * HOUR + rng.below(60) as i64 * HOUR;
                if at < end {
                    ev(
                        at,
                        json!({"type": "event", "name": "order.placed",
                        "data": {"order_id": format!("o-{i}"), "total": total}}),
                    );
                }
            } else if r < 0.24 {
                ev(t + 70 * MINUTE, msg("STOP"));
            } else if r < 0.28 {
                ev(t + 70 * MINUTE, msg("agent"));
            }
        } else if u < 0.52 {
            let asked = ev(
                t,
                json!({"type": "message", "channel": channel, "text": "how much are the Trail Runner 2?",
                    "intent": "price_question", "suggestion": "The Trail Runner 2 is 89 EUR this week, in sizes 36 to 46.",
                    "profile": {"first_name": name}}),
            );
            let draft = format!("{asked}.0");
            let at = t + (5 + rng.below(50) as i64) * MINUTE;
            let r = rng.unit();
            if at < end - 20 * MINUTE {
                if r < 0.6 {
                    ev(
                        at,
                        json!({"type": "agent", "action": "approved", "draft": draft, "agent": "sales-2"}),
                    );
                } else if r < 0.75 {
                    ev(
                        at,
                        json!({"type": "agent", "action": "approved", "draft": draft, "agent": "sales-2",
                        "text": "It's 89 EUR this week, and free delivery over 60 EUR!"}),
                    );
                } else if r < 0.85 {
                    ev(
                        at,
                        json!({"type": "agent", "action": "rejected", "draft": draft, "agent": "sales-2"}),
                    );
                }
            }
        } else if u < 0.62 {
            ev(t.min(start + DAY), consent.clone());
            let (live, ends, minutes) = *rng.pick(&lives);
            let signed = (ends - DAY - rng.below(20) as i64 * HOUR).max(start);
            ev(
                signed,
                json!({"type": "event", "name": "live.scheduled", "channel": channel,
                "data": {"live_id": live, "title": "Autumn drop live", "starts_at": "19:00",
                    "live_url": "https://acmeshoes.example/live", "offer_code": "LIVE15"}}),
            );
            if rng.unit() < 0.3 {
                ev(signed + 5 * MINUTE, msg("yes"));
                ev(signed + 7 * MINUTE, msg("Do the boots run small?"));
                ev(signed + 9 * MINUTE, msg("no"));
            }
            if ends < end {
                ev(
                    ends,
                    json!({"type": "event", "name": "live.ended",
                    "data": {"live_id": live, "duration_minutes": minutes, "viewers": 1800}}),
                );
                if minutes >= 10 && rng.unit() < 0.55 && ends + 30 * MINUTE < end {
                    ev(ends + 30 * MINUTE, msg("code"));
                    // Wording b sells better: the report should find it out.
                    let v = rapport_engine::rollout::variant("live_followup", &c, 2);
                    let p = if v == 0 { 0.14 } else { 0.22 };
                    let at = ends + 2 * HOUR + rng.below(30) as i64 * HOUR;
                    if rng.unit() < p && at < end {
                        ev(
                            at,
                            json!({"type": "event", "name": "order.placed",
                            "data": {"order_id": format!("o-{i}"), "total": 95}}),
                        );
                    }
                }
            }
        } else if u < 0.8 {
            let (text, extra) = match rng.below(10) {
                0..=3 => ("how much are these?", json!({})),
                4..=6 => ("check out my page www.cheap-sneakers.example", json!({})),
                _ => (
                    "this brand is a scam, worst shoes ever",
                    json!({"sentiment": -0.85}),
                ),
            };
            let mut v = json!({"type": "comment", "channel": channel, "text": text,
                "comment": format!("1789{i:08}"), "post": "p-autumn-drop", "author": format!("{}_{i}", name.to_lowercase())});
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            let spam = text.contains("www.");
            ev(t, v);
            // A moderator puts back one hidden comment in eight: the filter's false positives.
            if spam && rng.below(8) == 0 {
                ev(
                    t + 2 * HOUR,
                    json!({"type": "agent", "action": "restored",
                    "comment": format!("1789{i:08}"), "agent": "moderator-1"}),
                );
            }
        } else if u < 0.9 {
            ev(t, msg("where is my order"));
            ev(t + 2 * MINUTE, msg("AS-20991"));
        } else {
            ev(
                t,
                json!({"type": "event", "name": "customer.lapsed", "channel": channel,
                "data": {"days_since_order": 100 + rng.below(250), "last_category": "sneakers"}}),
            );
            if rng.unit() < 0.3 {
                ev(t + 20 * MINUTE, msg(rng.pick::<&str>(&["yes", "no"])));
            }
        }
    }
    // Nothing after the end: the week stops at the moment the host takes over.
    events.retain(|e| e.0 <= end);
    events.sort_by_key(|e| e.0);
    events.into_iter().map(|(_, v)| v.to_string()).collect()
}

/// A host.yaml for the demo: every channel and sink at the mock platform.
fn host_yaml(listen: &str, mock: &str) -> String {
    format!(
        "# Written by `rapport demo`: every platform and sink is the mock at {mock}.
listen: {listen}
api_token: ${{DEMO_API_TOKEN}}
tick: 1s
console: {{ secure_cookies: false }}
channels:
  whatsapp:  {{ connector: whatsapp_cloud, phone_number_id: \"106540352242922\", access_token: ${{DEMO_SECRET}}, app_secret: ${{DEMO_SECRET}}, verify_token: ${{DEMO_SECRET}}, api_base: \"{mock}\" }}
  instagram: {{ connector: instagram, account_id: \"17841400000000000\", access_token: ${{DEMO_SECRET}}, app_secret: ${{DEMO_SECRET}}, verify_token: ${{DEMO_SECRET}}, api_base: \"{mock}\" }}
  messenger: {{ connector: messenger, page_id: \"102938475610293\", access_token: ${{DEMO_SECRET}}, app_secret: ${{DEMO_SECRET}}, verify_token: ${{DEMO_SECRET}}, api_base: \"{mock}\" }}
  sms:       {{ connector: webhook, url: \"{mock}/sms\", secret: ${{DEMO_SECRET}} }}
  tiktok:    {{ connector: webhook, url: \"{mock}/tiktok\", secret: ${{DEMO_SECRET}} }}
sinks:
  handoff: {{ url: \"{mock}/helpdesk\", secret: ${{DEMO_SECRET}} }}
  emit:    {{ url: \"{mock}/crm\", secret: ${{DEMO_SECRET}} }}
  tag:     {{ url: \"{mock}/crm-tags\", secret: ${{DEMO_SECRET}} }}
  review:  {{ url: \"{mock}/review\", secret: ${{DEMO_SECRET}} }}
  alert:   {{ url: \"{mock}/alerts\", secret: ${{DEMO_SECRET}} }}
"
    )
}

pub(crate) struct DemoArgs<'a> {
    pub project: &'a Path,
    pub dir: &'a Path,
    pub listen: &'a str,
    pub contacts: usize,
    pub seed: u64,
}

fn step(text: &str) {
    eprintln!("demo: {text}");
}

fn own(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed (see above)"))
    }
}

pub(crate) fn run(args: &DemoArgs<'_>) -> ExitCode {
    match demo(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn demo(args: &DemoArgs<'_>) -> Result<(), String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the rapport binary: {e}"))?;
    let listen: std::net::SocketAddr = args.listen.parse().map_err(|_| {
        format!(
            "--listen `{}` is not an address such as 127.0.0.1:8080",
            args.listen
        )
    })?;
    // The demo writes its files in --dir: never in a folder it did not make.
    let marker = args.dir.join(".rapport-demo");
    let in_use = std::fs::read_dir(args.dir).is_ok_and(|mut d| d.next().is_some());
    if in_use && !marker.is_file() {
        return Err(format!(
            "--dir `{}` holds files the demo did not write; give a new folder (the demo writes a store, a bundle and host.yaml there)",
            args.dir.display()
        ));
    }
    std::fs::create_dir_all(args.dir)
        .map_err(|e| format!("cannot make the folder `{}`: {e}", args.dir.display()))?;
    std::fs::write(&marker, "made by `rapport demo`\n")
        .map_err(|e| format!("cannot write in `{}`: {e}", args.dir.display()))?;
    let file = |name: &str| -> PathBuf { args.dir.join(name) };
    let store = file("demo.db");
    let bundle = file("bundle.json");
    step(&format!("building {}", args.project.display()));
    own(
        Command::new(&exe)
            .arg("build")
            .arg(args.project)
            .arg("-o")
            .arg(&bundle),
        "rapport build",
    )?;
    if std::fs::symlink_metadata(&store).is_ok() {
        step(&format!(
            "{} exists: serving it as it is (delete the folder for a new week)",
            store.display()
        ));
    } else {
        let end = jiff::Timestamp::now().as_millisecond() - 5 * MINUTE;
        let lines = week(args.contacts, args.seed, end);
        step(&format!(
            "generated a week of traffic: {} contacts, {} events (seed {})",
            args.contacts,
            lines.len(),
            args.seed
        ));
        let events = file("week.jsonl");
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&events, text)
            .map_err(|e| format!("cannot write `{}`: {e}", events.display()))?;
        step(&format!("running the week into {}", store.display()));
        own(
            Command::new(&exe)
                .arg("run")
                .arg("--bundle")
                .arg(&bundle)
                .arg("--events")
                .arg(&events)
                .arg("--actions")
                .arg(file("week-actions.jsonl"))
                .arg("--store")
                .arg(format!("sqlite:{}", store.display())),
            "rapport run",
        )?;
    }
    let bundle_value = crate::build::read_bundle(&bundle)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let mock = rapport_mock::Mock::start_light()
            .await
            .map_err(|e| format!("cannot start the mock platform: {e}"))?;
        step(&format!("mock platform listening on {}", mock.url()));
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| format!("no random numbers for the token: {e}"))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let yaml = host_yaml(&listen.to_string(), &mock.url());
        let host = file("host.yaml");
        std::fs::write(&host, &yaml)
            .map_err(|e| format!("cannot write `{}`: {e}", host.display()))?;
        let env = |k: &str| match k {
            "DEMO_API_TOKEN" => Some(token.clone()),
            "DEMO_SECRET" => Some("demo-secret-not-for-production".to_string()),
            _ => None,
        };
        let (config, problems) =
            rapport_serve::config::parse(&host.display().to_string(), &yaml, &env);
        for p in problems.iter().filter(|p| p.error) {
            eprintln!("{p}");
        }
        let config = config.ok_or("the demo's host.yaml has errors (see above)")?;
        eprintln!();
        if listen.port() == 0 {
            eprintln!("  Console:  /console on the address `rapport serve` prints below");
        } else {
            eprintln!("  Console:  http://{listen}/console");
        }
        eprintln!("  Sign in with any name and the token  {token}");
        eprintln!(
            "  Report:   rapport report --store sqlite:{}",
            store.display()
        );
        eprintln!("  Stop with Ctrl-C.");
        eprintln!();
        rapport_serve::serve(rapport_serve::Serve {
            bundle: bundle_value,
            store: store.clone(),
            config,
        })
        .await
    })
}
