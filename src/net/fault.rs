//! What a fault does to one link direction (sans-IO): while a crash or a partition is on,
//! every datagram is dropped; while a loss burst is on, each is dropped with its
//! probability, drawn from the direction's own seeded stream. The datagram never reaches
//! the link's stages, as on a cut cable or a host that is down.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The faults acting on one direction now, and what they dropped.
#[derive(Debug)]
pub struct Gate {
    /// The active faults: (their index in the scenario, the fraction they drop).
    active: Vec<(usize, f64)>,
    rng: ChaCha8Rng,
    /// Datagrams dropped by faults.
    pub dropped: u64,
}

impl Gate {
    pub fn new(seed: u64) -> Self {
        Gate {
            active: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            dropped: 0,
        }
    }

    /// Fault `id` begins, dropping `fraction` of the datagrams (1: all of them).
    pub fn begin(&mut self, id: usize, fraction: f64) {
        self.active.push((id, fraction));
    }

    /// Fault `id` ends.
    pub fn end(&mut self, id: usize) {
        self.active.retain(|&(i, _)| i != id);
    }

    /// Whether a datagram offered now passes. Each active fault drops it on its own.
    pub fn pass(&mut self) -> bool {
        let mut pass = true;
        for &(_, p) in &self.active {
            // One draw per active partial fault, so the stream does not depend on whether
            // an earlier fault already dropped the datagram.
            let dropped = p >= 1.0 || self.rng.random::<f64>() < p;
            pass &= !dropped;
        }
        if !pass {
            self.dropped += 1;
        }
        pass
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;

    #[test]
    fn a_gate_drops_everything_while_a_full_fault_is_on_and_nothing_after() {
        let mut g = Gate::new(1);
        assert!(g.pass());
        g.begin(0, 1.0);
        assert!((0..100).all(|_| !g.pass()));
        g.end(0);
        assert!((0..100).all(|_| g.pass()));
        assert_eq!(g.dropped, 100);
    }

    #[test]
    fn a_loss_burst_drops_its_fraction_within_the_binomial_bound() {
        let mut g = Gate::new(7);
        g.begin(3, 0.3);
        let n = 100_000;
        let dropped = (0..n).filter(|_| !g.pass()).count() as f64;
        // 0.3 ± 5 standard deviations of a binomial of n draws.
        let sd = (n as f64 * 0.3 * 0.7).sqrt();
        assert!((dropped - 30_000.0).abs() < 5.0 * sd, "{dropped}");
    }
}
