//! `rapport report`: the KPI report of a store as a table, JSON, CSV or an HTML page.

use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ReportFormat {
    Table,
    Json,
    Csv,
    Html,
}

pub(crate) fn run(
    store: &str,
    since: &str,
    flow: Option<&str>,
    format: ReportFormat,
    output: Option<&Path>,
) -> ExitCode {
    let result = (|| -> Result<Vec<u8>, String> {
        let since = rapport_report::parse_since(since).map_err(|e| format!("--since: {e}"))?;
        refuse_older(store)?;
        let mut store = crate::durable::open_to_read(store)?;
        if let Some(name) = flow {
            check_flow(&store, name)?;
        }
        let wall = jiff::Timestamp::now().as_millisecond();
        let report = rapport_report::of_store(&mut store, since, flow, wall)?;
        Ok(match format {
            ReportFormat::Table => rapport_report::table(&report).into_bytes(),
            ReportFormat::Json => {
                let mut v = serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?;
                v.push(b'\n');
                v
            }
            ReportFormat::Csv => rapport_report::to_csv(&report).into_bytes(),
            ReportFormat::Html => rapport_report::html(&report)?.into_bytes(),
        })
    })();
    let written = result.and_then(|bytes| match output {
        Some(path) => crate::build::write_output(path, &bytes).map(|()| {
            eprintln!("wrote {}", path.display());
        }),
        None => {
            use std::io::Write as _;
            let _ = std::io::stdout().write_all(&bytes);
            Ok(())
        }
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// A flow the store's bundle never named is a typo more likely than a flow with no run.
fn check_flow(store: &rapport_store::SqliteStore, name: &str) -> Result<(), String> {
    use rapport_store::Store;
    let Some(text) = store.stored_bundle().map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let Ok(bundle) = serde_json::from_str::<rapport_bundle::Bundle>(&text) else {
        return Ok(());
    };
    let names = bundle.flow_names();
    if names.contains(&name) {
        return Ok(());
    }
    Err(format!(
        "--flow: the store's bundle has no flow `{name}`; its flows: {}",
        names.join(", ")
    ))
}

/// A store of an older schema keeps no run records: reading it must not upgrade it (an
/// older host still using it would then refuse it), and an empty report would mislead.
fn refuse_older(url: &str) -> Result<(), String> {
    let Some(path) = url.strip_prefix("sqlite:").filter(|p| !p.is_empty()) else {
        return Ok(()); // open_to_read says what is wrong with the URL
    };
    let path = std::path::Path::new(path);
    if !path.is_file() {
        return Ok(()); // nor with a missing store
    }
    match rapport_store::SqliteStore::schema_of(path) {
        Ok(Some(v)) if v < rapport_store::SCHEMA => Err(format!(
            "the store `{}` was last written by an older rapport (schema {v}): it keeps no run \
             records for the report yet; run it with this version (`rapport serve` or \
             `rapport run --store`), which upgrades it and records every run from then on",
            path.display()
        )),
        _ => Ok(()),
    }
}
