//! Flows declared in configuration, without code: `[[flow]]` entries of the config file
//! (or of a flow file given to `--flow-file`, in the same form), each backed by a model
//! folder on disk.
//!
//! ```toml
//! [[flow]]
//! name = "text.e5_small"            # the flow's name; features name it as name@version
//! version = 1
//! kind = "sentence-transformer"     # a sentence-transformers folder, BERT family
//! path = "/models/e5-small-v2"
//! model = "intfloat/e5-small-v2"    # what operators see (default: the folder's name)
//! ```
//!
//! Flows in Python (`--python MODULE --venv DIR`) run in a supervised sidecar process
//! ([`SidecarConfig`]) and join the catalog the same way.
//!
//! A process adds them to its built-in flows. One it cannot serve (a folder missing a
//! file, an unsupported architecture, a name@version a built-in flow or another entry
//! has) is refused at start with what to fix; the others are served.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use fstore_flows::sentence::{Options, SentenceTransformer};
use fstore_flows::{Catalog, Flow, FlowId};
use fstore_substrate::worker::sidecar::{Sidecar, SidecarOptions};
use serde::{Deserialize, Serialize};

use super::Error;

/// One flow declared in configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    pub name: String,
    #[serde(default = "first_version")]
    pub version: u32,
    pub kind: FlowKind,
    /// The model folder.
    pub path: PathBuf,
    /// What operators see as the model's name.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

fn first_version() -> u32 {
    1
}

/// What backs a configured flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowKind {
    /// A sentence-transformers folder: text in, an embedding out.
    SentenceTransformer,
}

impl FlowConfig {
    pub fn id(&self) -> FlowId {
        FlowId::new(self.name.clone(), self.version)
    }

    /// The flow, its folder read now (not its weights).
    fn open(&self) -> Result<Arc<dyn Flow>, fstore_flows::Error> {
        match self.kind {
            FlowKind::SentenceTransformer => {
                let flow = SentenceTransformer::open(&Options {
                    name: self.name.clone(),
                    version: self.version,
                    folder: self.path.clone(),
                    model: self.model.clone(),
                    description: self.description.clone(),
                })?;
                Ok(Arc::new(flow))
            }
        }
    }
}

/// A flow file: `[[flow]]` entries, as in the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowFile {
    #[serde(default)]
    flow: Vec<FlowConfig>,
}

/// The `[[flow]]` entries of a flow file; relative paths are taken from the file's folder.
pub fn read_flow_file(path: &Path) -> Result<Vec<FlowConfig>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Rule(format!("cannot read the flow file {}: {e}", path.display())))?;
    let file: FlowFile = toml::from_str(&text).map_err(|e| {
        Error::Rule(format!(
            "the flow file {} is not valid: {e}",
            path.display()
        ))
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(file
        .flow
        .into_iter()
        .map(|mut f| {
            if f.path.is_relative() {
                f.path = base.join(&f.path);
            }
            f
        })
        .collect())
}

/// A flow entry refused at start, with what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub flow: String,
    pub reason: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "flow {} refused: {}", self.flow, self.reason)
    }
}

/// `catalog` with the flows of `entries` added; the entries it cannot serve are
/// returned beside it, each with its reason, and left out.
pub fn with_configured(mut catalog: Catalog, entries: &[FlowConfig]) -> (Catalog, Vec<Refused>) {
    let mut refused = Vec::new();
    for entry in entries {
        // A clash is said as such, without reading the folder.
        if catalog.get(&entry.id()).is_some() {
            refused.push(clash(&entry.id()));
            continue;
        }
        match entry.open() {
            Ok(flow) => add(&mut catalog, flow, &mut refused),
            Err(e) => refused.push(Refused {
                flow: entry.id().to_string(),
                reason: e.to_string(),
            }),
        }
    }
    (catalog, refused)
}

