//! Flows in another language, run in a child process beside the worker: a **sidecar**
//! speaking `fstore.sidecar.v1` (length-prefixed protobuf over its stdin and stdout; see
//! `proto/proto/fstore/sidecar/v1/sidecar.proto`). Python's is `python -m fstore_flow
//! MODULE` from flows-python.
//!
//! Each flow the sidecar declares becomes a [`Flow`] of the worker's catalog, so the
//! worker queues, batches, retries, dead-letters, scales and traces its jobs exactly as
//! a Rust flow's. One batch at a time goes to the process. A sidecar that exits, answers
//! garbage or takes longer than the batch timeout is killed and the batch fails as
//! transient (its jobs are retried, never lost); the next batch starts it again, after a
//! backoff that doubles with each failure in a row (a crash loop does not spin).

mod process;
mod values;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fstore_flows::{Error as FlowError, Flow, FlowId, FlowInput, FlowSpec, ModelInfo, Value};
use fstore_proto::sidecar as pb;

use process::Process;

/// How a sidecar is started and supervised.
#[derive(Debug, Clone)]
pub struct SidecarOptions {
    /// The program and its arguments (`<venv>/bin/python -m fstore_flow MODULE`).
    pub command: Vec<String>,
    /// How long the process may take to declare its flows (importing, loading models).
    pub start_timeout: Duration,
    /// How long one batch may take.
    pub batch_timeout: Duration,
    /// The first wait before starting a failed sidecar again; doubles up to `restart_max`.
    pub restart_base: Duration,
    pub restart_max: Duration,
}

impl SidecarOptions {
    /// `python -m fstore_flow target` in the venv at `venv`.
    pub fn python(venv: &std::path::Path, target: &str) -> Vec<String> {
        let python: PathBuf = venv.join("bin").join("python");
        vec![
            python.display().to_string(),
            "-m".into(),
            "fstore_flow".into(),
            target.into(),
        ]
    }
}

/// What the worker refuses of a sidecar at start, with what to fix.
#[derive(Debug, thiserror::Error)]
#[error("sidecar `{command}`: {reason}")]
pub struct StartError {
    pub command: String,
    pub reason: String,
}

/// A supervised sidecar and the flows it declared.
#[derive(Debug)]
pub struct Sidecar {
    options: SidecarOptions,
    specs: Vec<FlowSpec>,
    /// Held for a whole batch: one batch at a time.
    state: Mutex<State>,
    /// What operators see, apart from `state` so reading it never waits for a batch.
    status: Mutex<Status>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Status {
    running: bool,
    /// Processes started, the first one included.
    starts: u64,
    /// How long the last start took (its import, models included), in milliseconds.
    start_ms: u64,
}

#[derive(Debug, Default)]
struct State {
    process: Option<Process>,
    /// Failures in a row; the backoff doubles with each.
    failures: u32,
    /// Not started again before then.
    not_before: Option<Instant>,
    next_batch: u64,
}

impl Sidecar {
    /// Starts the sidecar and reads its flows: a command that does not start, exits
    /// before declaring (an import error), or declares invalid specs is refused here,
    /// with the end of its log.
    pub fn start(options: SidecarOptions) -> Result<Arc<Sidecar>, StartError> {
        let command = options.command.join(" ");
        let refuse = |reason: String| StartError {
            command: command.clone(),
            reason,
        };
        let started = Instant::now();
        let (process, specs) =
            Process::start(&options.command, options.start_timeout).map_err(refuse)?;
        let mut seen = std::collections::HashSet::new();
        for spec in &specs {
            if !seen.insert(spec.id.clone()) {
                return Err(refuse(format!("it declares {} twice", spec.id)));
            }
        }
        Ok(Arc::new(Sidecar {
            options,
            specs,
            state: Mutex::new(State {
                process: Some(process),
                ..State::default()
            }),
            status: Mutex::new(Status {
                running: true,
                starts: 1,
                start_ms: started.elapsed().as_millis() as u64,
            }),
        }))
    }

