//! The open loop's clock: waits until each order is due, to the tens of microseconds, on the
//! runtime's own thread.
//!
//! tokio's timer ticks once a millisecond, so an order sent on it would leave up to a millisecond
//! after it was due, and the POST latency (counted from when the order was due) would blame the
//! service for it. A thread of its own sleeping precisely costs two wake-ups per order instead
//! (its own, and the runtime's to take the order over), on the cores that the pipeline shares.
//! A Linux `timerfd` is as precise, and the runtime waits on it with the sockets it already polls:
//! one wake-up, often shared with a response arriving at the same moment.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Instant;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;

/// A one-shot `timerfd` on the monotonic clock (`Instant`'s).
struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

pub struct Schedule {
    timer: AsyncFd<Timer>,
}

impl Schedule {
    /// Must be called within a tokio runtime (it registers the timer with its reactor).
    pub fn new() -> std::io::Result<Self> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // `AsyncFd::new` is deprecated for an inner value whose descriptor could be closed while
        // registered; `Timer` owns its descriptor and keeps it open for as long as it lives, and
        // the replacement (`AsyncFd::register`) is `unsafe`, which this workspace forbids.
        #[allow(deprecated)]
        let timer = AsyncFd::new(Timer(timer))?;
        Ok(Self { timer })
    }

    /// Returns at `due`, or at once if it has passed.
    pub async fn until(&mut self, due: Instant) -> std::io::Result<()> {
        let wait = due.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            // A zero one-shot time would disarm the timer, not fire it.
            return Ok(());
        }
        self.timer.get_ref().0.set(
            Expiration::OneShot(TimeSpec::from_duration(wait)),
            TimerSetTimeFlags::empty(),
        )?;
        loop {
            let mut ready = self.timer.readable().await?;
            // Non-blocking: reading the expiration count succeeds once the timer has fired and
            // fails with EAGAIN before (a readiness left over from the last wait).
            match ready.get_inner().0.wait() {
                Ok(()) => return Ok(()),
                Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn returns_at_each_due_time_and_not_before() {
        let mut schedule = Schedule::new().unwrap();
        let began = Instant::now();
        for i in 1..=20u32 {
            let due = began + Duration::from_micros(300) * i;
            schedule.until(due).await.unwrap();
            assert!(Instant::now() >= due, "woke before order {i} was due");
        }
    }

    #[tokio::test]
    async fn a_due_time_that_has_passed_returns_at_once() {
        let mut schedule = Schedule::new().unwrap();
        let past = Instant::now();
        // A timer armed with zero would be disarmed and wait forever: the deadline fails that.
        tokio::time::timeout(Duration::from_secs(5), schedule.until(past))
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_due_time_a_nanosecond_away_still_fires() {
        let mut schedule = Schedule::new().unwrap();
        let due = Instant::now() + Duration::from_nanos(1);
        tokio::time::timeout(Duration::from_secs(5), schedule.until(due))
            .await
            .unwrap()
            .unwrap();
        assert!(Instant::now() >= due);
    }
}
