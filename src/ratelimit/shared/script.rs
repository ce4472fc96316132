//! The two Lua scripts of shared mode and their arguments: a decision (check every bucket of
//! a request, reserve in all or none) and a true-up (charge or refund a difference). Both
//! run atomically in Redis and read the time there (`TIME`), so every replica decides on one
//! clock. The GCRA is [`crate::ratelimit::gcra`]'s, in microseconds: a bucket's value is its
//! TAT in microseconds since the Unix epoch on Redis's clock, which stays an exact integer in
//! Lua's doubles (below 2^53); spans are worked out here, exactly, and sent rounded up to a
//! microsecond, so `limit` units never take less than the window.
//!
//! # Decision: `TAKE`
//!
//! - `KEYS[i]`: bucket `i`'s key (all under one hash tag: one slot).
//! - `ARGV[2i-1]`: bucket `i`'s window, µs; `ARGV[2i]`: the span of this request's cost
//!   there (`ceil(cost × window / limit)`), µs.
//! - Returns `{1, used_1, …, used_n}` when every bucket took its cost, `used_i` being how far
//!   bucket `i`'s TAT now runs ahead of now (µs; its standing after the take); or
//!   `{0, i, too_large, wait, used_1, …, used_n}` when bucket `i` (1-based) is the most
//!   constraining refusal (a cost above the whole limit, `too_large = 1`, beats any wait;
//!   else the longest wait, the first on a tie, as `admit::worse` orders them), `wait` its
//!   retry-after in µs, and `used_*` every bucket as it stands (nothing was taken).
//! - A bucket key expires when its TAT passes (at most a millisecond later): an absent key
//!   is a full bucket, so nothing idle stays in Redis.
//!
//! # True-up: `TRUE_UP`
//!
//! - `KEYS[i]`: a bucket; `ARGV[i]`: a signed span in µs: above 0 charged whatever the bucket
//!   holds (it may go into debt), below 0 refunded (never beyond full).
//! - Returns the number of buckets adjusted.

use fred::types::{Key, Value};
use smallvec::SmallVec;

use super::StoreError;
use super::keys::BucketKey;
use crate::ratelimit::gcra::{Rate, Refusal, Standing};

pub const TAKE: &str = r"-- tollgate: GCRA decision over several buckets, all or nothing
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local stored, pending, after = {}, {}, {}
local refused, too_large, wait = 0, 0, 0
for i = 1, n do
  local key = KEYS[i]
  local window = tonumber(ARGV[2 * i - 1])
  local span = tonumber(ARGV[2 * i])
  if stored[key] == nil then
    stored[key] = tonumber(redis.call('GET', key)) or 0
  end
  local tat = pending[key] or stored[key]
  if span > window then
    if refused == 0 or too_large == 0 then
      refused, too_large, wait = i, 1, 0
    end
  else
    local next = math.max(tat, now) + span
    local ahead = next - now
    if ahead > window then
      if refused == 0 or (too_large == 0 and ahead - window > wait) then
        refused, too_large, wait = i, 0, ahead - window
      end
    else
      pending[key] = next
      after[i] = next
    end
  end
end
if refused ~= 0 then
  local out = {0, refused, too_large, wait}
  for i = 1, n do
    out[4 + i] = math.max(stored[KEYS[i]] - now, 0)
  end
  return out
end
for key, tat in pairs(pending) do
  if tat > now then
    redis.call('SET', key, string.format('%.0f', tat),
      'PX', string.format('%.0f', math.floor((tat - now) / 1000) + 1))
  end
end
local out = {1}
for i = 1, n do
  out[1 + i] = after[i] - now
end
return out
";

/// SHA-1 of [`TAKE`], for `EVALSHA` (a unit test checks it).
pub const TAKE_SHA: &str = "e04d4da2d4e8a2508f636c1153b44fac07f490f5";

pub const TRUE_UP: &str = r"-- tollgate: GCRA true-up, charges and refunds
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, #KEYS do
  local key = KEYS[i]
  local delta = tonumber(ARGV[i])
  local tat = tonumber(redis.call('GET', key)) or 0
  local next
  if delta >= 0 then
    next = math.min(math.max(tat, now) + delta, 9000000000000000)
  else
    next = math.max(tat + delta, now)
  end
  if next > now then
    redis.call('SET', key, string.format('%.0f', next),
      'PX', string.format('%.0f', math.floor((next - now) / 1000) + 1))
  else
    redis.call('DEL', key)
  end
end
return #KEYS
";

/// SHA-1 of [`TRUE_UP`].
pub const TRUE_UP_SHA: &str = "8dc1ea4732dad24645bf1571d036ceb533753138";

/// Spans and windows are capped here (about 35 years), so sums stay exact in Lua.
const MAX_US: u64 = 1 << 50;

/// One bucket a request must take from: its key, rate and cost (1 for a request rule, the
/// estimate for a token rule).
#[derive(Clone, Copy, Debug)]
pub struct Bucket<'a> {
    pub key: &'a BucketKey,
    pub rate: Rate,
    pub cost: u64,
}

