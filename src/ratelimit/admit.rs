//! Admission: a request takes from every bucket of every limit that applies, all or nothing;
//! when it ends, its token charges are trued up to the usage the upstream reported and its
//! place in flight is given back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use smallvec::SmallVec;

use super::gcra::Refusal;
use super::headers::{Report, Tightest};
use super::{Counted, Limit, Rule};

/// Most limits one request can meet: tenant, key, route, tenant on route, version.
pub type Applicable = SmallVec<[Arc<Limit>; 5]>;

/// Tokens charged before the call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Estimate {
    pub input: u64,
    pub output: u64,
    /// The caller named its maximum output (or the call produces none): `output` is a bound,
    /// not a guess.
    pub output_requested: bool,
}

impl Estimate {
    fn of(&self, counted: Counted) -> u64 {
        match counted {
            Counted::Requests => 1,
            Counted::Tokens => self.input.saturating_add(self.output),
            Counted::InputTokens => self.input,
            Counted::OutputTokens => self.output,
        }
    }

    /// What a rule of `limit` units is charged up front. A guessed output reservation never
    /// makes a request impossible on its own: against a smaller budget it is cut to what
    /// the budget holds, and the true-up charges what the answer really used.
    fn charge(&self, counted: Counted, limit: u64) -> u64 {
        let full = self.of(counted);
        match counted {
            _ if self.output_requested => full,
            Counted::Tokens => full.min(limit.max(self.input)),
            Counted::OutputTokens => full.min(limit),
            Counted::Requests | Counted::InputTokens => full,
        }
    }
}

/// A request let in: what it took, to true up and give back when it ends.
#[derive(Debug)]
pub struct Admission {
    limits: Applicable,
    estimate: Estimate,
    /// The rate-limit headers of the response.
    pub report: Report,
    settled: AtomicBool,
}

/// A request refused: the rule that refused it and how long to wait.
#[derive(Debug)]
pub struct Rejection {
    pub limit: Arc<Limit>,
    pub rule: &'static str,
    pub refusal: Refusal,
    /// The rate-limit headers of the refusal.
    pub report: Report,
}

/// How a request ended, for the true-up.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// Tokens the upstream reported (input, output).
    pub usage: Option<(u64, u64)>,
    /// The answer streamed; `events` of it came before the end.
    pub streamed: bool,
    /// Answer events streamed: the output produced when no usage came (about a token
    /// each from OpenAI-compatible servers).
    pub events: u64,
    /// It failed before any answer: nothing was generated.
    pub failed_before_answer: bool,
}

/// Whether `b` is a worse refusal than `a`: too large (it can never pass) is the worst of
/// all; between waits, the longer.
fn worse(a: Refusal, b: Refusal) -> bool {
    match (a, b) {
        (Refusal::TooLarge, _) => false,
        (_, Refusal::TooLarge) => true,
        (Refusal::Wait { retry_after_ns: x }, Refusal::Wait { retry_after_ns: y }) => y > x,
    }
}

/// How long a request refused for its place in flight is told to wait: streams end at
/// their own pace, so this is a hint, not a promise.
const IN_FLIGHT_RETRY_NS: u64 = 1_000_000_000;

fn note(report: &mut Report, counted: Counted, tightest: Tightest) {
    let slot = if counted.is_tokens() {
        &mut report.tokens
    } else {
        &mut report.requests
    };
    *slot = Some(slot.map_or(tightest, |t| t.tighter(tightest)));
}

