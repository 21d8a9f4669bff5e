//! The `rapport` command.

/// `print!` that stops quietly when stdout is closed (`rapport test | head`) instead of
/// panicking on a broken pipe.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// `println!` that stops quietly when stdout is closed.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// jemalloc: the runtime allocates and frees many small strings per event, and with the
/// system allocator that was a third of the run (docs/performance.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod build;
mod cap;
mod check;
mod demo;
mod durable;
mod files;
mod fmt;
mod graph;
mod load;
mod project;
mod render;
mod report;
mod run;
mod scenario;
mod serve;
mod timings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use render::Format;

/// Rapport: conversational flows for Instagram, Messenger, WhatsApp, TikTok and SMS,
/// written as `.flow` files, proven safe by `rapport check`, executed by `rapport run`.
#[derive(Debug, Parser)]
#[command(name = "rapport", version, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok, 1 check failures, 2 usage or I/O errors.\n\
Start with `rapport check flows/` on the example project."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a project's flows and rapport.yaml, reporting every problem found.
    ///
    /// Reads `rapport.yaml` and every `.flow` file below the project folder (or only the
    /// `.flow` files given) and reports syntax and settings errors with the file, line and
    /// a fix. Exits 0 when clean, 1 on errors, 2 when the paths cannot be read.
    ///
    /// Examples:
    ///   rapport check flows/
    ///   rapport check flows/welcome.flow --format github
    ///   rapport check --deny-warnings --format json > report.json
    #[command(verbatim_doc_comment)]
    Check(CheckArgs),

    /// Check a project and write its compiled bundle for runtime hosts.
    ///
    /// The bundle is self-contained (flows as state tables, settings, versions and
    /// content hashes) and deterministic: the same sources give the same bytes. Nothing is
    /// written when the project has errors (exit 1).
    ///
    /// Examples:
    ///   rapport build flows/ -o bundle.json
    ///   rapport build flows/ -o new.json --baseline bundle.json
    ///   rapport build flows/ -o - | jq '.flows[].version'
    #[command(verbatim_doc_comment)]
    Build(BuildArgs),

    /// Print a flow's state graph as Mermaid (renders on GitHub) or Graphviz dot.
    ///
    /// Examples:
    ///   rapport graph cart_recovery flows/
    ///   rapport graph welcome flows/ --format dot | dot -Tsvg > welcome.svg
    #[command(verbatim_doc_comment)]
    Graph(GraphArgs),

    /// Rewrite .flow files in their canonical form, keeping every comment.
    ///
    /// One layout for every flow: two spaces per level, header clauses in a fixed order,
    /// one statement per line, strings escaped one way. Comments stay where they were
    /// written, and blank lines between blocks are kept. Formatting never changes a
    /// flow's version. A file with syntax errors is left as it is (exit 1).
    ///
    /// Examples:
    ///   rapport fmt flows/
    ///   rapport fmt --check flows/ bench/funnel     # in CI: list what would change, exit 1
    #[command(verbatim_doc_comment)]
    Fmt(FmtCliArgs),

    /// Run a bundle against a stream of JSONL events, writing actions and audit records.
    ///
    /// Events are read from stdin (or --events), one JSON object per line, in the format
    /// of docs/runtime.md. Actions go to stdout (or --actions), one per line. A line that
    /// does not parse or validate is reported on stderr with its line number and skipped.
    /// At the end, counts of actions by type and suppressions by reason go to stderr.
    ///
    /// Examples:
    ///   rapport run --bundle bundle.json --events events.jsonl --actions actions.jsonl
    ///   python3 gen_events.py --contacts 10000 | rapport run --bundle bundle.json > actions.jsonl
    ///   rapport run --bundle bundle.json --events events.jsonl --actions actions.jsonl --store sqlite:rapport.db
    #[command(verbatim_doc_comment)]
    Run(RunArgs),

    /// Run the project's `*.test.yaml` scenarios against the compiled flows.
    ///
    /// Each case starts from a fresh contact; a failure shows the expected and the actual
    /// actions side by side. At the end, the states and transitions no case reached.
    /// Exits 1 when a case fails.
    ///
    /// Examples:
    ///   rapport test flows/
    ///   rapport test bench/funnel
    #[command(verbatim_doc_comment)]
    Test(TestArgs),

    /// Staged rollouts: where each flow's rollout stands (from a store), and which bucket
    /// (1-100) a contact is in.
    #[command(subcommand)]
    Rollout(RolloutCommand),

    /// Access requests: everything a store holds about a contact.
    #[command(subcommand)]
    Audit(AuditCommand),

    /// What the automation did and earned: KPIs per flow, version and variant, from a
    /// store.
    ///
    /// For the runs started in the period (by default the 7 days up to the store's
    /// latest event): enrolled, finished, converted (the flow's `goal`) with a 95% Wilson
    /// interval, each variant's uplift and chance to beat the first, the guard metrics
    /// (opt-out, handoff and error rates), sends delivered, suppressed and failed, the
    /// first-response time and the share of conversations that ended without a person.
    /// Rates over fewer than 30 runs say so. Reading is safe while a host runs.
    ///
    /// Examples:
    ///   rapport report --store sqlite:rapport.db
    ///   rapport report --store sqlite:rapport.db --since 30d --flow cart_recovery
    ///   rapport report --store sqlite:rapport.db --format html -o report.html
    ///   rapport report --store sqlite:rapport.db --since 2026-11-01 --format json | jq .flows
    #[command(verbatim_doc_comment)]
    Report(ReportArgs),

    /// See the console with a week of traffic behind it: one command, nothing to set up.
    ///
    /// Builds the example project, generates a week of traffic for it (the same every
    /// time for a seed), runs it into a store in --dir, and serves that store with
    /// `rapport serve` on --listen, every platform and sink pointed at a mock platform on
    /// 127.0.0.1. Prints the console's address and a token to sign in with. Run it again
    /// to carry on with the same store; delete the folder for a new week.
    ///
    /// Examples:
    ///   rapport demo
    ///   rapport demo --listen 127.0.0.1:9090 --contacts 5000 --dir /tmp/rapport-demo
    #[command(verbatim_doc_comment)]
    Demo(DemoCliArgs),

    /// Erase everything a store holds about a contact (erasure request).
    ///
    /// Profile, consent ledger, runs, timers, transcript, audit records and unreleased
    /// actions are deleted. A contact who had opted out stays on the opt-out list as a
    /// salted hash, so an erased contact who said STOP is never messaged again. Run it
    /// while no `rapport run` is using the store.
    ///
    /// Examples:
    ///   rapport forget c1 --store sqlite:rapport.db
    #[command(verbatim_doc_comment)]
    Forget(ForgetArgs),

    /// Delete transcripts older than the project's `retention` from a store.
    ///
    /// Age counts back from the latest event time the store has seen (event time is the
    /// clock). Transcripts of transactional flows are kept for `retention.transactional`,
    /// the rest for `retention.transcripts`. `rapport run --store` also purges on start.
    ///
    /// Examples:
    ///   rapport purge --store sqlite:rapport.db --bundle bundle.json
    #[command(verbatim_doc_comment)]
    Purge(PurgeArgs),

    /// Run the live host: platform webhooks in, the engine on a durable store, platform
    /// APIs and sinks out (docs/deploy.md).
    ///
    /// A webhook is answered 200 only once its events are committed to the store's inbox;
    /// the engine consumes the inbox and releases actions only after their state is
    /// committed; each action is delivered with retries, each contact's in order. SIGTERM
    /// drains: webhooks get 503, the engine commits, calls in flight finish, exit 0.
    /// Secrets come from the environment (`${NAME}` in host.yaml).
    ///
    /// Examples:
    ///   rapport serve --bundle bundle.json --store sqlite:rapport.db --config host.yaml
    ///   rapport serve --bundle bundle.json --config host.yaml --check-config
    #[command(verbatim_doc_comment)]
    Serve(ServeArgs),

    /// Deploy a bundle to a running `rapport serve` (from CI, say).
    ///
    /// Contacts, consent, opt-outs and audit are kept; a flow whose version changed
    /// enters its rollout against the version running; runs stay on the version they
    /// started on. Prints what happened to each flow; exits 1 when the host refuses the
    /// bundle (nothing changes then).
    ///
    /// Examples:
    ///   RAPPORT_API_TOKEN=... rapport deploy bundle.json --host https://rapport.acme.example
    #[command(verbatim_doc_comment)]
    Deploy(DeployArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The bundle written by `rapport build`.
    #[arg(long)]
    bundle: PathBuf,
    /// The store (`sqlite:PATH`); created when nothing exists at PATH.
    #[arg(long, default_value = "sqlite:rapport.db")]
    store: String,
    /// The deployment's host.yaml (listen address, channels, sinks).
    #[arg(long)]
    config: PathBuf,
    /// Check host.yaml, the environment variables it names and how it fits the bundle,
    /// then exit (0 when it can serve).
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, clap::Args)]
struct DeployArgs {
    /// The bundle written by `rapport build`.
    bundle: PathBuf,
    /// The host's base URL.
    #[arg(long)]
    host: String,
    /// The environment variable that holds the host's api_token.
    #[arg(long, default_value = "RAPPORT_API_TOKEN")]
    token_env: String,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Print, as JSON, everything the store holds about a contact: profile, consent
    /// ledger, opt-out records, runs, timers, transcript, audit trail and unreleased
    /// actions. Exits 1 when the store holds nothing about the contact.
    ///
    /// Examples:
    ///   rapport audit export c1 --store sqlite:rapport.db > c1.json
    #[command(verbatim_doc_comment)]
    Export {
        /// The contact id.
        contact: String,
        /// The store (`sqlite:PATH`).
        #[arg(long)]
        store: String,
    },
}

