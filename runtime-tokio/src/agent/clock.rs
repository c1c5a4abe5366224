//! The production clock: tokio's monotonic clock, as microseconds since the agent started.

use crate::driver::Clock;
use concord_core::Instant;
use std::future::Future;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    epoch: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        TokioClock {
            epoch: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros().min(u64::MAX as u128) as u64)
    }

    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send {
        tokio::time::sleep_until(self.epoch + Duration::from_micros(deadline.as_micros()))
    }
}
