//! The one retry policy of r2's HTTP clients: which failures are tried again, how long to wait
//! (exponential backoff with jitter, or the server's `Retry-After`), and the loop that does it.
//!
//! The rule: HTTP 5xx answers and connection errors (refused, reset, DNS, TLS, a body cut off) are
//! retried; timeouts and 4xx answers are not (a slow server stays slow, a rejected request is
//! rejected again). HTTP 429 is retried, honouring `Retry-After`, by clients of servers that rate
//! limit ([`RateLimits::Honour`]); for the others it is a 4xx like any other ([`RateLimits::Ignore`]).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// A boxed future that can cross threads: what one attempt of [`RetryPolicy::run`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a [`RetryPolicy`] treats HTTP 429 and `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimits {
    /// HTTP 429 is retried like a 5xx, and the wait a `Retry-After` header asks for (on a 429 or
    /// a 5xx) replaces the computed pause; a server asking for more than `max_wait` ends the loop
    /// at once ([`StopReason::WaitTooLong`]).
    Honour { max_wait: Duration },
    /// HTTP 429 is final like any other 4xx, and `Retry-After` is ignored.
    Ignore,
}

/// When and how often a request is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first (0: never retry).
    pub max_retries: u32,
    /// The pause before the first retry; doubled for each further one, jittered by ±25%.
    pub initial_backoff: Duration,
    /// The longest computed pause (a `Retry-After` may ask for more, up to its own limit).
    pub max_backoff: Duration,
    /// HTTP 429 and `Retry-After`.
    pub rate_limits: RateLimits,
}

/// Why one attempt failed, and whether trying again may help.
#[derive(Debug, Clone)]
pub enum Failure<E> {
    /// Trying again cannot help: return the error.
    Final(E),
    /// Trying again may help; `retry_after` is the wait the server asked for, if it did.
    Retryable {
        error: E,
        retry_after: Option<Duration>,
    },
}

impl<E> Failure<E> {
    /// A retryable failure without a wait asked for.
    pub fn retryable(error: E) -> Self {
        Failure::Retryable {
            error,
            retry_after: None,
        }
    }

    /// The error, whatever the failure.
    pub fn into_error(self) -> E {
        match self {
            Failure::Final(error) | Failure::Retryable { error, .. } => error,
        }
    }

    /// The failure of a request that got no (whole) answer: a timeout is final (`timeout`), any
    /// other error of the connection is retryable (`other`).
    pub fn of_transport(
        e: &reqwest::Error,
        timeout: impl FnOnce() -> E,
        other: impl FnOnce() -> E,
    ) -> Self {
        if e.is_timeout() {
            Failure::Final(timeout())
        } else {
            Failure::retryable(other())
        }
    }
}

/// Why [`RetryPolicy::run`] stopped without a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The last attempt's failure was final.
    Final,
    /// Every retry was used up.
    OutOfRetries,
    /// The server asked to wait longer than [`RateLimits::Honour`]'s `max_wait`, `limit`.
    WaitTooLong { limit: Duration },
}

/// The error [`RetryPolicy::run`] ends with: the last attempt's, how many attempts were made, and
/// why no more were.
#[derive(Debug)]
pub struct Stopped<E> {
    pub error: E,
    /// Attempts made, the failed last one included (1 when the first failed for good).
    pub attempts: u32,
    pub reason: StopReason,
}

impl RetryPolicy {
    /// The longest computed pause r2's clients use by default.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(20);

    /// Whether an answer with `status` is worth another attempt: 5xx always, 429 when rate
    /// limits are honoured.
    pub fn retries_status(&self, status: u16) -> bool {
        (500..=599).contains(&status)
            || (status == 429 && matches!(self.rate_limits, RateLimits::Honour { .. }))
    }

    /// `error` as the failure of an answer with `status`: retryable when
    /// [`RetryPolicy::retries_status`] says so (keeping `retry_after`), final otherwise.
    pub fn status_failure<E>(
        &self,
        status: u16,
        retry_after: Option<Duration>,
        error: E,
    ) -> Failure<E> {
        if self.retries_status(status) {
            Failure::Retryable { error, retry_after }
        } else {
            Failure::Final(error)
        }
    }

    /// The wait the `Retry-After` header of an answer asks for, when this policy honours it.
    pub fn retry_after(&self, headers: &HeaderMap) -> Option<Duration> {
        match self.rate_limits {
            RateLimits::Honour { .. } => headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
            RateLimits::Ignore => None,
        }
    }