#[derive(Debug, clap::Args)]
struct ReportArgs {
    /// The store (`sqlite:PATH`).
    #[arg(long)]
    store: String,
    /// Where the period starts: a span back from the store's latest event (`7d`, `24h`),
    /// a date (`2026-11-01`, UTC) or an instant (`2026-11-01T09:00:00Z`).
    #[arg(long, default_value = "7d")]
    since: String,
    /// Only this flow.
    #[arg(long)]
    flow: Option<String>,
    /// `table` for a terminal, `json` (the contract other tools read), `csv`, or `html`
    /// (one self-contained page with charts).
    #[arg(long, value_enum, default_value_t = report::ReportFormat::Table)]
    format: report::ReportFormat,
    /// Write to this file instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct DemoCliArgs {
    /// The project to serve (a folder holding rapport.yaml).
    #[arg(long, default_value = "flows")]
    project: PathBuf,
    /// Where the demo keeps its bundle, store, events and host.yaml.
    #[arg(long, default_value = "rapport-demo")]
    dir: PathBuf,
    /// The address to serve on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Contacts in the generated week.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    contacts: u64,
    /// The generator's seed: the same seed, the same week.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, clap::Args)]
struct ForgetArgs {
    /// The contact id.
    contact: String,
    /// The store (`sqlite:PATH`).
    #[arg(long)]
    store: String,
}

#[derive(Debug, clap::Args)]
struct PurgeArgs {
    /// The store (`sqlite:PATH`).
    #[arg(long)]
    store: String,
    /// The bundle whose `retention` applies; default: the one the store last ran.
    #[arg(long)]
    bundle: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// A project folder (holding rapport.yaml); default: the current folder.
    paths: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Print a contact's rollout bucket for a flow (1-100), as Unleash computes it.
    ///
    /// A contact starts runs on a version at stage P% when its bucket is at most P:
    /// this answers "why did this contact get version 2?".
    ///
    /// Examples:
    ///   rapport rollout bucket cart_recovery c1
    ///   rapport rollout bucket --group AB12A 123
    #[command(verbatim_doc_comment)]
    Bucket {
        /// The flow (the rollout group); omit it when --group is given.
        #[arg(required_unless_present = "group")]
        flow: Option<String>,
        /// The contact id.
        contact: Option<String>,
        /// An explicit group id instead of a flow name.
        #[arg(long)]
        group: Option<String>,
    },