/// `catalog` with the flows of a sidecar per target (`MODULE[:ATTR]`, run by the venv's
/// python as `python -m fstore_flow TARGET`) added; a sidecar that cannot start or
/// declares invalid specs, and a flow whose name@version is taken, are refused.
pub fn with_sidecars(
    mut catalog: Catalog,
    targets: &[String],
    venv: &Path,
    config: &SidecarConfig,
) -> (Catalog, Vec<Refused>) {
    let mut refused = Vec::new();
    for target in targets {
        match Sidecar::start(config.options(SidecarOptions::python(venv, target))) {
            Ok(sidecar) => {
                for flow in sidecar.flows() {
                    add(&mut catalog, flow, &mut refused);
                }
            }
            Err(e) => refused.push(Refused {
                flow: format!("sidecar {target}"),
                reason: e.to_string(),
            }),
        }
    }
    (catalog, refused)
}

/// Adds `flow` unless a built-in flow or an earlier one has its name and version.
fn add(catalog: &mut Catalog, flow: Arc<dyn Flow>, refused: &mut Vec<Refused>) {
    let id = flow.spec().id.clone();
    if catalog.get(&id).is_some() {
        refused.push(clash(&id));
        return;
    }
    catalog.insert(flow);
}

fn clash(id: &FlowId) -> Refused {
    Refused {
        flow: id.to_string(),
        reason: "a built-in flow or an earlier one has this name and version: give it \
                 another name or version"
            .to_string(),
    }
}

/// `[sidecar]`: how a worker supervises the sidecars of `--python` flows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SidecarConfig {
    /// How long a sidecar may take to declare its flows (its imports and models).
    #[serde(with = "humantime_serde")]
    pub start_timeout: Duration,
    /// How long one batch may take before the sidecar is killed and the batch retried.
    #[serde(with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// The first wait before a failed sidecar starts again; it doubles with each failure
    /// in a row, up to `restart_max`.
    #[serde(with = "humantime_serde")]
    pub restart_base: Duration,
    #[serde(with = "humantime_serde")]
    pub restart_max: Duration,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        SidecarConfig {
            start_timeout: Duration::from_secs(120),
            batch_timeout: Duration::from_secs(60),
            restart_base: Duration::from_millis(500),
            restart_max: Duration::from_secs(30),
        }
    }
}

impl SidecarConfig {
    pub fn options(&self, command: Vec<String>) -> SidecarOptions {
        SidecarOptions {
            command,
            start_timeout: self.start_timeout,
            batch_timeout: self.batch_timeout,
            restart_base: self.restart_base,
            restart_max: self.restart_max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_file_reads_like_the_config_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("flows.toml");
        std::fs::write(
            &path,
            "[[flow]]\nname = \"text.small\"\nkind = \"sentence-transformer\"\npath = \"models/small\"\n",
        )
        .expect("write");
        let flows = read_flow_file(&path).expect("flow file");
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].id().to_string(), "text.small@1");
        assert_eq!(flows[0].path, dir.path().join("models/small"));
        std::fs::write(
            &path,
            "[[flow]]\nname = \"x\"\nkind = \"onnx\"\npath = \"m\"\n",
        )
        .expect("write");
        let e = read_flow_file(&path).expect_err("unknown kind");
        assert!(e.to_string().contains("sentence-transformer"), "{e}");
    }

    #[test]
    fn entries_that_cannot_be_served_are_refused_and_the_rest_kept() {
        let entry = |name: &str, version: u32, path: &str| FlowConfig {
            name: name.to_string(),
            version,
            kind: FlowKind::SentenceTransformer,
            path: PathBuf::from(path),
            model: None,
            description: None,
        };
        let (catalog, refused) = with_configured(
            Catalog::builtins(),
            &[
                entry("text.minilm", 1, "/m"),
                entry("text.nowhere", 1, "/nowhere/model"),
            ],
        );
        assert!(
            catalog.get(&FlowId::new("text.minilm", 1)).is_some(),
            "the built-in stays"
        );
        assert!(catalog.get(&FlowId::new("text.nowhere", 1)).is_none());
        assert_eq!(refused.len(), 2);
        assert!(refused[0].reason.contains("built-in"), "{}", refused[0]);
        assert_eq!(refused[0].flow, "text.minilm@1");
        assert!(
            refused[1].reason.contains("does not exist"),
            "{}",
            refused[1]
        );
        assert!(
            refused[1]
                .to_string()
                .starts_with("flow text.nowhere@1 refused")
        );
    }
}
