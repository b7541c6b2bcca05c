//! `Outage`: a run of failing writes, told once, summarised at most once an interval, and its end
//! announced.
//!
//! A key design decision: a full disk fails every commit, and logging each failure (67,387 lines
//! in 12 s once) buried the one line that said what was wrong, and wrote more to a full disk. So
//! the first failure is told in full, later ones only add to a count that a summary line reports
//! at most once per interval, and the first success after them says how long it lasted and what
//! was refused meanwhile.
//!
//! A disk on the edge of full makes writes fail and succeed by turns (a commit fits, the next does
//! not). An outage that comes back within an interval of its end is the same outage resumed, not
//! a new one: it is summed up like any other, and its end is told once writes have succeeded for
//! a whole interval. However writes alternate, there is at most one line an interval after the
//! first two.
//!
//! `Outage` decides what to say and when; its callers (the span writer, the checkpointer, the
//! settle worker, retention, run assignment) say it in their own words, since they know what a
//! failure means for users. It does no I/O and is given the time, so its rules are tested without
//! waiting.

use std::time::{Duration, Instant};

/// How often a failure that goes on is summarised, unless a caller chooses otherwise.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// The failures of one kind of write, and whether they are going on now.
#[derive(Debug)]
pub struct Outage {
    every: Duration,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Writes succeed, and no outage ended within an interval.
    Quiet,
    /// The last write failed.
    Failing(Ongoing),
    /// The last write succeeded after a resumed outage: its end is told by a success once writes
    /// have succeeded for an interval.
    Recovering(Ongoing),
    /// Its end was told at `ended`; a failure within an interval of it resumes it.
    Ended { outage: Ongoing, ended: Instant },
}

#[derive(Debug, Clone, Copy)]
struct Ongoing {
    began: Instant,
    /// When the last line about it was said.
    said: Instant,
    failures: u64,
    /// What the failures refused (exports, for the writer), summed.
    refused: u64,
    /// Writes that succeeded between its failures.
    succeeded: u64,
    /// The successes since its last failure, and when the first of them came.
    streak: u64,
    recovered: Option<Instant>,
    /// Whether it came back after its end was told: its next end waits for the interval.
    resumed: bool,
}

/// What to log now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Say {
    /// The first failure: say what is wrong, in full.
    Began,
    /// Failing still: the totals since it began.
    Still(Totals),
    /// Working again, after these failures.
    Ended(Totals),
}

/// An outage so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub failures: u64,
    pub refused: u64,
    /// Writes that succeeded between the failures (a disk on the edge of full).
    pub succeeded: u64,
    pub lasted: Duration,
}