    /// One flow per spec the sidecar declared.
    pub fn flows(self: &Arc<Self>) -> Vec<Arc<dyn Flow>> {
        self.specs
            .iter()
            .map(|spec| {
                Arc::new(SidecarFlow {
                    spec: spec.clone(),
                    sidecar: self.clone(),
                }) as Arc<dyn Flow>
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn status(&self) -> Status {
        *self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_status(&self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn run(&self, spec: &FlowSpec, batch: &[FlowInput]) -> Vec<Result<Value, FlowError>> {
        let mut items = Vec::with_capacity(batch.len());
        let mut refused: Vec<Option<FlowError>> = vec![None; batch.len()];
        for (i, input) in batch.iter().enumerate() {
            match values::item(input, spec) {
                Ok(item) => items.push(item),
                Err(e) => refused[i] = Some(e),
            }
        }
        let sent: Vec<usize> = (0..batch.len()).filter(|i| refused[*i].is_none()).collect();
        let answered = if items.is_empty() {
            Ok(Vec::new())
        } else {
            self.exchange(&spec.id, items)
        };
        let mut answered = match answered {
            Ok(results) => results
                .into_iter()
                .map(|r| values::result(r, spec.output))
                .collect::<Vec<_>>()
                .into_iter(),
            Err(e) => {
                return (0..batch.len())
                    .map(|i| Err(refused[i].take().unwrap_or_else(|| e.clone())))
                    .collect();
            }
        };
        let mut out: Vec<Result<Value, FlowError>> = Vec::with_capacity(batch.len());
        for (i, refused) in refused.into_iter().enumerate() {
            out.push(match refused {
                Some(e) => Err(e),
                None if sent.contains(&i) => answered.next().unwrap_or_else(|| {
                    Err(FlowError::Transient(
                        "the sidecar answered too few results".into(),
                    ))
                }),
                None => Err(FlowError::Transient("item not sent".into())),
            });
        }
        out
    }

    /// Sends one batch and waits for its results; on any failure the process is killed
    /// and the next batch starts another (after the backoff).
    fn exchange(&self, flow: &FlowId, items: Vec<pb::Item>) -> Result<Vec<pb::Result>, FlowError> {
        let mut state = self.lock();
        if state.process.is_none() {
            // The batch waits out the backoff rather than failing at once: a failure
            // costs a job's attempt only when the sidecar failed running it.
            if let Some(at) = state.not_before {
                let wait = at.saturating_duration_since(Instant::now());
                std::thread::sleep(wait.min(self.options.batch_timeout));
            }
            let started = Instant::now();
            match Process::start(&self.options.command, self.options.start_timeout) {
                Ok((process, specs)) if specs == self.specs => {
                    state.process = Some(process);
                    self.set_status(|s| {
                        s.running = true;
                        s.starts += 1;
                        s.start_ms = started.elapsed().as_millis() as u64;
                    });
                }
                Ok((mut process, _)) => {
                    process.kill();
                    return Err(self.failed(&mut state, "the restarted sidecar declares other flows than at start; restart the worker to take them".into()));
                }
                Err(e) => return Err(self.failed(&mut state, e)),
            }
        }
        state.next_batch += 1;
        let id = state.next_batch;
        let n = items.len();
        let batch = pb::ToSidecar {
            kind: Some(pb::to_sidecar::Kind::Batch(pb::Batch {
                id,
                flow: flow.name.clone(),
                version: flow.version,
                items,
            })),
        };
        let Some(process) = state.process.as_mut() else {
            return Err(FlowError::Transient("no sidecar process".into()));
        };
        let size = prost::Message::encoded_len(&batch);
        if size > process::MAX_FRAME {
            return Err(FlowError::Permanent(format!(
                "a batch of {size} bytes is over the sidecar protocol's {} MiB frame: lower \
                 worker.max_batch, or send smaller inputs",
                process::MAX_FRAME >> 20
            )));
        }
        match process.call(&batch, self.options.batch_timeout) {
            Ok(pb::FromSidecar {
                kind: Some(pb::from_sidecar::Kind::Results(r)),
            }) if r.id == id && r.results.len() == n => {
                state.failures = 0;
                Ok(r.results)
            }
            Ok(other) => {
                let what = format!("the sidecar answered batch {id} of {n} items with {other:?}");
                Err(self.failed(&mut state, what))
            }
            Err(e) => Err(self.failed(&mut state, e)),
        }
    }

    /// Kills the process and sets the backoff; the error to fail the batch with.
    fn failed(&self, state: &mut State, why: String) -> FlowError {
        let log = state.process.take().map(|mut p| {
            p.kill();
            p.log_tail()
        });
        self.set_status(|s| s.running = false);
        state.failures += 1;
        let exp = state.failures.saturating_sub(1).min(16);
        let wait = (self.options.restart_base * 2u32.pow(exp)).min(self.options.restart_max);
        state.not_before = Some(Instant::now() + wait);
        tracing::warn!(command = %self.options.command.join(" "), failures = state.failures, restart_in = ?wait, log = ?log, "sidecar failed: {why}");
        FlowError::Transient(format!("{why}; the sidecar starts again in {wait:?}"))
    }
}

/// One flow of a sidecar, as the worker's catalog holds it.
#[derive(Debug)]
struct SidecarFlow {
    spec: FlowSpec,
    sidecar: Arc<Sidecar>,
}

impl Flow for SidecarFlow {
    fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    fn run(&self, batch: &[FlowInput]) -> Vec<Result<Value, FlowError>> {
        self.sidecar.run(&self.spec, batch)
    }

    /// The sidecar process, as operators see a model: loaded while it runs, `loads`
    /// counting its starts (restarts show as more than one).
    fn model(&self) -> Option<ModelInfo> {
        let status = self.sidecar.status();
        Some(ModelInfo {
            name: format!(
                "sidecar {}",
                self.sidecar
                    .options
                    .command
                    .last()
                    .map_or("", String::as_str)
            ),
            path: self.sidecar.options.command.join(" "),
            sha256: String::new(),
            loaded: status.running,
            load_ms: status.start_ms,
            loads: status.starts,
        })
    }
}
