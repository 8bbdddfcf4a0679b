//! A connection's three timeouts (idle, frame, write) on one timer, re-armed lazily.
//!
//! The connection's loop tells [`Deadlines::check`] what it waits on each time it is about to
//! wait. A phase's start is stamped when the phase begins, so the clock is read at most once
//! per wake-up, never per request. The timer is set to the earliest deadline in force; a later
//! one leaves it alone (it fires early, and the check then re-arms it for what is due by
//! then), and only an earlier one resets it. A connection going from request to request thus
//! touches the runtime's timer wheel about once per timeout period, not once per request.

use std::pin::Pin;
use std::task;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The three timeouts, as configured; `None` is off.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub(super) idle: Option<Duration>,
    pub(super) frame: Option<Duration>,
    pub(super) write: Option<Duration>,
}

/// What the connection waits on when it is about to wait.
#[derive(Debug, Clone, Copy)]
pub(super) struct Waiting {
    /// Since when nothing is in flight and nothing is left to write; `None` while busy.
    pub(super) idle_since: Option<Instant>,
    /// It waits for the rest of a frame it has begun to read.
    pub(super) partial_frame: bool,
    /// It has responses the socket does not take.
    pub(super) write_blocked: bool,
}

/// The timeout that fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expired {
    /// Idle (and no frame begun) for the idle timeout.
    Idle(Duration),
    /// A frame begun and not finished within the frame timeout.
    Frame(Duration),
    /// Responses waiting with no byte written for the write timeout.
    Write(Duration),
}

/// The clock read once, on first use, for one check.
#[derive(Debug, Default)]
pub(super) struct Now(Option<Instant>);

impl Now {
    pub(super) fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

/// One connection's deadlines and their timer.
pub(super) struct Deadlines {
    timeouts: Timeouts,
    /// Made on the first deadline: a connection with no timeout in force never has one.
    timer: Option<Pin<Box<Sleep>>>,
    /// What `timer` is set to, until it fires.
    armed: Option<Instant>,
    /// When the frame being read began (as far as the loop saw: the end of the read that
    /// brought its first bytes).
    frame_since: Option<Instant>,
    /// Since when the responses have waited without the socket taking a byte.
    write_since: Option<Instant>,
}

impl Deadlines {
    pub(super) fn new(timeouts: Timeouts) -> Self {
        Self {
            timeouts,
            timer: None,
            armed: None,
            frame_since: None,
            write_since: None,
        }
    }

    /// A frame ended (a request was decoded): the next one starts its own clock.
    pub(super) fn frame_done(&mut self) {
        self.frame_since = None;
    }

    /// The socket took some output: the write timeout starts again.
    pub(super) fn wrote(&mut self) {
        self.write_since = None;
    }

    /// Stamps the phases that begin now and makes sure the timer will wake the task at the
    /// earliest deadline in force. Returns the timeout that has passed, if one has.
    pub(super) fn check(
        &mut self,
        waiting: Waiting,
        now: &mut Now,
        task: &mut task::Context<'_>,
    ) -> Option<Expired> {
        stamp(&mut self.frame_since, waiting.partial_frame, now);
        stamp(&mut self.write_since, waiting.write_blocked, now);
        let (at, expired) = self.due(waiting)?;
        if self.armed.is_none_or(|armed| at < armed) {
            self.arm(at);
        }
        let timer = self.timer.as_mut()?;
        // Twice at most: a timer that fired before `at` (set for an earlier deadline) is
        // re-armed for `at` and polled again, so that it holds the task's waker.
        for _ in 0..2 {
            if timer.as_mut().poll(task).is_pending() {
                return None;
            }
            self.armed = None;
            // The timer fired: read the clock afresh, `now` may be older than the firing.
            if at <= Instant::now() {
                return Some(expired);
            }
            timer.as_mut().reset(at);
            self.armed = Some(at);
        }
        // The timer keeps firing early (its millisecond rounding): come back at once.
        task.waker().wake_by_ref();
        None
    }