    /// The pause before retry number `retry` (0 for the first): `initial_backoff · 2^retry`,
    /// jittered by up to ±25%, at most `max_backoff`.
    pub fn backoff(&self, retry: u32) -> Duration {
        backoff(self.initial_backoff, self.max_backoff, retry)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries are used up, pausing
    /// before each retry ([`RetryPolicy::backoff`], or the server's `Retry-After` when honoured).
    ///
    /// `attempt` gets `ctx` (what it needs to borrow, mutably if it must: a tuple of references,
    /// a callback) and the attempt's number (1 for the first). Retries are logged at `debug`.
    pub async fn run<C, T, E, F>(&self, ctx: &mut C, mut attempt: F) -> Result<T, Stopped<E>>
    where
        C: ?Sized,
        E: fmt::Display,
        F: for<'c> FnMut(&'c mut C, u32) -> BoxFuture<'c, Result<T, Failure<E>>>,
    {
        let mut number = 1;
        loop {
            let (error, retry_after) = match attempt(ctx, number).await {
                Ok(value) => return Ok(value),
                Err(Failure::Final(error)) => {
                    return Err(Stopped {
                        error,
                        attempts: number,
                        reason: StopReason::Final,
                    })
                }
                Err(Failure::Retryable { error, retry_after }) => (error, retry_after),
            };
            let retry_after = match self.rate_limits {
                RateLimits::Honour { max_wait } => {
                    if retry_after.is_some_and(|wait| wait > max_wait) {
                        return Err(Stopped {
                            error,
                            attempts: number,
                            reason: StopReason::WaitTooLong { limit: max_wait },
                        });
                    }
                    retry_after
                }
                RateLimits::Ignore => None,
            };
            if number > self.max_retries {
                return Err(Stopped {
                    error,
                    attempts: number,
                    reason: StopReason::OutOfRetries,
                });
            }
            let wait = retry_after.unwrap_or_else(|| self.backoff(number - 1));
            tracing::debug!(
                attempt = number,
                wait_ms = wait.as_millis() as u64,
                "trying again: {error}"
            );
            drop(error);
            tokio::time::sleep(wait).await;
            number += 1;
        }
    }
}

/// The pause before retry number `retry` (0 for the first): `initial · 2^retry`, jittered by up to
/// ±25%, at most `max`.
pub fn backoff(initial: Duration, max: Duration, retry: u32) -> Duration {
    let base = initial
        .saturating_mul(2u32.saturating_pow(retry.min(31)))
        .min(max);
    base.mul_f64(jitter_factor()).min(max)
}

/// A pseudo-random factor in [0.75, 1.25) from std's randomly keyed hasher.
fn jitter_factor() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
    0.75 + 0.5 * unit
}

/// The wait a `Retry-After` header asks for: delay-seconds (`120`, also `1.5`), or an HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`, a wait until then, zero if it has passed). `None` if the
/// value is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::try_from_secs_f64(seconds).ok())
            .flatten();
    }
    let at = parse_http_date(value)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Seconds since the Unix epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form
