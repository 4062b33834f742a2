//! The embedded claims: one generation per claimed key until it is released or its TTL
//! passes (or, never marked submitted, its orphan bound), the requests that joined each
//! compute, and the computes given up.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::store::lock;
use crate::store::add_once;
use crate::{Claim, ClaimStore, Error};

/// A compute: a value key and its claim's generation.
type Compute = (String, u64);

/// A claim: its generation, until when it holds, when it was made, and whether its
/// compute was submitted.
#[derive(Debug, Clone, Copy)]
struct Held {
    generation: u64,
    until: Instant,
    at: Instant,
    submitted: bool,
}

pub struct EmbeddedClaims {
    claims: Mutex<HashMap<String, Held>>,
    /// How long a claim may go unsubmitted before another claimer takes it over.
    orphan_after: Duration,
    /// (key, generation) -> the requests that joined it, and until when it is kept.
    joined: Mutex<HashMap<Compute, (Vec<String>, Instant)>>,
    /// Computes given up, until when they are remembered.
    abandoned: Mutex<HashMap<Compute, Instant>>,
    generation: AtomicU64,
}

impl EmbeddedClaims {
    pub fn new(orphan_after: Duration) -> Self {
        EmbeddedClaims {
            claims: Mutex::default(),
            orphan_after,
            joined: Mutex::default(),
            abandoned: Mutex::default(),
            generation: AtomicU64::default(),
        }
    }
}

/// Forgets entries whose time has passed, when a map has grown.
fn prune<K, V>(map: &mut HashMap<K, V>, until: impl Fn(&V) -> Instant) {
    if map.len() > 10_000 && map.len().is_power_of_two() {
        let now = Instant::now();
        map.retain(|_, v| until(v) > now);
    }
}

#[async_trait]
impl ClaimStore for EmbeddedClaims {
    async fn claim(&self, key: &str, ttl: Duration) -> Result<Claim, Error> {
        let now = Instant::now();
        let mut claims = lock(&self.claims);
        if let Some(h) = claims.get(key)
            && h.until > now
            && (h.submitted || now.duration_since(h.at) < self.orphan_after)
        {
            return Ok(Claim::Held(h.generation));
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let held = Held {
            generation,
            until: now + ttl,
            at: now,
            submitted: false,
        };
        claims.insert(key.to_string(), held);
        Ok(Claim::Won(generation))
    }

    async fn submitted(&self, key: &str, generation: u64, _ttl: Duration) -> Result<(), Error> {
        if let Some(h) = lock(&self.claims).get_mut(key)
            && h.generation == generation
        {
            h.submitted = true;
        }
        Ok(())
    }

    async fn release(&self, key: &str, generation: u64) -> Result<(), Error> {
        let mut claims = lock(&self.claims);
        if claims.get(key).is_some_and(|h| h.generation == generation) {
            claims.remove(key);
        }
        drop(claims);
        lock(&self.joined).remove(&(key.to_string(), generation));
        Ok(())
    }

    async fn join(
        &self,
        key: &str,
        generation: u64,
        holder: &str,
        ttl: Duration,
    ) -> Result<(), Error> {
        let mut joined = lock(&self.joined);
        prune(&mut joined, |(_, until)| *until);
        let (holders, until) = joined
            .entry((key.to_string(), generation))
            .or_insert_with(|| (Vec::new(), Instant::now() + ttl));
        *until = Instant::now() + ttl;
        add_once(holders, holder);
        Ok(())
    }

    async fn joiners(&self, key: &str, generation: u64) -> Result<Vec<String>, Error> {
        Ok(lock(&self.joined)
            .get(&(key.to_string(), generation))
            .map(|(h, _)| h.clone())
            .unwrap_or_default())
    }

    async fn withdraw(
        &self,
        key: &str,
        generation: u64,
        holder: &str,
    ) -> Result<Vec<String>, Error> {
        let mut joined = lock(&self.joined);
        let Some((holders, _)) = joined.get_mut(&(key.to_string(), generation)) else {
            return Ok(Vec::new());
        };
        holders.retain(|h| h != holder);
        Ok(holders.clone())
    }

    async fn abandon(&self, key: &str, generation: u64, ttl: Duration) -> Result<(), Error> {
        {
            let mut abandoned = lock(&self.abandoned);
            prune(&mut abandoned, |until| *until);
            abandoned.insert((key.to_string(), generation), Instant::now() + ttl);
        }
        self.release(key, generation).await
    }

    fn is_abandoned(&self, key: &str, generation: u64) -> bool {
        lock(&self.abandoned)
            .get(&(key.to_string(), generation))
            .is_some_and(|until| *until > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn one_claim_per_key_until_released() {
        let c = EmbeddedClaims::new(Duration::from_secs(5));
        let Claim::Won(g) = c.claim("k", TTL).await.expect("claim") else {
            panic!("the first claim wins");
        };
        assert_eq!(c.claim("k", TTL).await.expect("claim"), Claim::Held(g));
        c.release("k", g).await.expect("release");
        let Claim::Won(g2) = c.claim("k", TTL).await.expect("claim") else {
            panic!("a released key can be claimed again");
        };
        assert!(g2 > g, "a new claim gets a new generation");
    }

    #[tokio::test]
    async fn a_claim_never_submitted_is_taken_over_after_its_orphan_bound() {
        let c = EmbeddedClaims::new(Duration::from_millis(50));
        let Claim::Won(g) = c.claim("k", TTL).await.expect("claim") else {
            panic!("the first claim wins");
        };
        assert_eq!(c.claim("k", TTL).await.expect("claim"), Claim::Held(g));
        tokio::time::sleep(Duration::from_millis(80)).await;
        let Claim::Won(g2) = c.claim("k", TTL).await.expect("claim") else {
            panic!("an unsubmitted claim past its bound is taken over");
        };
        assert!(g2 > g);
        c.submitted("k", g2, TTL).await.expect("submitted");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(
            c.claim("k", TTL).await.expect("claim"),
            Claim::Held(g2),
            "a submitted claim holds for its TTL"
        );
    }

    #[tokio::test]
    async fn joiners_are_kept_per_generation_and_withdrawn_one_by_one() {
        let c = EmbeddedClaims::new(Duration::from_secs(5));
        c.join("k", 1, "a", TTL).await.expect("join");
        c.join("k", 1, "b", TTL).await.expect("join");
        c.join("k", 1, "a", TTL).await.expect("join again");
        c.join("k", 2, "z", TTL).await.expect("join");
        assert_eq!(c.joiners("k", 1).await.expect("joiners"), ["a", "b"]);
        assert_eq!(c.withdraw("k", 1, "a").await.expect("withdraw"), ["b"]);
        assert_eq!(c.joiners("k", 2).await.expect("joiners"), ["z"]);
    }

    #[tokio::test]
    async fn an_abandoned_compute_frees_its_key_and_is_remembered() {
        let c = EmbeddedClaims::new(Duration::from_secs(5));
        let Claim::Won(g) = c.claim("k", TTL).await.expect("claim") else {
            panic!("the first claim wins");
        };
        c.abandon("k", g, TTL).await.expect("abandon");
        assert!(c.is_abandoned("k", g));
        let Claim::Won(g2) = c.claim("k", TTL).await.expect("claim") else {
            panic!("an abandoned compute's key can be claimed again");
        };
        assert!(!c.is_abandoned("k", g2), "only that generation is given up");
    }
}