    /// Show where each flow's staged rollout stands in a store: the stage, whether a
    /// guard halted it, and each version's runs (enrolled, finished, opted out,
    /// handoffs, errors, converted).
    ///
    /// Examples:
    ///   rapport rollout status --bundle bundle.json --store sqlite:rapport.db
    #[command(verbatim_doc_comment)]
    Status {
        /// The bundle the store runs.
        #[arg(long)]
        bundle: PathBuf,
        /// The store (`sqlite:PATH`).
        #[arg(long)]
        store: String,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The bundle written by `rapport build`.
    #[arg(long)]
    bundle: PathBuf,
    /// JSONL events to read (`-` or absent: stdin).
    #[arg(long)]
    events: Option<PathBuf>,
    /// Where to write actions as JSONL (`-`: stdout).
    #[arg(long, default_value = "-")]
    actions: PathBuf,
    /// Where to write the audit trail as JSONL.
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Worker tasks to shard contacts over (0: one per core; at most 256; one for bundles
    /// with a staged rollout, whose state lives in one engine). The actions are the same
    /// for any number.
    #[arg(long, default_value_t = 0, value_parser = parse_shards)]
    shards: usize,
    /// Reject an event whose `at` is further than this ahead of the clock (the latest
    /// event time so far, or the wall clock at the start if later), so one bad timestamp
    /// cannot fire every contact's timers: `30s`, `15m`, `24h`, `31d`.
    #[arg(long, default_value = "31d", value_name = "DURATION", value_parser = parse_jump)]
    max_clock_jump: rapport_engine::Millis,
    /// Reject an event line longer than this (bytes, or with K or M for KiB and MiB): it
    /// is skipped without being held in memory and reported with its line number.
    #[arg(long, default_value = "1M", value_name = "SIZE", value_parser = parse_size)]
    max_line: usize,
    /// Keep state in a durable store and release each action only after the state change
    /// that produced it is committed (`sqlite:PATH`; a store is created only where no file
    /// exists; one host at a time).
    /// Restarted on the same --events file, the run carries on after the last committed
    /// line; actions and audit files are appended to, not replaced.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// With --store: events per commit at most.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    commit_every: usize,
    /// With --store: contacts kept in memory between commits (the rest are loaded from
    /// the store when an event or timer needs them).
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    cache: usize,
    /// Benchmark baseline: read and decode every line and write one line per event,
    /// doing nothing else (the I/O floor of bench/WORKLOAD.md).
    #[arg(long, hide = true)]
    io_floor: bool,
}

fn parse_shards(text: &str) -> Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of workers"))?;
    if n > rapport_host::MAX_SHARDS {
        return Err(format!(
            "{n} workers is more than the {} rapport runs; beyond the machine's cores more \
             workers only cost memory (0 picks one per core)",
            rapport_host::MAX_SHARDS
        ));
    }
    Ok(n)
}

/// A size in bytes: `4096`, `512K`, `1M`.
fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let (digits, factor) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        _ => (t, 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!("`{text}` is not a size: write bytes, or a number with K or M, as in 64K or 1M")
        })
}