/// Standings of the buckets of one decision, in the order they were given.
pub type Standings = SmallVec<[Standing; 12]>;

/// What Redis decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every bucket took its cost; each one's standing after the take.
    Admitted { standings: Standings },
    /// Nothing was taken. `index` is the most constraining refusing bucket; `standings` are
    /// every bucket's as it stands (the refusing one included, untouched).
    Refused {
        index: usize,
        refusal: Refusal,
        standings: Standings,
    },
}

/// A true-up of one bucket: the difference between what a request was charged up front and
/// what it used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adjustment {
    pub(super) key: BucketKey,
    /// Above 0 charged, below 0 refunded.
    pub(super) span_us: i64,
}

impl Adjustment {
    /// `units` more than were charged (as `Gcra::force_take`: the bucket may go into debt).
    pub fn charge(key: BucketKey, rate: &Rate, units: u64) -> Adjustment {
        Adjustment {
            key,
            span_us: i64::try_from(span_us(rate, units)).unwrap_or(i64::MAX),
        }
    }

    /// `units` fewer than were charged (as `Gcra::give_back`: never beyond full).
    pub fn refund(key: BucketKey, rate: &Rate, units: u64) -> Adjustment {
        Adjustment {
            key,
            span_us: -i64::try_from(span_us(rate, units)).unwrap_or(i64::MAX),
        }
    }

    /// Changes nothing: not worth a round trip.
    pub fn is_nothing(&self) -> bool {
        self.span_us == 0
    }
}

pub(super) fn window_us(rate: &Rate) -> u64 {
    rate.window_ns.max(1).div_ceil(1000).min(MAX_US)
}

/// The time `units` take from the bucket, as `gcra`'s span (rounded up), then rounded up to
/// a microsecond.
pub(super) fn span_us(rate: &Rate, units: u64) -> u64 {
    let ns =
        (u128::from(units) * u128::from(rate.window_ns)).div_ceil(u128::from(rate.limit.max(1)));
    u64::try_from(ns.div_ceil(1000))
        .unwrap_or(u64::MAX)
        .min(MAX_US)
}

/// A bucket's standing when its TAT runs `used_us` ahead of now, as `gcra` reports it.
pub(super) fn standing(rate: &Rate, used_us: u64) -> Standing {
    let used = used_us.saturating_mul(1000);
    let free = rate.window_ns.saturating_sub(used);
    let units = u128::from(free) * u128::from(rate.limit) / u128::from(rate.window_ns.max(1));
    Standing {
        remaining: u64::try_from(units).unwrap_or(u64::MAX),
        reset_ns: used,
    }
}

fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// `KEYS` and `ARGV` of a [`TAKE`] for `buckets`.
pub(super) fn take_args(buckets: &[Bucket<'_>]) -> (Vec<Key>, Vec<Value>) {
    let keys = buckets.iter().map(|b| Key::from(b.key.bytes())).collect();
    let mut args = Vec::with_capacity(buckets.len() * 2);
    for bucket in buckets {
        args.push(int(window_us(&bucket.rate)));
        args.push(int(span_us(&bucket.rate, bucket.cost)));
    }
    (keys, args)
}

/// `KEYS` and `ARGV` of a [`TRUE_UP`] for `adjustments`.
pub(super) fn true_up_args(adjustments: &[Adjustment]) -> (Vec<Key>, Vec<Value>) {
    adjustments
        .iter()
        .map(|a| (Key::from(a.key.bytes()), Value::Integer(a.span_us)))
        .unzip()
}

fn malformed(reply: &[i64]) -> StoreError {
    StoreError::Protocol(format!("unexpected decision reply {reply:?}"))
}

/// Reads a [`TAKE`] reply for `buckets`.
pub(super) fn decode_take(reply: &[i64], buckets: &[Bucket<'_>]) -> Result<Decision, StoreError> {
    let n = buckets.len();
    let unsigned = |v: &i64| u64::try_from(*v).map_err(|_| malformed(reply));
    let standings = |used: &[i64]| -> Result<Standings, StoreError> {
        used.iter()
            .zip(buckets)
            .map(|(used, bucket)| Ok(standing(&bucket.rate, unsigned(used)?)))
            .collect()
    };
    match reply {
        [1, used @ ..] if used.len() == n => Ok(Decision::Admitted {
            standings: standings(used)?,
        }),
        [0, index, too_large, wait, used @ ..] if used.len() == n => {
            let index = usize::try_from(*index)
                .ok()
                .and_then(|i| i.checked_sub(1))
                .filter(|&i| i < n)
                .ok_or_else(|| malformed(reply))?;
            let refusal = match too_large {
                1 => Refusal::TooLarge,
                0 => Refusal::Wait {
                    retry_after_ns: unsigned(wait)?.saturating_mul(1000),
                },
                _ => return Err(malformed(reply)),
            };
            Ok(Decision::Refused {
                index,
                refusal,
                standings: standings(used)?,
            })
        }
        _ => Err(malformed(reply)),
    }
}

#[cfg(test)]
#[path = "script_tests.rs"]
mod tests;
