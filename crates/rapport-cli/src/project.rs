//! Finding a project on disk: the folder holding `rapport.yaml`, and its `.flow` files.

use std::fmt;
use std::path::{Path, PathBuf};

/// A project as found on disk: its settings file and the flow files asked for.
#[derive(Debug)]
pub(crate) struct Project {
    /// The folder holding `rapport.yaml`.
    pub root: PathBuf,
    pub settings_path: PathBuf,
    /// `.flow` files, sorted, so output is the same on every machine.
    pub flow_files: Vec<PathBuf>,
    /// The files among `flow_files` named on the command line (a problem reading one of
    /// them is an error; one found by searching a folder may be skipped with a warning).
    pub named: Vec<PathBuf>,
}

/// Why a path could not be turned into a project (exit code 2).
#[derive(Debug)]
pub(crate) enum ProjectError {
    NotFound(PathBuf),
    NoSettings {
        folder: PathBuf,
        nearby: Option<PathBuf>,
    },
    NotAFlow(PathBuf),
    Io(PathBuf, std::io::Error),
}

impl fmt::Display for ProjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProjectError::NotFound(p) => write!(f, "`{}` does not exist", p.display()),
            ProjectError::NoSettings { folder, nearby } => {
                write!(
                    f,
                    "`{}` is not a Rapport project: it has no rapport.yaml (nor has any folder above it)",
                    folder.display()
                )?;
                match nearby {
                    Some(n) => write!(f, "\n  help: there is a project in `{}`; run `rapport check {}`", n.display(), n.display()),
                    None => write!(f, "\n  help: create an empty rapport.yaml in the project's folder for a project with default settings"),
                }
            }
            ProjectError::NotAFlow(p) => write!(
                f,
                "`{}` is not a .flow file or a folder\n  help: give a project folder or .flow files",
                p.display()
            ),
            ProjectError::Io(p, e) => write!(f, "cannot read `{}`: {e}", p.display()),
        }
    }
}

/// Resolves the paths given on the command line (a folder, or `.flow` files of one
/// project) to projects, each with the flow files asked for.
pub(crate) fn find_projects(paths: &[PathBuf]) -> Result<Vec<Project>, ProjectError> {
    let mut projects: Vec<Project> = Vec::new();
    for path in paths {
        if !path.exists() {
            return Err(ProjectError::NotFound(path.clone()));
        }
        let mut named = Vec::new();
        let (root, files) = if path.is_dir() {
            if !path.join("rapport.yaml").is_file() {
                return Err(ProjectError::NoSettings {
                    folder: path.clone(),
                    nearby: nearby_project(path),
                });
            }
            let mut files = Vec::new();
            collect_flows(path, &mut files)?;
            (path.clone(), files)
        } else if path.extension().is_some_and(|e| e == "flow") {
            let root = project_root_above(path).ok_or_else(|| ProjectError::NoSettings {
                folder: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                nearby: None,
            })?;
            named.push(path.clone());
            (root, vec![path.clone()])
        } else {
            return Err(ProjectError::NotAFlow(path.clone()));
        };
        match projects.iter_mut().find(|p| same_dir(&p.root, &root)) {
            Some(p) => {
                p.flow_files.extend(files);
                p.named.extend(named);
            }
            None => projects.push(Project {
                settings_path: root.join("rapport.yaml"),
                root,
                flow_files: files,
                named,
            }),
        }
    }
    for p in &mut projects {
        p.flow_files.sort();
        p.flow_files.dedup();
    }
    Ok(projects)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The nearest folder at or above the file's folder holding `rapport.yaml`.
fn project_root_above(file: &Path) -> Option<PathBuf> {
    let start = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut dir = start.to_path_buf();
    loop {
        if dir.join("rapport.yaml").is_file() {
            return Some(dir);
        }
        let abs = dir.canonicalize().ok()?;
        abs.parent()?;
        dir = dir.join("..");
    }
}

/// A project folder one or two levels below `dir`, to suggest when `dir` is not one.
fn nearby_project(dir: &Path) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && !is_skipped(p))
        .collect();
    entries.sort();
    entries
        .into_iter()
        .find(|p| p.join("rapport.yaml").is_file())
}

/// Folders never searched for flows: hidden ones and build output.
fn is_skipped(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') || n == "target" || n == "node_modules")
}

fn collect_flows(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ProjectError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ProjectError::Io(dir.to_path_buf(), e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| ProjectError::Io(dir.to_path_buf(), e))?
            .path();
        if path.is_dir() {
            if is_skipped(&path) {
                continue;
            }
            if crate::files::is_symlink(&path) {
                warn_linked_folder(&path);
                continue;
            }
            collect_flows(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "flow") {
            out.push(path);
        }
    }
    Ok(())
}

/// Folders reached through a symbolic link are not searched: the link can lead out of
/// the project or round in a loop.
pub(crate) fn warn_linked_folder(path: &Path) {
    eprintln!(
        "warning: skipped `{}`: it is a symbolic link to a folder, which rapport does not follow\n  help: move the folder into the project instead of linking to it",
        path.display()
    );
}