/// A `--max-clock-jump` duration, in milliseconds.
fn parse_jump(text: &str) -> Result<rapport_engine::Millis, String> {
    rapport_syntax::parse_duration(text)
        .map_err(|_| format!("`{text}` is not a duration: write a whole number and a unit, as in 30s, 15m, 24h or 31d"))
        .and_then(|d| {
            d.seconds
                .checked_mul(1000)
                .and_then(|ms| rapport_engine::Millis::try_from(ms).ok())
                .filter(|ms| *ms <= rapport_engine::Millis::MAX / 2)
                .ok_or_else(|| format!("`{text}` is too long"))
        })
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// A project folder (holding rapport.yaml); default: the current folder.
    paths: Vec<PathBuf>,
    /// Where to write the bundle (`-` for stdout).
    #[arg(short, long, value_name = "BUNDLE")]
    output: PathBuf,
    /// The bundle now in production: each changed flow keeps its version from there as
    /// the previous version for staged rollout.
    #[arg(long, value_name = "OLD_BUNDLE")]
    baseline: Option<PathBuf>,
    /// Print how long each phase took, on stderr.
    #[arg(long)]
    timings: bool,
}

#[derive(Debug, clap::Args)]
struct FmtCliArgs {
    /// Project folders (holding rapport.yaml) or .flow files; default: the current folder.
    paths: Vec<PathBuf>,
    /// Change nothing: list the files that are not formatted, and exit 1 if there are any.
    #[arg(long)]
    check: bool,
}