    /// The earliest deadline in force and the timeout it stands for.
    fn due(&self, waiting: Waiting) -> Option<(Instant, Expired)> {
        let Timeouts { idle, frame, write } = self.timeouts;
        // A frame begun is the frame timeout's to judge: it is not idleness.
        let idle = waiting
            .idle_since
            .filter(|_| !waiting.partial_frame)
            .zip(idle)
            .map(|(since, after)| (since + after, Expired::Idle(after)));
        let frame = self
            .frame_since
            .zip(frame)
            .map(|(since, after)| (since + after, Expired::Frame(after)));
        let write = self
            .write_since
            .zip(write)
            .map(|(since, after)| (since + after, Expired::Write(after)));
        [idle, frame, write]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    fn arm(&mut self, at: Instant) {
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.armed = Some(at);
    }
}

/// Starts `since` when its phase is on and not yet stamped; clears it when the phase is off.
fn stamp(since: &mut Option<Instant>, on: bool, now: &mut Now) {
    match (on, since.is_some()) {
        (true, false) => *since = Some(now.get()),
        (false, true) => *since = None,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::task::Poll;

    use super::*;

    const IDLE: Duration = Duration::from_secs(100);
    const FRAME: Duration = Duration::from_secs(10);
    const WRITE: Duration = Duration::from_secs(20);

    fn deadlines() -> Deadlines {
        Deadlines::new(Timeouts {
            idle: Some(IDLE),
            frame: Some(FRAME),
            write: Some(WRITE),
        })
    }

    fn idle_since(since: Instant) -> Waiting {
        Waiting {
            idle_since: Some(since),
            partial_frame: false,
            write_blocked: false,
        }
    }

    /// Checks once, as the connection does before it waits.
    async fn check(d: &mut Deadlines, waiting: Waiting) -> Option<Expired> {
        poll_fn(|task| Poll::Ready(d.check(waiting, &mut Now::default(), task))).await
    }

    /// Waits until the timer fires and checks again, as the woken connection does.
    async fn wake_and_check(d: &mut Deadlines, waiting: Waiting) -> Option<Expired> {
        poll_fn(
            |task| match d.timer.as_mut().expect("armed").as_mut().poll(task) {
                Poll::Ready(()) => Poll::Ready(()),
                Poll::Pending => Poll::Pending,
            },
        )
        .await;
        // The fired timer is polled again by `check`, which sees it ready.
        check(d, waiting).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_does_not_reset_the_timer_and_is_honoured_when_it_fires() {
        let mut d = deadlines();
        let start = Instant::now();
        assert_eq!(check(&mut d, idle_since(start)).await, None);
        assert_eq!(d.armed, Some(start + IDLE));
        // A request came and went 30 s later: the timer stays where it was.
        tokio::time::advance(Duration::from_secs(30)).await;
        let later = Instant::now();
        assert_eq!(check(&mut d, idle_since(later)).await, None);
        assert_eq!(d.armed, Some(start + IDLE));
        // It fires early, and is re-armed for the idle deadline then in force.
        assert_eq!(wake_and_check(&mut d, idle_since(later)).await, None);
        assert_eq!(Instant::now(), start + IDLE);
        assert_eq!(d.armed, Some(later + IDLE));
        assert_eq!(
            wake_and_check(&mut d, idle_since(later)).await,
            Some(Expired::Idle(IDLE))
        );
        assert_eq!(Instant::now(), later + IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_resets_the_timer() {
        let mut d = deadlines();
        let start = Instant::now();
        assert_eq!(check(&mut d, idle_since(start)).await, None);
        let partial = Waiting {
            partial_frame: true,
            ..idle_since(start)
        };
        assert_eq!(check(&mut d, partial).await, None);
        assert_eq!(d.armed, Some(start + FRAME));
        assert_eq!(
            wake_and_check(&mut d, partial).await,
            Some(Expired::Frame(FRAME))
        );
        assert_eq!(Instant::now(), start + FRAME);
    }

    #[tokio::test(start_paused = true)]
    async fn progress_restarts_the_write_timeout_and_a_busy_connection_has_none() {
        let mut d = deadlines();
        let blocked = Waiting {
            idle_since: None,
            partial_frame: false,
            write_blocked: true,
        };
        assert_eq!(check(&mut d, blocked).await, None);
        tokio::time::advance(Duration::from_secs(15)).await;
        d.wrote();
        assert_eq!(check(&mut d, blocked).await, None);
        let restarted = Instant::now();
        assert_eq!(
            wake_and_check(&mut d, blocked).await,
            None,
            "fired for the first stamp, re-armed"
        );
        assert_eq!(
            wake_and_check(&mut d, blocked).await,
            Some(Expired::Write(WRITE))
        );
        assert_eq!(Instant::now(), restarted + WRITE);

        let busy = Waiting {
            idle_since: None,
            partial_frame: false,
            write_blocked: false,
        };
        let mut d = deadlines();
        assert_eq!(check(&mut d, busy).await, None);
        assert!(d.timer.is_none(), "no deadline, no timer");
    }
}
