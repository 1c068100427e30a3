//! The restart delay as a pure function (design.md section 6).

use std::time::Duration;
use upkeep_spec::BackoffSpec;

/// Delay before the next start.
///
/// `failures` is the number of consecutive failed runs *before* this one
/// (0 after a healthy run or a reset). `jitter_sample` is a number in `[0, 1)`
/// from the caller's RNG (tests pass fixed values).
///
/// failures == 0 gives zero (the first restart after a healthy run is
/// immediate); then `initial`, `initial*factor`, ... capped at `max`, then
/// multiplied by `1 + jitter * jitter_sample`.
pub fn delay(spec: &BackoffSpec, failures: u32, jitter_sample: f64) -> Duration {
    let _ = (spec, failures, jitter_sample);
    todo!("backoff delay")
}
