//! Model lifecycle for flows that load weights: loaded once per process on first use
//! (not per job), reported to operators (name, file hash, load time), unloadable to free
//! memory (scale to zero) and loaded again by the next job.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::Error;

/// What an operator sees of a flow's model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    /// Where the weights are read from.
    pub path: String,
    /// sha256 of the weights file, hex; empty until first loaded.
    pub sha256: String,
    pub loaded: bool,
    /// How long the last load took, in milliseconds.
    pub load_ms: u64,
    /// How many times the model was loaded in this process.
    pub loads: u64,
}

struct Slot<M> {
    model: Option<Arc<M>>,
    info: ModelInfo,
}

/// A model loaded lazily by `load`, shared by every batch, droppable with [`unload`].
///
/// [`unload`]: LazyModel::unload
pub struct LazyModel<M> {
    slot: Mutex<Slot<M>>,
    load: Box<dyn Fn() -> Result<(M, String), Error> + Send + Sync>,
}

impl<M> std::fmt::Debug for LazyModel<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyModel")
            .field("info", &self.info())
            .finish()
    }
}

impl<M> LazyModel<M> {
    /// `load` returns the model and the sha256 of its weights.
    pub fn new(
        name: impl Into<String>,
        path: impl Into<String>,
        load: impl Fn() -> Result<(M, String), Error> + Send + Sync + 'static,
    ) -> Self {
        LazyModel {
            slot: Mutex::new(Slot {
                model: None,
                info: ModelInfo {
                    name: name.into(),
                    path: path.into(),
                    ..ModelInfo::default()
                },
            }),
            load: Box::new(load),
        }
    }

    /// The model, loading it if needed. Concurrent first callers wait for one load.
    pub fn get(&self) -> Result<Arc<M>, Error> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = &slot.model {
            return Ok(m.clone());
        }
        let started = Instant::now();
        let (model, sha256) = (self.load)()?;
        let model = Arc::new(model);
        slot.model = Some(model.clone());
        slot.info.sha256 = sha256;
        slot.info.loaded = true;
        slot.info.load_ms = started.elapsed().as_millis() as u64;
        slot.info.loads += 1;
        Ok(model)
    }

    /// Drops the model (batches still running keep their reference until they end).
    pub fn unload(&self) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.model = None;
        slot.info.loaded = false;
    }

    pub fn info(&self) -> ModelInfo {
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .info
            .clone()
    }
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &std::path::Path) -> Result<String, Error> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)
        .map_err(|e| Error::Permanent(format!("cannot open {}: {e}", path.display())))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .map_err(|e| Error::Permanent(format!("cannot read {}: {e}", path.display())))?;
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn loads_once_and_again_after_unload() {
        let loads = Arc::new(AtomicU32::new(0));
        let l = loads.clone();
        let m = LazyModel::new("m", "/nowhere", move || {
            l.fetch_add(1, Ordering::SeqCst);
            Ok((42u32, "abc".to_string()))
        });
        assert!(!m.info().loaded);
        assert_eq!(*m.get().expect("load"), 42);
        assert_eq!(*m.get().expect("cached"), 42);
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(m.info().sha256, "abc");
        m.unload();
        assert!(!m.info().loaded);
        m.get().expect("reload");
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        assert_eq!(m.info().loads, 2);
    }
}