/// Takes `estimate` (and one request, and a place in flight) from every rule of `limits` at
/// `now`. On a refusal, everything taken is given back and the most constraining rule is
/// reported.
pub fn admit(limits: Applicable, estimate: Estimate, now: u64) -> Result<Admission, Rejection> {
    let mut report = Report::default();
    // (limit, rule) pairs taken so far, to give back on a refusal.
    let mut taken: SmallVec<[(usize, usize); 12]> = SmallVec::new();
    let mut refused: Option<(usize, usize, Refusal)> = None;
    for (l, limit) in limits.iter().enumerate() {
        for (r, rule) in limit.rules.iter().enumerate() {
            let outcome = match rule {
                Rule::Rate {
                    counted,
                    rate,
                    bucket,
                    ..
                } => match bucket.try_take(rate, now, estimate.charge(*counted, rate.limit)) {
                    Ok(standing) => {
                        note(
                            &mut report,
                            *counted,
                            Tightest {
                                limit: rate.limit,
                                standing,
                            },
                        );
                        Ok(())
                    }
                    Err(refusal) => Err(refusal),
                },
                Rule::InFlight {
                    max,
                    now: in_flight,
                } => in_flight
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < *max).then_some(n + 1)
                    })
                    .map(|_| ())
                    .map_err(|_| Refusal::Wait {
                        retry_after_ns: IN_FLIGHT_RETRY_NS,
                    }),
            };
            match outcome {
                Ok(()) => taken.push((l, r)),
                Err(refusal) => {
                    if refused.is_none_or(|(_, _, worst)| worse(worst, refusal)) {
                        refused = Some((l, r, refusal));
                    }
                }
            }
        }
    }
    let Some((l, r, refusal)) = refused else {
        return Ok(Admission {
            limits,
            estimate,
            report,
            settled: AtomicBool::new(false),
        });
    };
    for (tl, tr) in taken {
        give_back(&limits[tl].rules[tr], &estimate, now);
    }
    let limit = limits[l].clone();
    limit.rejections[r].fetch_add(1, Ordering::Relaxed);
    Err(Rejection {
        rule: limit.rules[r].key(),
        report: standing_after_refusal(&limits, (l, r), refusal, now),
        limit,
        refusal,
    })
}

/// The headers of a refusal: every rate rule as it stands with nothing taken, the refusing
/// one at zero when it is a wait (a request too large for a whole limit leaves it as it is).
fn standing_after_refusal(
    limits: &Applicable,
    refusing: (usize, usize),
    refusal: Refusal,
    now: u64,
) -> Report {
    let mut report = Report::default();
    for (l, limit) in limits.iter().enumerate() {
        for (r, rule) in limit.rules.iter().enumerate() {
            if let Rule::Rate {
                counted,
                rate,
                bucket,
                ..
            } = rule
            {
                let mut standing = bucket.standing(rate, now);
                if (l, r) == refusing && refusal != Refusal::TooLarge {
                    standing.remaining = 0;
                }
                note(
                    &mut report,
                    *counted,
                    Tightest {
                        limit: rate.limit,
                        standing,
                    },
                );
            }
        }
    }
    report
}

