//! What the proxy does to a connection: a fixed [`Faults`] plan, or one drawn per connection by
//! [`RandomFaults`] from a seed.

use std::ops::RangeInclusive;
use std::time::Duration;

/// How the proxy closes the client's side of a connection it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Close {
    /// FIN: the client reads end-of-stream, as when a server or middlebox closes normally.
    #[default]
    Clean,
    /// RST (`SO_LINGER` 0): the client's next read or write fails with `ECONNRESET`.
    Reset,
}

/// A stall of the downstream direction (upstream → client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// Downstream bytes forwarded before the stall starts (0: before the first byte).
    pub after: u64,
    /// When forwarding resumes.
    pub until: StallEnd,
}

/// The end of a [`Stall`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallEnd {
    /// After this long.
    For(Duration),
    /// When [`FaultControl::release_stalls`](super::FaultControl::release_stalls) is called.
    Released,
}

/// The faults planned for one connection. Components combine: a connection may be throttled, corrupted
/// and then cut. Offsets count bytes of the TCP stream, HTTP headers included.
///
/// Built from [`Faults::none`] with the builder methods; the fields are public to read plans back from
/// [`ConnectionRecord`](super::ConnectionRecord)s.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Faults {
    /// Accept, then close at once without contacting the upstream.
    pub refuse: Option<Close>,
    /// End the connection once this many bytes went upstream → client.
    pub cut_downstream_after: Option<u64>,
    /// End the connection once this many bytes went client → upstream.
    pub cut_upstream_after: Option<u64>,
    /// How a cut closes the client's side.
    pub cut_with: Close,
    /// Stop forwarding downstream for a while, keeping both sockets open.
    pub stall: Option<Stall>,
    /// Forward at most this many bytes per second, each direction.
    pub throttle: Option<u64>,
    /// XOR the downstream byte at `.0` with the mask `.1`.
    pub corrupt: Option<(u64, u8)>,
}

/// A fault drawn by [`RandomFaults`], with its offsets drawn from the ranges given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultTemplate {
    /// Reset the connection after a number of downstream bytes.
    Reset {
        /// Where to cut.
        after: RangeInclusive<u64>,
    },
    /// Close the connection cleanly after a number of downstream bytes (a truncated response).
    Truncate {
        /// Where to cut.
        after: RangeInclusive<u64>,
    },
    /// Stall downstream for `duration` after a number of bytes.
    Stall {
        /// Where to stall.
        after: RangeInclusive<u64>,
        /// For how long.
        duration: Duration,
    },
    /// Throttle the whole connection.
    Throttle {
        /// The rate, each direction.
        bytes_per_second: u64,
    },
    /// Flip every bit of one downstream byte.
    Corrupt {
        /// Which byte.
        offset: RangeInclusive<u64>,
    },
    /// Accept and close at once.
    Refuse(Close),
}

/// The soak harness's policy: each new connection is faulted with probability `p`, with a fault drawn
/// from a weighted mix.
///
/// The plan of the n-th accepted connection is a pure function of the seed and n ([`plan_for`]), computed
/// with SplitMix64 written out here, so a run is reproducible from its seed across dependency upgrades, and
/// a report can recompute any connection's plan.
///
/// [`plan_for`]: RandomFaults::plan_for
#[derive(Debug, Clone, PartialEq)]
pub struct RandomFaults {
    seed: u64,
    probability: f64,
    mix: Vec<(u32, FaultTemplate)>,
}

impl Faults {
    /// No fault: pass through.
    pub fn none() -> Self {
        Self::default()
    }

    /// Accept the connection, then close it at once.
    pub fn refuse(mut self, close: Close) -> Self {
        self.refuse = Some(close);
        self
    }

    /// End the connection after `bytes` bytes downstream (upstream → client).
    pub fn cut_downstream_after(mut self, bytes: u64) -> Self {
        self.cut_downstream_after = Some(bytes);
        self
    }

    /// End the connection after `bytes` bytes upstream (client → upstream).
    pub fn cut_upstream_after(mut self, bytes: u64) -> Self {
        self.cut_upstream_after = Some(bytes);
        self
    }

    /// Close cuts with `close` (the default is [`Close::Clean`]).
    pub fn cut_with(mut self, close: Close) -> Self {
        self.cut_with = close;
        self
    }

    /// Stall downstream after `after` bytes until `until`.
    pub fn stall(mut self, after: u64, until: StallEnd) -> Self {
        self.stall = Some(Stall { after, until });
        self
    }

    /// Forward at most `bytes_per_second` each way. Zero is treated as one: a rate of zero is a stall.
    pub fn throttle(mut self, bytes_per_second: u64) -> Self {
        self.throttle = Some(bytes_per_second.max(1));
        self
    }

    /// XOR the downstream byte at `offset` with `mask`.
    pub fn corrupt(mut self, offset: u64, mask: u8) -> Self {
        self.corrupt = Some((offset, mask));
        self
    }

    /// Whether this plan does anything.
    pub fn is_none(&self) -> bool {
        *self == Self::none()
    }
}

