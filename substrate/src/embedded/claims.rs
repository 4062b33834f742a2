//! The embedded claims: one generation per claimed key until it is released or its TTL
//! passes, the requests that joined each compute, and the computes given up.

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

#[derive(Default)]
pub struct EmbeddedClaims {
    claims: Mutex<HashMap<String, (u64, Instant)>>,
    /// (key, generation) -> the requests that joined it, and until when it is kept.
    joined: Mutex<HashMap<Compute, (Vec<String>, Instant)>>,
    /// Computes given up, until when they are remembered.
    abandoned: Mutex<HashMap<Compute, Instant>>,
    generation: AtomicU64,
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
        if let Some((generation, until)) = claims.get(key)
            && *until > now
        {
            return Ok(Claim::Held(*generation));
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        claims.insert(key.to_string(), (generation, now + ttl));
        Ok(Claim::Won(generation))
    }

    async fn release(&self, key: &str, generation: u64) -> Result<(), Error> {
        let mut claims = lock(&self.claims);
        if claims.get(key).is_some_and(|(g, _)| *g == generation) {
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
        let c = EmbeddedClaims::default();
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
    async fn joiners_are_kept_per_generation_and_withdrawn_one_by_one() {
        let c = EmbeddedClaims::default();
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
        let c = EmbeddedClaims::default();
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
