//! Wall-clock time in milliseconds since the Unix epoch, as stored in envelopes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// When something made at `now_ms` with a lifetime of `ttl_ms` expires: saturating at
/// the ends of `i64`, so no TTL (a registration's, up to `u64::MAX`) can wrap or panic.
pub fn expires_at_ms(now_ms: i64, ttl_ms: u64) -> i64 {
    now_ms.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX))
}

/// [`expires_at_ms`] for a lifetime given as a duration.
pub fn expires_after(now_ms: i64, ttl: Duration) -> i64 {
    expires_at_ms(now_ms, u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_adds_the_ttl() {
        assert_eq!(expires_at_ms(1_000, 500), 1_500);
        assert_eq!(expires_after(1_000, Duration::from_secs(2)), 3_000);
    }

    #[test]
    fn expiry_saturates_for_any_ttl() {
        assert_eq!(expires_at_ms(1_000, u64::MAX), i64::MAX);
        assert_eq!(expires_at_ms(i64::MAX, 1), i64::MAX);
        assert_eq!(expires_at_ms(-5, u64::MAX), i64::MAX - 5);
        assert_eq!(expires_after(0, Duration::MAX), i64::MAX);
    }
}