impl Outage {
    /// Summaries at most once every `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            state: State::Quiet,
        }
    }

    /// Records a failure at `now` that refused `refused` things; says what to log, if anything.
    pub fn failed(&mut self, now: Instant, refused: u64) -> Option<Say> {
        let every = self.every;
        let (mut o, say_now) = match std::mem::replace(&mut self.state, State::Quiet) {
            State::Failing(o) => (o, false),
            State::Recovering(o) => (o, false),
            State::Ended { outage, ended } if now.saturating_duration_since(ended) < every => (
                Ongoing {
                    resumed: true,
                    ..outage
                },
                false,
            ),
            State::Quiet | State::Ended { .. } => (
                Ongoing {
                    began: now,
                    said: now,
                    failures: 0,
                    refused: 0,
                    succeeded: 0,
                    streak: 0,
                    recovered: None,
                    resumed: false,
                },
                true,
            ),
        };
        o.failures += 1;
        o.refused += refused;
        o.succeeded += std::mem::take(&mut o.streak);
        o.recovered = None;
        let say = if say_now {
            Some(Say::Began)
        } else if now.saturating_duration_since(o.said) >= every {
            o.said = now;
            Some(Say::Still(o.totals(now)))
        } else {
            None
        };
        self.state = State::Failing(o);
        say
    }

    /// Records a success at `now`; says `Ended` when it ends an outage.
    pub fn succeeded(&mut self, now: Instant) -> Option<Say> {
        let every = self.every;
        match std::mem::replace(&mut self.state, State::Quiet) {
            State::Quiet => None,
            State::Ended { outage, ended } => {
                if now.saturating_duration_since(ended) < every {
                    self.state = State::Ended { outage, ended };
                }
                None
            }
            State::Failing(mut o) | State::Recovering(mut o) => {
                o.streak += 1;
                let recovered = *o.recovered.get_or_insert(now);
                // A resumed outage is over once writes have succeeded for an interval: flapping
                // is summed up, never told as ends.
                if o.resumed && now.saturating_duration_since(recovered) < every {
                    self.state = State::Recovering(o);
                    return None;
                }
                let totals = o.totals(recovered);
                o.said = now;
                self.state = State::Ended {
                    outage: o,
                    ended: now,
                };
                Some(Say::Ended(totals))
            }
        }
    }

    /// Whether the last write failed.
    pub fn is_failing(&self) -> bool {
        matches!(self.state, State::Failing(_))
    }

    /// What is left to say when the writes stop at `now`: `Still` when the last one failed,
    /// `Ended` when one succeeded but its end was not told yet.
    pub fn at_exit(&mut self, now: Instant) -> Option<Say> {
        match std::mem::replace(&mut self.state, State::Quiet) {
            State::Failing(o) => Some(Say::Still(o.totals(now))),
            State::Recovering(o) => Some(Say::Ended(o.totals(o.recovered.unwrap_or(now)))),
            State::Quiet | State::Ended { .. } => None,
        }
    }
}

impl Ongoing {
    /// The totals of the outage, as if it lasted until `until`.
    fn totals(&self, until: Instant) -> Totals {
        Totals {
            failures: self.failures,
            refused: self.refused,
            succeeded: self.succeeded,
            lasted: until.saturating_duration_since(self.began),
        }
    }
}

