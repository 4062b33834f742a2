//! One measurement of a batch size, and the check every embedding passes.

use fstore_flows::{Error as FlowError, Value};
use hdrhistogram::Histogram;

/// Length of an embedding.
pub(crate) const DIM: usize = 384;

/// One measurement of a batch size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) per_sec: f64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    /// Part B: texts per forward pass the worker ran (mean).
    pub(crate) mean_batch: f64,
}

pub(crate) fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits.
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub(crate) fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Why an output of the flow is not a `[384]` tensor, if it is not.
pub(crate) fn check_output(out: &Result<Value, FlowError>) -> Result<(), String> {
    match out {
        Ok(Value::Tensor(t)) if t.dims() == [DIM] => Ok(()),
        Ok(Value::Tensor(t)) => Err(format!("a tensor of shape {:?}, not [{DIM}]", t.dims())),
        Ok(v) => Err(format!("a {:?}, not a tensor", v.value_type())),
        Err(e) => Err(format!("failed: {}", e.message())),
    }
}
