//! `rapport graph`: a flow's state graph as Mermaid or Graphviz.

use std::path::PathBuf;
use std::process::ExitCode;

use rapport_check::graph::{render, GraphFormat};
use rapport_syntax::did_you_mean;

use crate::load::load;
use crate::GraphArgs;

pub(crate) fn run(args: GraphArgs) -> ExitCode {
    let path = args.path.clone().unwrap_or_else(|| PathBuf::from("."));
    let loaded = match load(std::slice::from_ref(&path)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for project in &loaded.projects {
        let sources = project.sources();
        let checked = rapport_check::check(&project.settings.settings, &sources);
        if let Some(cf) = checked.flow(&args.flow) {
            if checked.has_errors() {
                eprintln!("warning: the project has errors (see `rapport check`); the graph shows the flow as written");
            }
            let format = match args.format {
                crate::GraphFormatArg::Mermaid => GraphFormat::Mermaid,
                crate::GraphFormatArg::Dot => GraphFormat::Dot,
            };
            out!("{}", render(cf.flow, &cf.graph, format));
            return ExitCode::SUCCESS;
        }
        let names: Vec<&str> = checked
            .flows
            .iter()
            .map(|f| f.flow.name.value.as_str())
            .collect();
        let hint = match did_you_mean(&args.flow, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("the flows are: {}", names.join(", ")),
        };
        eprintln!(
            "error: no flow named `{}` in `{}`\n  help: {hint}",
            args.flow,
            path.display()
        );
    }
    ExitCode::from(2)
}