/// A duration as people read it in a log line: `850ms`, `12.5s`, `4m 10s`, `2h 5m`.
pub fn for_people(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A failure every millisecond for ten seconds (a full disk under load) says one `Began`,
    /// then one summary a second, and its end once, with every failure counted.
    #[test]
    fn a_flood_of_failures_is_told_once_then_summarised_once_an_interval() {
        let t0 = Instant::now();
        let mut outage = Outage::new(Duration::from_secs(1));
        let mut said = Vec::new();
        for n in 0..10_000u64 {
            if let Some(s) = outage.failed(t0 + ms(n), 2) {
                said.push((n, s));
            }
        }
        assert_eq!(said[0], (0, Say::Began));
        let summaries: Vec<u64> = said[1..]
            .iter()
            .map(|(n, s)| {
                assert!(matches!(s, Say::Still(_)), "{s:?}");
                *n
            })
            .collect();
        assert_eq!(
            summaries,
            [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000]
        );
        assert_eq!(
            said[1].1,
            Say::Still(Totals {
                failures: 1001,
                refused: 2002,
                succeeded: 0,
                lasted: Duration::from_secs(1)
            })
        );
        assert!(outage.is_failing());
        let end = t0 + ms(10_500);
        assert_eq!(
            outage.succeeded(end),
            Some(Say::Ended(Totals {
                failures: 10_000,
                refused: 20_000,
                succeeded: 0,
                lasted: ms(10_500)
            }))
        );
        assert!(!outage.is_failing());
        // Over: further successes say nothing, and a failure once an interval has passed is a
        // new outage.
        assert_eq!(outage.succeeded(end + ms(1)), None);
        assert_eq!(outage.succeeded(end + ms(2_000)), None);
        assert_eq!(outage.failed(end + ms(2_001), 1), Some(Say::Began));
    }

    /// A disk on the edge of full: writes fail and succeed by turns, a thousand times a second.
    /// The first failure and the first success are told at once; after that, at most a line a
    /// second, and the end once the flapping stops, with what succeeded in between counted.
    #[test]
    fn writes_failing_and_succeeding_by_turns_say_a_line_an_interval_at_most() {
        let t0 = Instant::now();
        let mut outage = Outage::new(Duration::from_secs(1));
        let mut said = Vec::new();
        for n in 0..10_000u64 {
            let now = t0 + ms(n);
            let say = if n % 2 == 0 {
                outage.failed(now, 1)
            } else {
                outage.succeeded(now)
            };
            if let Some(s) = say {
                said.push((n, s));
            }
        }
        assert_eq!(said[0], (0, Say::Began));
        assert!(matches!(said[1], (1, Say::Ended(_))), "{:?}", said[1]);
        // Then one line a second: the resumed outage is summed up, never begun again.
        let rest: Vec<u64> = said[2..].iter().map(|(n, _)| *n).collect();
        assert_eq!(rest.len(), 9, "{said:?}");
        for pair in rest.windows(2) {
            assert!(pair[1] - pair[0] >= 1000, "{said:?}");
        }
        assert!(
            said[2..].iter().all(|(_, s)| matches!(s, Say::Still(_))),
            "{said:?}"
        );
        // The flapping stops with writes that succeed: the end is told once, when they have
        // succeeded for an interval.
        let last = t0 + ms(10_000);
        let ends: Vec<Say> = (0..3_000u64)
            .filter_map(|n| outage.succeeded(last + ms(n)))
            .collect();
        assert_eq!(ends.len(), 1, "{ends:?}");
        let Say::Ended(t) = ends[0] else {
            panic!("{ends:?}")
        };
        assert_eq!(t.failures, 5_000);
        assert_eq!(t.refused, 5_000);
        // Every success but the ones after the last failure came between failures.
        assert_eq!(t.succeeded, 4_999);
        assert_eq!(t.lasted, ms(9_999), "until the first of the last successes");
    }

    /// Summaries follow failures: a failure after a long quiet spell says `Still` at once (the
    /// outage is not over until a write succeeds), and a success with no outage says nothing.
    #[test]
    fn summaries_come_only_with_failures() {
        let t0 = Instant::now();
        let mut outage = Outage::new(Duration::from_secs(30));
        assert_eq!(outage.succeeded(t0), None);
        assert_eq!(outage.failed(t0, 0), Some(Say::Began));
        assert_eq!(outage.failed(t0 + Duration::from_secs(29), 0), None);
        let later = t0 + Duration::from_secs(600);
        assert_eq!(
            outage.failed(later, 0),
            Some(Say::Still(Totals {
                failures: 3,
                refused: 0,
                succeeded: 0,
                lasted: Duration::from_secs(600)
            }))
        );
        assert_eq!(outage.failed(later + Duration::from_secs(1), 0), None);
    }

    /// Stopping says what is left: a failure going on, or an end not told yet.
    #[test]
    fn at_exit_tells_what_is_left() {
        let t0 = Instant::now();
        let mut outage = Outage::new(Duration::from_secs(1));
        assert_eq!(outage.at_exit(t0), None);
        outage.failed(t0, 3);
        assert!(matches!(
            outage.at_exit(t0 + ms(10)),
            Some(Say::Still(Totals { refused: 3, .. }))
        ));
        // An end held back (resumed within the interval, then a success): told at exit.
        outage.failed(t0, 1);
        outage.succeeded(t0 + ms(1));
        outage.failed(t0 + ms(2), 1);
        assert_eq!(outage.succeeded(t0 + ms(3)), None);
        assert!(matches!(
            outage.at_exit(t0 + ms(500)),
            Some(Say::Ended(Totals { failures: 2, .. }))
        ));
    }

    #[test]
    fn durations_read_as_people_say_them() {
        let f = |n| for_people(ms(n));
        assert_eq!(f(850), "850ms");
        assert_eq!(f(12_500), "12.5s");
        assert_eq!(f(250_000), "4m 10s");
        assert_eq!(f(7_500_000), "2h 5m");
    }
}
