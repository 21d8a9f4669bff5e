//! `rapport serve` and `rapport deploy`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::build::read_bundle;

/// `host.yaml`'s problems (and, given a bundle, how it fits it), printed; the
/// configuration when nothing is an error.
fn load_config(
    path: &Path,
    bundle: Option<&rapport_bundle::Bundle>,
) -> Option<rapport_serve::HostConfig> {
    // Any path (host.yaml is often a link into a configuration tree), but only a
    // regular UTF-8 file of sane size.
    let text = match crate::files::read_project_file(path, Path::new("/")) {
        Ok(t) => t,
        Err(crate::files::Refused::NotRegular(kind)) => {
            eprintln!(
                "error: cannot read `{}`: it is {kind}, not a regular file\n  help: give --config the path of host.yaml itself",
                path.display()
            );
            return None;
        }
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", path.display());
            return None;
        }
    };
    let name = path.display().to_string();
    let (config, mut problems) =
        rapport_serve::config::parse(&name, &text, &|k| std::env::var(k).ok());
    if let (Some(c), Some(b)) = (&config, bundle) {
        problems.extend(rapport_serve::config::against_bundle(c, b));
    }
    let errors = problems.iter().filter(|p| p.error).count();
    for p in &problems {
        let at = if p.at.starts_with(&name) {
            p.at.clone()
        } else {
            format!("{name}: {}", p.at)
        };
        let p = rapport_serve::Problem { at, ..p.clone() };
        eprintln!("{p}");
    }
    if errors > 0 {
        eprintln!("error: {name} has {errors} error(s)");
        return None;
    }
    config
}

pub(crate) fn run(args: &crate::ServeArgs) -> ExitCode {
    let bundle = match read_bundle(&args.bundle) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(config) = load_config(&args.config, Some(&bundle)) else {
        return ExitCode::from(2);
    };
    if args.check_config {
        let n = config.channels.len();
        eprintln!(
            "{}: fits the bundle ({n} channel{} connected, listening on {})",
            args.config.display(),
            if n == 1 { "" } else { "s" },
            config.listen
        );
        return ExitCode::SUCCESS;
    }
    let store = match args.store.strip_prefix("sqlite:") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            eprintln!("error: unknown store `{}`: give `sqlite:PATH` (for example `--store sqlite:rapport.db`)", args.store);
            return ExitCode::from(2);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(rapport_serve::serve(rapport_serve::Serve {
        bundle,
        store,
        config,
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

pub(crate) fn deploy(args: &crate::DeployArgs) -> ExitCode {
    let bytes = match std::fs::read(&args.bundle) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", args.bundle.display());
            return ExitCode::from(2);
        }
    };
    // Checked here first, so a wrong file is said before anything is sent.
    if let Err(e) = read_bundle(&args.bundle) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let token = match std::env::var(&args.token_env) {
        Ok(t) if !t.is_empty() => t,
        _ => {
            eprintln!(
                "error: the environment variable `{}` holding the host's api_token is not set",
                args.token_env
            );
            return ExitCode::from(2);
        }
    };
    let url = format!("{}/v1/bundle", args.host.trim_end_matches('/'));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(|e| e.to_string())?;
        let r = client
            .post(&url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(bytes)
            .send()
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
        Ok::<_, String>((status, body))
    });
    match result {
        Ok((status, body)) if status.is_success() => {
            for f in body["flows"].as_array().into_iter().flatten() {
                outln!("{}", f["summary"].as_str().unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!(
                "error: the host refused the bundle ({status}): {}",
                body["error"].as_str().unwrap_or("no reason given")
            );
            for p in body["problems"].as_array().into_iter().flatten() {
                eprintln!("  {}", p.as_str().unwrap_or_default());
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
