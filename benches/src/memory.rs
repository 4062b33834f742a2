//! Memory: the RSS of the processes under load (the soak, the chaos run), read from
//! `/proc`, and its samples.

use std::path::Path;

/// VmRSS of a live process, in KiB; None once it has exited (or is a zombie).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut rss = None;
    for line in text.lines() {
        if let Some(state) = line.strip_prefix("State:")
            && state.trim_start().starts_with('Z')
        {
            return None;
        }
        if let Some(v) = line.strip_prefix("VmRSS:") {
            rss = v.trim().trim_end_matches("kB").trim().parse().ok();
        }
    }
    rss
}

/// The pid of the nats-server whose command line names `store` (ours, not another).
pub fn nats_pid(store: &Path) -> Option<u32> {
    let needle = store.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
}

#[derive(Debug, Default)]
pub struct Rss {
    /// (seconds into the load, RSS in KiB per process; None once exited).
    pub samples: Vec<(f64, Vec<Option<u64>>)>,
    pub warmup: Option<Vec<Option<u64>>>,
    pub end: Option<Vec<Option<u64>>>,
}

pub fn read_all(pids: &[Option<u32>]) -> Vec<Option<u64>> {
    pids.iter().map(|p| p.and_then(rss_kib)).collect()
}

pub fn mib(kib: Option<u64>) -> String {
    kib.map_or("gone".to_string(), |k| format!("{:.1}", k as f64 / 1024.0))
}
