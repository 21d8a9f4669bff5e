//! `serve-load`: how many signed webhooks a second `rapport serve` sustains with
//! durability, and how long each takes to be acknowledged (webhook → 200) and answered
//! (webhook → the reply's call at the platform).
//!
//! The generator is open-loop: webhook i is due at `start + i / rate`, and its latencies
//! count from that moment, so a host that falls behind shows it in the latencies instead
//! of slowing the generator down (no coordinated omission). Each webhook carries one
//! message from a new contact, which the welcome flow answers.
//!
//! With `--mix`, the webhooks take turns between WhatsApp, Instagram, Messenger and
//! Telegram (the bundle must use those four channels and `sms`, as
//! tests/channels/project does).
//!
//! Usage: serve-load RAPPORT_BINARY BUNDLE [--rate N] [--seconds S] [--dir DIR] [--mix]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

const SECRET: &str = "bench-app-secret";
const PNID: &str = "106540352242922";
const IG_ACCOUNT: &str = "17841400000000000";
const PAGE: &str = "102938475610293";
const TG_SECRET: &str = "bench-telegram-secret";

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 || args.iter().any(|a| a == "--help") {
        eprintln!(
            "usage: serve-load RAPPORT_BINARY BUNDLE [--rate N] [--seconds S] [--dir DIR] [--mix]"
        );
        return Err("missing arguments".into());
    }
    let (binary, bundle) = (&args[1], &args[2]);
    let rate: f64 = arg(&args, "--rate", "2000")
        .parse()
        .map_err(|_| "--rate: a number")?;
    let seconds: f64 = arg(&args, "--seconds", "20")
        .parse()
        .map_err(|_| "--seconds: a number")?;
    let dir = std::path::PathBuf::from(arg(&args, "--dir", "/tmp/rapport-serve-load"));
    let mix = args.iter().any(|a| a == "--mix");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;

    let mock = rapport_mock::Mock::start_light()
        .await
        .map_err(|e| e.to_string())?;
    // The platform's own limits are not what is measured: the channel's rate is raised
    // above the offered load.
    let mut yaml = format!(
        "listen: 127.0.0.1:0\napi_token: ${{TOKEN}}\ntick: 1s\nchannels:\n  whatsapp:\n    connector: whatsapp_cloud\n    phone_number_id: \"{PNID}\"\n    access_token: bench\n    app_secret: ${{SECRET}}\n    verify_token: bench\n    api_base: {}/v23.0\n    rate: 100000\n",
        mock.url()
    );
    if mix {
        let m = mock.url();
        yaml.push_str(&format!(
            "  instagram: {{ connector: instagram, account_id: \"{IG_ACCOUNT}\", access_token: bench, app_secret: ${{SECRET}}, verify_token: bench, api_base: {m}/v23.0, rate: 100000 }}
  messenger: {{ connector: messenger, page_id: \"{PAGE}\", access_token: bench, app_secret: ${{SECRET}}, verify_token: bench, api_base: {m}/v23.0, rate: 100000 }}
  telegram: {{ connector: telegram, bot_token: \"1:bench\", secret_token: {TG_SECRET}, api_base: {m}, rate: 100000 }}
  sms: {{ connector: webhook, url: {m}/sms, secret: bench, rate: 100000 }}
"
        ));
    }
    let config = dir.join("host.yaml");
    std::fs::write(&config, yaml).map_err(|e| e.to_string())?;
    let mut child = Command::new(binary)
        .args(["serve", "--bundle", bundle, "--config"])
        .arg(&config)
        .arg("--store")
        .arg(format!("sqlite:{}", dir.join("store.db").display()))
        .env("TOKEN", "bench-api-token-0123456789")
        .env("SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {binary}: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("rapport serve: listening on ") {
                let _ = tx.send(a.to_string());
            } else {
                eprintln!("host: {line}");
            }
        }
    });
    let host = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| "the host did not start")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .map_err(|e| e.to_string())?;

    let n = (rate * seconds) as usize;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Bodies and their headers made before the clock starts: (recipient at the mock,
    // URL, body, header name, header value).
    let meta = format!("{host}/webhooks/meta");
    let telegram = format!("{host}/webhooks/telegram");
    let bodies: Vec<(String, String, String, &str, String)> = (0..n)
        .map(|i| {
            let signed = |body: String| {
                let sig = rapport_serve::signature::meta_header(SECRET, body.as_bytes());
                (meta.clone(), body, "x-hub-signature-256", sig)
            };
            let now_ms = now_s * 1000;
            let (who, (url, body, header, value)) = match if mix { i % 4 } else { 0 } {
                1 | 2 => {
                    // Instagram or Messenger: a DM in `messaging[]`.
                    let (object, id, prefix) = if i % 4 == 1 {
                        ("instagram", IG_ACCOUNT, "7")
                    } else {
                        ("page", PAGE, "8")
                    };
                    let who = format!("{prefix}{i:011}");
                    let body = json!({"object": object, "entry": [{"id": id, "time": now_ms,
                        "messaging": [{"sender": {"id": who}, "recipient": {"id": id},
                            "timestamp": now_ms, "message": {"mid": format!("m_LOAD{i}"), "text": "hi"}}]}]})
                    .to_string();
                    (who, signed(body))
                }
                3 => {
                    let chat = 9_000_000_000_000i64 + i as i64;
                    let body = json!({"update_id": i, "message": {"message_id": i, "date": now_s,
                        "from": {"id": chat, "is_bot": false, "first_name": "Ana"},
                        "chat": {"id": chat, "type": "private"}, "text": "hi"}})
                    .to_string();
                    (
                        chat.to_string(),
                        (
                            telegram.clone(),
                            body,
                            "x-telegram-bot-api-secret-token",
                            TG_SECRET.to_string(),
                        ),
                    )
                }
                _ => {
                    let who = format!("4{:011}", i);
                    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "1",
                        "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550001", "phone_number_id": PNID},
                            "contacts": [{"profile": {"name": "Ana Lopez"}, "wa_id": who}],
                            "messages": [{"from": who, "id": format!("wamid.LOAD{i}"),
                                "timestamp": now_s.to_string(), "type": "text", "text": {"body": "hi"}}]}}]}]})
                    .to_string();
                    (who, signed(body))
                }
            };
            (who, url, body, header, value)
        })
        .collect();
    eprintln!("sending {n} webhooks at {rate}/s for {seconds}s");
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let due_of = Arc::new(move |i: usize| start + Duration::from_secs_f64(i as f64 / rate));
    for (i, (_, url, body, header, value)) in bodies.iter().cloned().enumerate() {
        let due = due_of(i);
        tokio::time::sleep_until(due.into()).await;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .header(header, value)
                .body(body)
                .send()
                .await;
            let ok = matches!(&r, Ok(resp) if resp.status().is_success());
            (ok, due.elapsed().as_secs_f64())
        }));
    }
    let mut acks = Vec::with_capacity(n);
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok((true, s)) => acks.push(s),
            _ => failed += 1,
        }
    }
    let sent_for = start.elapsed().as_secs_f64();
    // Wait for every reply at the mock.
    let end = Instant::now() + Duration::from_secs(120);
    while mock.times().len() < acks.len() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answered_in = start.elapsed().as_secs_f64();
    let times = mock.times();
    let index: std::collections::HashMap<&str, usize> = bodies
        .iter()
        .enumerate()
        .map(|(i, (w, ..))| (w.as_str(), i))
        .collect();
    let mut replies: Vec<f64> = times
        .iter()
        .filter_map(|(to, at)| {
            let i = *index.get(to.as_str())?;
            Some(at.saturating_duration_since(due_of(i)).as_secs_f64())
        })
        .collect();
    acks.sort_by(f64::total_cmp);
    replies.sort_by(f64::total_cmp);
    let ms = |s: f64| s * 1000.0;
    println!(
        "offered {n} webhooks at {rate}/s: {} acknowledged, {failed} failed, sending took {sent_for:.2}s ({:.0}/s acknowledged)",
        acks.len(),
        acks.len() as f64 / sent_for
    );
    println!(
        "webhook -> 200:            p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&acks, 0.5)),
        ms(percentile(&acks, 0.99)),
        ms(acks.last().copied().unwrap_or(f64::NAN))
    );
    println!(
        "webhook -> outbound call:  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} of {} answered, all within {answered_in:.2}s)",
        ms(percentile(&replies, 0.5)),
        ms(percentile(&replies, 0.99)),
        ms(replies.last().copied().unwrap_or(f64::NAN)),
        replies.len(),
        acks.len()
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    Ok(())
}