/// Undoes one rule's take.
fn give_back(rule: &Rule, estimate: &Estimate, now: u64) {
    match rule {
        Rule::Rate {
            counted,
            rate,
            bucket,
            ..
        } => bucket.give_back(rate, now, estimate.charge(*counted, rate.limit)),
        Rule::InFlight { now: in_flight, .. } => {
            in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Admission {
    /// Moves `limit` out of this admission into one of its own, which holds the same take
    /// (charges are a function of the estimate and the rule): an attempt's version limit is
    /// settled with that attempt, the request's other limits with the request.
    pub fn split_off(&mut self, limit: &Arc<Limit>) -> Option<Admission> {
        let at = self.limits.iter().position(|l| Arc::ptr_eq(l, limit))?;
        let moved = self.limits.remove(at);
        Some(Admission {
            limits: std::iter::once(moved).collect(),
            estimate: self.estimate,
            report: Report::default(),
            settled: AtomicBool::new(false),
        })
    }

    /// A request refused: it holds nothing, and only reports its limits' headers.
    pub fn refused(report: Report) -> Admission {
        Admission {
            limits: SmallVec::new(),
            estimate: Estimate::default(),
            report,
            settled: AtomicBool::new(true),
        }
    }

    /// The request ended: charge or refund the difference between the estimate and what it
    /// used, and give back its place in flight. Only the first call does anything.
    pub fn settle(&self, outcome: Outcome, now: u64) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        // What the request used, when anything better than the estimate is known.
        let used = match outcome {
            Outcome {
                usage: Some((input, output)),
                ..
            } => Some((input, output)),
            // Nothing reached the model: every token is given back.
            Outcome {
                failed_before_answer: true,
                ..
            } => Some((0, 0)),
            // A stream cut short: the input as estimated, the output it produced.
            Outcome {
                streamed: true,
                events,
                ..
            } => Some((self.estimate.input, events)),
            // A whole answer without usage: the estimate stands.
            Outcome { .. } => None,
        };
        let used = used.map(|(input, output)| Estimate {
            input,
            output,
            output_requested: true,
        });
        for limit in &self.limits {
            for rule in limit.rules.iter() {
                match rule {
                    Rule::Rate {
                        counted,
                        rate,
                        bucket,
                        ..
                    } if counted.is_tokens() => {
                        let Some(used) = used else { continue };
                        let (charged, owed) = (
                            self.estimate.charge(*counted, rate.limit),
                            used.of(*counted),
                        );
                        if owed > charged {
                            bucket.force_take(rate, now, owed - charged);
                        } else {
                            bucket.give_back(rate, now, charged - owed);
                        }
                    }
                    Rule::Rate { .. } => {}
                    Rule::InFlight { now: in_flight, .. } => {
                        in_flight.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            }
        }
    }
}

impl Drop for Admission {
    /// A request dropped without settling (its response never ended normally) still gives
    /// back its place in flight; its token estimate stays charged.
    fn drop(&mut self) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        for limit in &self.limits {
            for rule in limit.rules.iter() {
                if let Rule::InFlight { now: in_flight, .. } = rule {
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitConfig;

    const S: u64 = 1_000_000_000;

    fn limit(name: &str, yaml: &str) -> Arc<Limit> {
        let config: LimitConfig = serde_norway::from_str(yaml).unwrap();
        Arc::new(Limit::new(name.into(), &config).unwrap())
    }

    fn remaining(limit: &Limit, rule: usize, now: u64) -> u64 {
        match &limit.rules[rule] {
            Rule::Rate { rate, bucket, .. } => bucket.standing(rate, now).remaining,
            Rule::InFlight { max, now: n } => u64::from(*max - n.load(Ordering::Relaxed)),
        }
    }

    fn tokens(input: u64, output: u64) -> Estimate {
        Estimate {
            input,
            output,
            output_requested: true,
        }
    }

    #[test]
    fn all_limits_must_pass_and_a_refusal_takes_nothing() {
        let tenant = limit("tenant:a", "requests_per_minute: 100\n");
        let route = limit("route:m", "requests_per_minute: 1\n");
        let both: Applicable = [tenant.clone(), route.clone()].into_iter().collect();
        let first = admit(both.clone(), tokens(0, 0), 0).unwrap();
        assert_eq!(
            first.report.requests.unwrap().limit,
            1,
            "the tightest is reported"
        );
        let refused = admit(both, tokens(0, 0), 0).unwrap_err();
        assert_eq!(
            (&*refused.limit.name, refused.rule),
            ("route:m", "requests_per_minute")
        );
        let requests = refused.report.requests.unwrap();
        assert_eq!((requests.limit, requests.standing.remaining), (1, 0));
        assert_eq!(
            refused.refusal,
            Refusal::Wait {
                retry_after_ns: 60 * S
            }
        );
        assert_eq!(
            remaining(&tenant, 0, 0),
            99,
            "the tenant's take was given back"
        );
        assert_eq!(refused.limit.rejections[0].load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_most_constraining_refusal_is_reported() {
        let a = limit("a", "requests_per_second: 1\n");
        let b = limit("b", "requests_per_minute: 1\n");
        let both: Applicable = [a, b].into_iter().collect();
        admit(both.clone(), tokens(0, 0), 0)
            .unwrap()
            .settle(Outcome::default(), 0);
        let refused = admit(both, tokens(0, 0), 0).unwrap_err();
        assert_eq!(
            &*refused.limit.name, "b",
            "a minute's wait beats a second's"
        );
        let big = limit("c", "tokens_per_minute: 10\n");
        let refused = admit([big].into_iter().collect(), tokens(8, 8), 0).unwrap_err();
        assert_eq!(refused.refusal, Refusal::TooLarge);
    }

    #[test]
    fn tokens_are_estimated_then_trued_up_to_the_usage() {
        let budget = limit(
            "t",
            "tokens_per_minute: 1000\ninput_tokens_per_minute: 500\noutput_tokens_per_minute: 600\n",
        );
        let one: Applicable = [budget.clone()].into_iter().collect();
        let admission = admit(one.clone(), tokens(100, 300), 0).unwrap();
        assert_eq!(remaining(&budget, 0, 0), 600);
        assert_eq!(
            admission.report.tokens.unwrap().standing.remaining,
            300,
            "output: 600 - 300"
        );
        // The answer used 120 in and 50 out: 230 of the 400 come back.
        admission.settle(
            Outcome {
                usage: Some((120, 50)),
                ..Outcome::default()
            },
            0,
        );
        assert_eq!(remaining(&budget, 0, 0), 830);
        assert_eq!(remaining(&budget, 1, 0), 380);
        assert_eq!(remaining(&budget, 2, 0), 550);
        // Settling twice changes nothing.
        admission.settle(
            Outcome {
                usage: Some((0, 0)),
                ..Outcome::default()
            },
            0,
        );
        assert_eq!(remaining(&budget, 0, 0), 830);
        // More than estimated is charged: the bucket goes into debt if need be.
        let admission = admit(one, tokens(10, 10), 0).unwrap();
        admission.settle(
            Outcome {
                usage: Some((10, 900)),
                ..Outcome::default()
            },
            0,
        );
        assert_eq!(remaining(&budget, 0, 0), 0);
    }

    #[test]
    fn a_cut_stream_pays_what_it_produced_and_a_failed_call_nothing() {
        let budget = limit("t", "tokens_per_minute: 1000\n");
        let one: Applicable = [budget.clone()].into_iter().collect();
        let cut = admit(one.clone(), tokens(100, 500), 0).unwrap();
        cut.settle(
            Outcome {
                usage: None,
                streamed: true,
                events: 40,
                failed_before_answer: false,
            },
            0,
        );
        assert_eq!(remaining(&budget, 0, 0), 1000 - 140);
        let failed = admit(one, tokens(100, 500), 0).unwrap();
        failed.settle(
            Outcome {
                usage: None,
                streamed: true,
                events: 0,
                failed_before_answer: true,
            },
            0,
        );
        assert_eq!(remaining(&budget, 0, 0), 1000 - 140);
        let unreported =
            admit([budget.clone()].into_iter().collect(), tokens(100, 500), 0).unwrap();
        unreported.settle(Outcome::default(), 0);
        assert_eq!(
            remaining(&budget, 0, 0),
            1000 - 140 - 600,
            "no usage, no stream: the estimate stands"
        );
    }

    #[test]
    fn a_split_off_limit_is_settled_on_its_own() {
        let route = limit("route:m", "tokens_per_minute: 1000\n");
        let version = limit("version:m/a", "tokens_per_minute: 1000\nconcurrent: 1\n");
        let both: Applicable = [route.clone(), version.clone()].into_iter().collect();
        let mut admission = admit(both, tokens(100, 100), 0).unwrap();
        let version_part = admission.split_off(&version).unwrap();
        // The version's attempt failed: its part is refunded and its place freed at once.
        version_part.settle(
            Outcome {
                failed_before_answer: true,
                ..Outcome::default()
            },
            0,
        );
        assert_eq!(remaining(&version, 0, 0), 1000);
        assert_eq!(remaining(&version, 1, 0), 1);
        assert_eq!(
            remaining(&route, 0, 0),
            800,
            "the request's limits still hold their take"
        );
        admission.settle(
            Outcome {
                usage: Some((50, 50)),
                ..Outcome::default()
            },
            0,
        );
        assert_eq!(remaining(&route, 0, 0), 900);
        assert!(admission.split_off(&version).is_none());
    }

    #[test]
    fn places_in_flight_are_held_until_the_request_ends() {
        let cap = limit("c", "concurrent: 2\n");
        let one: Applicable = [cap.clone()].into_iter().collect();
        let a = admit(one.clone(), tokens(0, 0), 0).unwrap();
        let b = admit(one.clone(), tokens(0, 0), 0).unwrap();
        let refused = admit(one.clone(), tokens(0, 0), 0).unwrap_err();
        assert_eq!(refused.rule, "concurrent");
        a.settle(Outcome::default(), 0);
        let c = admit(one.clone(), tokens(0, 0), 0).unwrap();
        // Dropped without settling (the client went away): the place comes back too.
        drop(b);
        drop(c);
        assert_eq!(remaining(&cap, 0, 0), 2);
    }

    #[test]
    fn racing_requests_never_exceed_a_limit_across_threads() {
        let route = limit("route:m", "requests_per_minute: 500\nconcurrent: 1000\n");
        let admitted = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        let one: Applicable = [route.clone()].into_iter().collect();
                        if let Ok(admission) = admit(one, tokens(0, 0), 0) {
                            admitted.fetch_add(1, Ordering::Relaxed);
                            admission.settle(Outcome::default(), 0);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 500);
        assert_eq!(
            remaining(&route, 1, 0),
            1000,
            "every place in flight came back"
        );
    }
}