#[derive(Debug, clap::Args)]
struct GraphArgs {
    /// The flow's name.
    flow: String,
    /// The project folder; default: the current folder.
    path: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "mermaid")]
    format: GraphFormatArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum GraphFormatArg {
    /// Mermaid flowchart (GitHub renders it in Markdown).
    Mermaid,
    /// Graphviz dot.
    Dot,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// A project folder (holding rapport.yaml) or .flow files; default: the current folder.
    paths: Vec<PathBuf>,
    /// How to print diagnostics.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// Treat warnings as errors (exit 1 when there are any).
    #[arg(long)]
    deny_warnings: bool,
    /// Print how long each phase took, on stderr.
    #[arg(long)]
    timings: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(args),
        Command::Build(args) => build::run(args),
        Command::Graph(args) => graph::run(args),
        Command::Fmt(args) => fmt::run(fmt::FmtArgs {
            paths: args.paths,
            check: args.check,
        }),
        Command::Run(args) => run::run(args),
        Command::Test(args) => scenario::run(args),
        Command::Audit(AuditCommand::Export { contact, store }) => {
            durable::export(&store, &contact)
        }
        Command::Forget(args) => durable::forget(&args.store, &args.contact),
        Command::Demo(args) => demo::run(&demo::DemoArgs {
            project: &args.project,
            dir: &args.dir,
            listen: &args.listen,
            contacts: args.contacts as usize,
            seed: args.seed,
        }),
        Command::Report(args) => report::run(
            &args.store,
            &args.since,
            args.flow.as_deref(),
            args.format,
            args.output.as_deref(),
        ),
        Command::Serve(args) => serve::run(&args),
        Command::Deploy(args) => serve::deploy(&args),
        Command::Purge(args) => durable::purge(&args.store, args.bundle.as_deref()),
        Command::Rollout(RolloutCommand::Status { bundle, store }) => {
            durable::rollout_status(&store, &bundle)
        }
        Command::Rollout(RolloutCommand::Bucket {
            flow,
            contact,
            group,
        }) => {
            // With --group the one positional argument is the contact.
            let (group, contact) = match (group, flow, contact) {
                (Some(g), Some(c), None) | (Some(g), None, Some(c)) => (g, c),
                (None, Some(f), Some(c)) => (f, c),
                _ => {
                    eprintln!("error: give a flow and a contact (`rapport rollout bucket cart_recovery c1`) or `--group GROUP CONTACT`");
                    return ExitCode::from(2);
                }
            };
            outln!("{}", rapport_engine::rollout::bucket(&group, &contact));
            ExitCode::SUCCESS
        }
    }
}