impl FaultTemplate {
    fn draw(&self, rng: &mut SplitMix64) -> Faults {
        match self {
            Self::Reset { after } => Faults::none()
                .cut_downstream_after(rng.in_range(after))
                .cut_with(Close::Reset),
            Self::Truncate { after } => Faults::none().cut_downstream_after(rng.in_range(after)),
            Self::Stall { after, duration } => {
                Faults::none().stall(rng.in_range(after), StallEnd::For(*duration))
            }
            Self::Throttle { bytes_per_second } => Faults::none().throttle(*bytes_per_second),
            Self::Corrupt { offset } => Faults::none().corrupt(rng.in_range(offset), 0xff),
            Self::Refuse(close) => Faults::none().refuse(*close),
        }
    }
}

impl RandomFaults {
    /// Faults a connection with `probability` (clamped to 0..=1), reproducibly from `seed`. Add the mix
    /// with [`with`](Self::with); with no mix, nothing is faulted.
    pub fn new(seed: u64, probability: f64) -> Self {
        let probability = if probability.is_nan() {
            0.0
        } else {
            probability.clamp(0.0, 1.0)
        };
        Self {
            seed,
            probability,
            mix: Vec::new(),
        }
    }

    /// Adds `template` to the mix with relative `weight`.
    pub fn with(mut self, weight: u32, template: FaultTemplate) -> Self {
        if weight > 0 {
            self.mix.push((weight, template));
        }
        self
    }

    /// The plan of the connection accepted `connection`-th (from 0).
    pub fn plan_for(&self, connection: u64) -> Faults {
        let mut rng = SplitMix64::new(self.seed ^ connection.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let total: u64 = self.mix.iter().map(|(weight, _)| u64::from(*weight)).sum();
        if total == 0 || rng.unit() >= self.probability {
            return Faults::none();
        }
        let mut pick = rng.next_u64() % total;
        for (weight, template) in &self.mix {
            if pick < u64::from(*weight) {
                return template.draw(&mut rng);
            }
            pick -= u64::from(*weight);
        }
        Faults::none()
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast and fixed forever, which a reproducible soak needs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        let mut rng = Self(seed);
        // One round first, so that seeds differing in one bit give unrelated first draws.
        rng.next_u64();
        rng
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from the top 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn in_range(&mut self, range: &RangeInclusive<u64>) -> u64 {
        let (low, high) = (*range.start(), *range.end());
        if high <= low {
            return low;
        }
        match (high - low).checked_add(1) {
            Some(span) => low + self.next_u64() % span,
            None => self.next_u64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(seed: u64) -> RandomFaults {
        RandomFaults::new(seed, 0.2)
            .with(1, FaultTemplate::Reset { after: 0..=1000 })
            .with(1, FaultTemplate::Truncate { after: 0..=1000 })
            .with(
                1,
                FaultTemplate::Stall {
                    after: 0..=10,
                    duration: Duration::from_secs(1),
                },
            )
            .with(
                1,
                FaultTemplate::Throttle {
                    bytes_per_second: 1000,
                },
            )
    }

    #[test]
    fn plans_are_a_function_of_seed_and_index() {
        let (a, b, c) = (mix(7), mix(7), mix(8));
        let plans_a: Vec<_> = (0..500).map(|i| a.plan_for(i)).collect();
        let plans_b: Vec<_> = (0..500).map(|i| b.plan_for(i)).collect();
        let plans_c: Vec<_> = (0..500).map(|i| c.plan_for(i)).collect();
        assert_eq!(plans_a, plans_b);
        assert_ne!(plans_a, plans_c);
    }

    #[test]
    fn about_p_of_connections_are_faulted_with_every_kind_of_the_mix() {
        let random = mix(42);
        let plans: Vec<_> = (0..10_000).map(|i| random.plan_for(i)).collect();
        let faulted = plans.iter().filter(|plan| !plan.is_none()).count();
        // Seeded, so this is exact for the seed; the bounds say what the figure means.
        assert!((1_800..=2_200).contains(&faulted), "{faulted}");
        assert!(plans.iter().any(|p| p.cut_with == Close::Reset));
        assert!(
            plans
                .iter()
                .any(|p| p.cut_downstream_after.is_some() && p.cut_with == Close::Clean)
        );
        assert!(plans.iter().any(|p| p.stall.is_some()));
        assert!(plans.iter().any(|p| p.throttle == Some(1000)));
        assert!(
            plans
                .iter()
                .all(|p| p.cut_downstream_after.is_none_or(|n| n <= 1000))
        );
    }

    #[test]
    fn certain_and_impossible_probabilities() {
        let always = RandomFaults::new(1, 1.0).with(1, FaultTemplate::Refuse(Close::Reset));
        assert!((0..100).all(|i| always.plan_for(i) == Faults::none().refuse(Close::Reset)));
        let never = RandomFaults::new(1, 0.0).with(1, FaultTemplate::Refuse(Close::Reset));
        assert!((0..100).all(|i| never.plan_for(i).is_none()));
        let empty_mix = RandomFaults::new(1, 1.0);
        assert!(empty_mix.plan_for(0).is_none());
    }

    #[test]
    fn ranges_are_inclusive_and_degenerate_ranges_are_their_start() {
        let mut rng = SplitMix64::new(3);
        let draws: Vec<_> = (0..1000).map(|_| rng.in_range(&(5..=6))).collect();
        assert!(draws.contains(&5) && draws.contains(&6));
        assert!(draws.iter().all(|d| (5..=6).contains(d)));
        assert_eq!(rng.in_range(&(9..=9)), 9);
        let _ = rng.in_range(&(0..=u64::MAX));
    }
}
