//! The fault scheduler: at seeded random times, one fault at a time (every kind once in
//! each six, in a seeded order) — SIGKILL and restart
//! of a worker, a serve replica or a NATS node; SIGSTOP and SIGCONT of any process; a
//! process cut from NATS (all nodes or one) or slowed, through its proxies — and the fault
//! log that, with the seed, replays a run.

use std::time::{Duration, Instant};

use fstore_benches::memory::nats_pid;
use fstore_benches::rng::Rng;
use fstore_tests::proxy::Mode;

use crate::topology::Topology;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    KillWorker,
    KillServe,
    KillNats,
    Stop,
    Partition,
    Slow,
}

impl Kind {
    pub(crate) const ALL: [Kind; 6] = [
        Kind::KillWorker,
        Kind::KillServe,
        Kind::KillNats,
        Kind::Stop,
        Kind::Partition,
        Kind::Slow,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::KillWorker => "SIGKILL + restart worker",
            Kind::KillServe => "SIGKILL + restart serve",
            Kind::KillNats => "SIGKILL + restart NATS node",
            Kind::Stop => "SIGSTOP … SIGCONT",
            Kind::Partition => "cut from NATS (proxy)",
            Kind::Slow => "slow link to NATS (proxy)",
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub(crate) kind: Kind,
    pub(crate) target: String,
    pub(crate) detail: String,
    /// Seconds into the load.
    pub(crate) at_s: f64,
    pub(crate) end_s: f64,
    /// Wall clock, Unix ms (to compare with the log's `planned_at_ms`).
    pub(crate) at_ms: i64,
    pub(crate) end_ms: i64,
}

impl Fault {
    /// Whether it can make a planner lose or give back a claim it won (its replica
    /// killed, stopped or cut, or a NATS node under it lost): the one way a value key
    /// is computed under two generations.
    pub(crate) fn touches_planner(&self) -> bool {
        match self.kind {
            Kind::KillServe | Kind::KillNats => true,
            Kind::Stop | Kind::Partition | Kind::Slow => {
                self.target.starts_with("serve") || self.target.starts_with('n')
            }
            Kind::KillWorker => false,
        }
    }
}

pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn signal(sig: &str, pid: Option<u32>) -> String {
    let Some(pid) = pid else {
        return format!("no pid for SIG{sig}");
    };
    match std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
    {
        Ok(s) if s.success() => format!("pid {pid}"),
        Ok(s) => format!("kill -{sig} {pid}: {s}"),
        Err(e) => format!("kill -{sig} {pid}: {e}"),
    }
}

/// Runs faults until `until`; the log, and what went wrong injecting them (a process
/// that did not come back).
pub(crate) async fn schedule(
    topo: &mut Topology,
    mut rng: Rng,
    start: Instant,
    until: Instant,
) -> (Vec<Fault>, Vec<String>) {
    let mut log = Vec::new();
    let mut errors = Vec::new();
    // Let the load start before the first fault.
    tokio::time::sleep(rng.millis(2_000, 4_000)).await;
    // Kinds are dealt from a shuffled deck of all six, so a run of six faults or more
    // injects every kind (a NATS-node kill too), in a seeded order.
    let mut deck: Vec<Kind> = Vec::new();
    while Instant::now() + Duration::from_secs(3) < until {
        if deck.is_empty() {
            deck = Kind::ALL.to_vec();
            for i in (1..deck.len()).rev() {
                deck.swap(i, rng.below(i + 1));
            }
        }
        let Some(kind) = deck.pop() else { break };
        let at = Instant::now();
        let at_ms = unix_ms();
        let (target, detail) = inject(topo, kind, &mut rng, &mut errors).await;
        let f = Fault {
            kind,
            target,
            detail,
            at_s: at.duration_since(start).as_secs_f64(),
            end_s: start.elapsed().as_secs_f64(),
            at_ms,
            end_ms: unix_ms(),
        };
        println!(
            "  fault at {:>5.1} s – {:>5.1} s: {} {} ({})",
            f.at_s,
            f.end_s,
            f.kind.name(),
            f.target,
            f.detail
        );
        log.push(f);
        tokio::time::sleep(rng.millis(2_000, 6_000)).await;
    }
    (log, errors)
}

/// Injects one fault of `kind` and undoes it; (target, detail).
async fn inject(
    topo: &mut Topology,
    kind: Kind,
    rng: &mut Rng,
    errors: &mut Vec<String>,
) -> (String, String) {
    let workers = topo.procs.workers.len();
    let replicas = topo.procs.replicas.len();
    match kind {
        Kind::KillWorker => {
            let i = rng.below(workers);
            let down = rng.millis(300, 2_500);
            let w = &mut topo.procs.workers[i];
            w.proc.kill();
            tokio::time::sleep(down).await;
            if let Err(e) = w.restart().await {
                errors.push(format!("{} did not restart: {e:#}", w.name));
            }
            (w.name.clone(), format!("down {down:?}, start {}", w.starts))
        }
        Kind::KillServe => {
            let i = rng.below(replicas);
            let down = rng.millis(300, 2_500);
            topo.endpoints.set(i, None);
            let r = &mut topo.procs.replicas[i];
            r.proc.kill();
            tokio::time::sleep(down).await;
            match r.restart().await {
                Ok(()) => match r.client(None).await {
                    Ok(c) => topo.endpoints.set(i, Some(c)),
                    Err(e) => errors.push(format!("{} does not answer: {e:#}", r.name)),
                },
                Err(e) => errors.push(format!("{} did not restart: {e:#}", r.name)),
            }
            (
                r.name.clone(),
                format!(
                    "down {down:?}, start {} at {}",
                    r.starts,
                    r.url.as_deref().unwrap_or("?")
                ),
            )
        }
        Kind::KillNats => {
            let i = rng.below(topo.nats.len());
            let down = rng.millis(500, 3_000);
            let n = &mut topo.nats[i];
            n.kill();
            tokio::time::sleep(down).await;
            // restart() sleeps between tries: off the reactor.
            if let Err(e) = tokio::task::block_in_place(|| n.restart()) {
                errors.push(format!("NATS node n{i} did not restart: {e:#}"));
            }
            (format!("n{i}"), format!("down {down:?}"))
        }
        Kind::Stop => {
            let nodes = topo.nats.len();
            let pick = rng.below(replicas + workers + nodes);
            let for_ = rng.millis(1_000, 4_000);
            let (name, pid) = if pick < replicas + workers {
                let p = topo
                    .procs
                    .all()
                    .nth(pick)
                    .map(|p| (p.name.clone(), p.pid()));
                p.unwrap_or_default()
            } else {
                let n = pick - replicas - workers;
                (format!("n{n}"), nats_pid(&topo.nats[n].store_dir()))
            };
            let stopped = signal("STOP", pid);
            tokio::time::sleep(for_).await;
            let cont = signal("CONT", pid);
            (name, format!("stopped {for_:?} ({stopped}; CONT {cont})"))
        }
        Kind::Partition | Kind::Slow => {
            let names: Vec<String> = topo.proxies.keys().cloned().collect();
            let name = names[rng.below(names.len())].clone();
            let nodes = topo.nats.len();
            // A partition cuts every node or one; a slow link slows every node.
            let one = (kind == Kind::Partition && rng.below(2) == 0).then(|| rng.below(nodes));
            let (mode, for_) = if kind == Kind::Partition {
                (Mode::Partition, rng.millis(1_000, 5_000))
            } else {
                (Mode::Latency(rng.millis(20, 200)), rng.millis(2_000, 6_000))
            };
            let proxies = topo.proxies.get(&name).map(Vec::as_slice).unwrap_or(&[]);
            for (n, p) in proxies.iter().enumerate() {
                if one.is_none_or(|o| o == n) {
                    p.set(mode);
                }
            }
            tokio::time::sleep(for_).await;
            for p in proxies {
                p.set(Mode::Pass);
            }
            let scope = one.map_or("every node".to_string(), |n| format!("node n{n}"));
            (name, format!("{mode:?} to {scope} for {for_:?}"))
        }
    }
}
