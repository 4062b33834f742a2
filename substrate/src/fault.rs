//! Test-only fault points. A process started with `FSTORE_FAULT=<name>` stops at the
//! point of that name the first time it reaches it: it says so on stderr and waits
//! forever, so a test can SIGKILL it exactly there (between storing a value and logging
//! it, say). Unset — always, outside tests — a point costs one load of a `OnceLock`.

use std::sync::OnceLock;

/// The variable that names the point to stop at.
pub const VARIABLE: &str = "FSTORE_FAULT";

/// Between storing a settled job's value and appending its log record.
pub const BEFORE_LOG: &str = "settle.before_log";

/// Between winning a claim and submitting its job (a planner that dies there).
pub const BEFORE_SUBMIT: &str = "plan.before_submit";

fn armed() -> Option<&'static str> {
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    FAULT
        .get_or_init(|| std::env::var(VARIABLE).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Stops here forever if this point is the armed one.
pub async fn point(name: &str) {
    if armed() == Some(name) {
        eprintln!("fault point `{name}` reached: waiting to be killed");
        tracing::error!(point = name, "fault point reached: waiting to be killed");
        futures::future::pending::<()>().await;
    }
}
