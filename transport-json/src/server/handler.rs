//! What the server does with one request: the [`Handler`] trait, the default [`EchoHandler`],
//! and the RFC 3339 timestamp both use.

use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::decimal::decimal;
use crate::wire::{Message, Resp};

/// Answers requests. The server calls it once per request, concurrently for the requests of
/// one connection, and sends back the [`Resp`] it returns.
///
/// The server sets the response's `Uid` to the request's, whatever the handler put there: the
/// `Uid` routes the response to its caller and is not the handler's to change. A request
/// without a `Uid` never reaches the handler; the server answers it with an `Err`. If the
/// handler panics, the server answers that request with an `Err` and keeps serving.
///
/// Write it as a plain `async fn`:
///
/// ```
/// use transport_json::server::Handler;
/// use transport_json::{Message, Resp};
///
/// struct Upper;
///
/// impl Handler for Upper {
///     async fn handle(&self, req: Message) -> Resp {
///         Resp { uid: req.uid, val: req.val.to_uppercase(), ..Resp::default() }
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, req: Message) -> impl Future<Output = Resp> + Send;
}

/// A shared handler serves as well: keep a clone of the `Arc` to look at its state.
impl<H: Handler> Handler for Arc<H> {
    fn handle(&self, req: Message) -> impl Future<Output = Resp> + Send {
        H::handle(self, req)
    }
}

/// What the echo handler puts before the request's `Val`.
const ECHO_PREFIX: &str = "server: hello, ";

/// The default handler: `Val = "server: hello, " + Val`, `Ts` = the UTC time of the reply in
/// RFC 3339 with nanoseconds (see [`rfc3339_nanos`]), `Uid` copied.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoHandler;

impl Handler for EchoHandler {
    async fn handle(&self, req: Message) -> Resp {
        Resp {
            uid: req.uid,
            val: {
                let mut val = String::with_capacity(ECHO_PREFIX.len() + req.val.len());
                val.push_str(ECHO_PREFIX);
                val.push_str(&req.val);
                val
            },
            ts: rfc3339_nanos(SystemTime::now()),
            err: None,
        }
    }
}

/// A [`Handler`] made from an async closure; see [`handler_fn`].
#[derive(Debug, Clone)]
pub struct HandlerFn<F>(F);

/// Makes a [`Handler`] from a function that returns a future of the response.
///
/// ```
/// use transport_json::server::handler_fn;
/// use transport_json::{Message, Resp};
///
/// let reverse = handler_fn(|req: Message| async move {
///     Resp { uid: req.uid, val: req.val.chars().rev().collect(), ..Resp::default() }
/// });
/// # let _ = reverse;
/// ```
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send,
{
    HandlerFn(f)
}

impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send,
{
    fn handle(&self, req: Message) -> impl Future<Output = Resp> + Send {
        (self.0)(req)
    }
}

/// Formats `t` as UTC RFC 3339 with nine fractional digits: `2024-05-01T12:34:56.123456789Z`.
///
/// Times outside the years 0000–9999, which RFC 3339 cannot write, are clamped to that range.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    // 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
    const MIN_SECS: i64 = -62_167_219_200;
    const MAX_SECS: i64 = 253_402_300_799;
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => (
            i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            after.subsec_nanos(),
        ),
        Err(before) => {
            let before = before.duration();
            let secs = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            match before.subsec_nanos() {
                0 => (-secs, 0),
                n => (-secs - 1, 1_000_000_000 - n),
            }
        }
    };
    let (secs, nanos) = if secs < MIN_SECS {
        (MIN_SECS, 0)
    } else if secs > MAX_SECS {
        (MAX_SECS, 999_999_999)
    } else {
        (secs, nanos)
    };
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let second_of_day = secs.rem_euclid(86_400);
    // Written digit by digit: this runs once per response, and `format!` cost more than the
    // rest of the echo handler together.
    let mut out = String::with_capacity(30);
    push_padded(&mut out, u64::try_from(year).unwrap_or(0), 4);
    out.push('-');
    push_padded(&mut out, u64::from(month), 2);
    out.push('-');
    push_padded(&mut out, u64::from(day), 2);
    out.push('T');
    push_padded(&mut out, (second_of_day / 3600).unsigned_abs(), 2);
    out.push(':');
    push_padded(&mut out, (second_of_day % 3600 / 60).unsigned_abs(), 2);
    out.push(':');
    push_padded(&mut out, (second_of_day % 60).unsigned_abs(), 2);
    out.push('.');
    push_padded(&mut out, u64::from(nanos), 9);
    out.push('Z');
    out
}

/// Appends `n` in decimal, zero-padded on the left to `width` digits (more if it needs them).
fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut buf = [0; 20];
    let digits = decimal(n, &mut buf);
    out.extend(std::iter::repeat_n('0', width.saturating_sub(digits.len())));
    out.push_str(digits);
}

/// The proleptic Gregorian date of the day `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`): shift to eras of 400 years starting on March 1st, where leap days fall
/// at the end of a year, then read year, month and day off the day of the era.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11]
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1; // [1, 31]
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    }; // [1, 12]
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (see the bounds above).
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: i64, nanos: u32) -> String {
        let t = if secs >= 0 {
            UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
                + Duration::from_nanos(nanos.into())
        };
        rfc3339_nanos(t)
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(at(951_782_400, 1), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(
            at(1_709_251_199, 999_999_999),
            "2024-02-29T23:59:59.999999999Z"
        );
        assert_eq!(
            at(1_735_689_599, 123_456_789),
            "2024-12-31T23:59:59.123456789Z"
        );
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn formats_instants_before_the_epoch() {
        assert_eq!(at(-1, 0), "1969-12-31T23:59:59.000000000Z");
        assert_eq!(at(-1, 500_000_000), "1969-12-31T23:59:59.500000000Z");
        assert_eq!(at(-62_167_219_200, 0), "0000-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn clamps_to_four_digit_years() {
        assert_eq!(at(253_402_300_799, 5), "9999-12-31T23:59:59.000000005Z");
        assert_eq!(at(253_402_300_800, 0), "9999-12-31T23:59:59.999999999Z");
        assert_eq!(at(-62_167_219_201, 0), "0000-01-01T00:00:00.000000000Z");
    }

    fn days_in_month(year: i64, month: u32) -> u32 {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    #[test]
    fn every_day_for_a_thousand_years_follows_the_previous_one() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        let mut prev = civil_from_days(-200_000);
        for days in -199_999..200_000 {
            let (y, m, d) = prev;
            let expected = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
            let next = civil_from_days(days);
            assert_eq!(next, expected, "day {days}");
            prev = next;
        }
    }
}
