//! Per-node clocks that drift: node time runs at `1 + ppm/1e6` times true (madsim) time, so timers of
//! different nodes disagree by a bounded rate, as real oscillators do. A clock outlives its node's
//! crashes, so a node's time never goes backwards across restarts.

use concord::driver::Clock;
use concord_core::Instant;
use std::future::Future;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct SimClock {
    origin: std::time::Instant,
    /// Node time at `origin`, in microseconds (nodes start at different epochs).
    base_us: u64,
    ppm: i64,
}

impl SimClock {
    /// `ppm` must stay well inside ±1e6.
    pub fn new(base_us: u64, ppm: i64) -> Self {
        assert!(ppm.abs() < 500_000, "drift of {ppm} ppm is not a clock");
        SimClock {
            origin: madsim::time::Instant::now(),
            base_us,
            ppm,
        }
    }

    fn local(&self, true_us: u128) -> u64 {
        let scaled = true_us * (1_000_000 + self.ppm) as u128 / 1_000_000;
        self.base_us + scaled as u64
    }

    /// True time it takes this clock to advance by `local`, rounded up so the deadline has passed on wake.
    fn true_duration(&self, local_us: u64) -> Duration {
        let num = u128::from(local_us) * 1_000_000;
        let den = (1_000_000 + self.ppm) as u128;
        Duration::from_micros(num.div_ceil(den) as u64 + 1)
    }
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        Instant(self.local(self.origin.elapsed().as_micros()))
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send {
        let wait = deadline
            .0
            .checked_sub(self.now().0)
            .filter(|&d| d > 0)
            .map(|d| self.true_duration(d));
        async move {
            if let Some(wait) = wait {
                madsim::time::sleep(wait).await;
            }
        }
    }
}