/// HTTP requires senders to use.
fn parse_http_date(value: &str) -> Option<u64> {
    let (_weekday, rest) = value.split_once(", ")?;
    let mut parts = rest.split_ascii_whitespace();
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':');
    let hour: u64 = clock.next()?.parse().ok()?;
    let minute: u64 = clock.next()?.parse().ok()?;
    let second: u64 = clock.next()?.parse().ok()?;
    if parts.next()? != "GMT"
        || parts.next().is_some()
        || clock.next().is_some()
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u64, day: u64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year as i64;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_BACKOFF: Duration = RetryPolicy::DEFAULT_MAX_BACKOFF;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn policy(max_retries: u32, rate_limits: RateLimits) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            initial_backoff: Duration::from_millis(1),
            max_backoff: MAX_BACKOFF,
            rate_limits,
        }
    }

    const HONOUR: RateLimits = RateLimits::Honour {
        max_wait: Duration::from_secs(60),
    };

    #[test]
    fn retry_after_in_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn retry_after_as_http_date() {
        // 1994-11-06T08:49:37Z, the example of RFC 9110.
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse_http_date(date), Some(784_111_777));
        assert_eq!(
            parse_retry_after(date, at(784_111_777 - 30)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(date, at(784_111_777 + 30)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_http_date("Thu, 29 Feb 2024 23:59:59 GMT"),
            Some(1_709_251_199)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
        assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let initial = Duration::from_millis(500);
        for retry in 0..4 {
            let nominal = initial * 2u32.pow(retry);
            for _ in 0..50 {
                let wait = backoff(initial, MAX_BACKOFF, retry);
                assert!(wait >= nominal.mul_f64(0.75), "{retry}: {wait:?}");
                assert!(wait <= nominal.mul_f64(1.25), "{retry}: {wait:?}");
            }
        }
        assert!(backoff(initial, MAX_BACKOFF, 10) <= MAX_BACKOFF);
        assert!(backoff(initial, MAX_BACKOFF, u32::MAX) <= MAX_BACKOFF);
        assert!(backoff(Duration::MAX, MAX_BACKOFF, 3) <= MAX_BACKOFF);
        assert_eq!(backoff(Duration::ZERO, MAX_BACKOFF, 2), Duration::ZERO);
        let small = Duration::from_secs(5);
        assert!(backoff(Duration::from_secs(4), small, 1) <= small);
    }

    #[test]
    fn jitter_varies() {
        let factors: Vec<f64> = (0..20).map(|_| jitter_factor()).collect();
        assert!(factors.iter().all(|f| (0.75..1.25).contains(f)));
        assert!(factors.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn the_rule_of_what_is_retried() {
        let honour = policy(3, HONOUR);
        let ignore = policy(3, RateLimits::Ignore);
        for status in [500, 502, 503, 599] {
            assert!(honour.retries_status(status) && ignore.retries_status(status));
        }
        assert!(honour.retries_status(429));
        assert!(!ignore.retries_status(429));
        for status in [200, 400, 401, 402, 403, 404, 408, 422, 499, 600] {
            assert!(!honour.retries_status(status) && !ignore.retries_status(status));
        }
        assert!(matches!(
            honour.status_failure(503, Some(Duration::from_secs(2)), ()),
            Failure::Retryable {
                retry_after: Some(_),
                ..
            }
        ));
        assert!(matches!(
            ignore.status_failure(429, None, ()),
            Failure::Final(())
        ));
    }

    #[test]
    fn retry_after_is_read_only_when_honoured() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            policy(1, HONOUR).retry_after(&headers),
            Some(Duration::from_secs(7))
        );
        assert_eq!(policy(1, RateLimits::Ignore).retry_after(&headers), None);
        assert_eq!(policy(1, HONOUR).retry_after(&HeaderMap::new()), None);
    }

    /// Runs a policy over scripted failures; returns the outcome and the attempt numbers seen.
    async fn script(
        policy: RetryPolicy,
        failures: Vec<Failure<String>>,
    ) -> (Result<u32, Stopped<String>>, Vec<u32>) {
        let mut state = (failures.into_iter(), Vec::new());
        let outcome = policy
            .run(&mut state, |(failures, seen), number| {
                seen.push(number);
                let next = failures.next();
                Box::pin(async move {
                    match next {
                        Some(failure) => Err(failure),
                        None => Ok(number),
                    }
                })
            })
            .await;
        (outcome, state.1)
    }

    #[tokio::test]
    async fn the_loop_retries_until_success_or_gives_up() {
        let retryable = || Failure::retryable("boom".to_owned());
        let (outcome, seen) = script(policy(3, HONOUR), vec![retryable(), retryable()]).await;
        assert_eq!(outcome.unwrap(), 3);
        assert_eq!(seen, [1, 2, 3]);

        let (outcome, seen) = script(policy(2, HONOUR), vec![retryable(); 5]).await;
        let stopped = outcome.unwrap_err();
        assert_eq!(
            (stopped.attempts, stopped.reason),
            (3, StopReason::OutOfRetries)
        );
        assert_eq!(seen, [1, 2, 3]);

        let (outcome, seen) = script(
            policy(3, HONOUR),
            vec![retryable(), Failure::Final("no".to_owned())],
        )
        .await;
        let stopped = outcome.unwrap_err();
        assert_eq!(stopped.error, "no");
        assert_eq!((stopped.attempts, stopped.reason), (2, StopReason::Final));
        assert_eq!(seen, [1, 2]);
    }

    #[tokio::test]
    async fn a_long_retry_after_ends_the_loop_unless_ignored() {
        let wait = |secs| Failure::Retryable {
            error: "slow down".to_owned(),
            retry_after: Some(Duration::from_secs(secs)),
        };
        let (outcome, seen) = script(policy(3, HONOUR), vec![wait(3600)]).await;
        let stopped = outcome.unwrap_err();
        assert_eq!(
            stopped.reason,
            StopReason::WaitTooLong {
                limit: Duration::from_secs(60)
            }
        );
        assert_eq!(seen, [1]);

        // Ignored, the computed (1 ms) pause is used instead of an hour.
        let started = std::time::Instant::now();
        let (outcome, _) = script(policy(3, RateLimits::Ignore), vec![wait(3600)]).await;
        assert_eq!(outcome.unwrap(), 2);
        assert!(started.elapsed() < Duration::from_secs(5));

        // A short Retry-After replaces the computed pause.
        let started = std::time::Instant::now();
        let short = Failure::Retryable {
            error: String::new(),
            retry_after: Some(Duration::from_millis(200)),
        };
        let (outcome, _) = script(policy(3, HONOUR), vec![short]).await;
        assert_eq!(outcome.unwrap(), 2);
        assert!(started.elapsed() >= Duration::from_millis(190));
    }
}
