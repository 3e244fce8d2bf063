//! The screening simulator: a sanctions list, review rules and per-customer
//! daily and monthly limits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use super::sim::{SimCore, lock};
use super::{BoxFuture, ConnectorError, Screening, ScreeningRequest, ScreeningVerdict, SimConfig, SimControls};

const NANOS_PER_SEC: u64 = 1_000_000_000;
const SECS_PER_DAY: u64 = 86_400;

/// Limits for one asset, in its minor units. `None` means no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssetLimits {
    /// Orders of at least this amount go to manual review.
    pub review_threshold: Option<u128>,
    /// Most one customer may send per UTC day.
    pub daily_limit: Option<u128>,
    /// Most one customer may send per UTC calendar month.
    pub monthly_limit: Option<u128>,
}

/// The simulator's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreeningRules {
    /// Names that must not send or receive. Matching ignores case and
    /// collapses runs of whitespace.
    pub sanctioned_names: Vec<String>,
    /// Sender countries (ISO 3166-1 alpha-2) whose orders go to review.
    pub high_risk_countries: Vec<String>,
    /// Per-asset limits; assets not listed are unlimited.
    pub limits: BTreeMap<String, AssetLimits>,
}

impl Default for ScreeningRules {
    /// Demo rules: one sanctioned test name, three high-risk countries,
    /// review at 10,000.00 (1,500,000 JPY), and no daily or monthly limits
    /// (so benchmarks with few customers are not throttled).
    fn default() -> Self {
        let review = |minor: u128| AssetLimits { review_threshold: Some(minor), ..AssetLimits::default() };
        let limits = [("USD", review(1_000_000)), ("EUR", review(1_000_000)), ("GBP", review(1_000_000))]
            .into_iter()
            .chain([("JPY", review(1_500_000))])
            .map(|(asset, limits)| (asset.to_string(), limits))
            .collect();
        ScreeningRules {
            sanctioned_names: vec!["Sanctioned Test Person".into()],
            high_risk_countries: vec!["IR".into(), "KP".into(), "MM".into()],
            limits,
        }
    }
}

/// Lowercase, with whitespace runs collapsed to one space and trimmed.
fn normalize_name(name: &str) -> String {
    name.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

/// What one customer has sent in one asset in the current day and month.
#[derive(Default)]
struct Usage {
    day: u64,
    day_total: u128,
    month: u64,
    month_total: u128,
}

impl Usage {
    /// Starts a new period's totals when the day or month has changed.
    fn roll(&mut self, day: u64, month: u64) {
        if self.day != day {
            self.day = day;
            self.day_total = 0;
        }
        if self.month != month {
            self.month = month;
            self.month_total = 0;
        }
    }
}

#[derive(Default)]
struct State {
    /// Verdicts by idempotency key, with the request they answered.
    verdicts: HashMap<String, (ScreeningRequest, ScreeningVerdict)>,
    /// Usage by (customer, asset).
    usage: HashMap<(u128, String), Usage>,
}

/// Simulated screening. See [`ScreeningRules`] for what it checks.
pub struct ScreeningSimulator {
    core: SimCore,
    sanctioned: HashSet<String>,
    high_risk: HashSet<String>,
    limits: BTreeMap<String, AssetLimits>,
    state: Mutex<State>,
}

impl ScreeningSimulator {
    pub fn new(controls: SimControls, config: SimConfig, rules: ScreeningRules) -> Self {
        ScreeningSimulator {
            core: SimCore::new("screening", config, controls),
            sanctioned: rules.sanctioned_names.iter().map(|n| normalize_name(n)).collect(),
            high_risk: rules.high_risk_countries.iter().map(|c| c.trim().to_ascii_uppercase()).collect(),
            limits: rules.limits,
            state: Mutex::new(State::default()),
        }
    }

    /// Returns the verdict recorded for `key`, or judges and records it.
    fn screen_once(&self, key: &str, request: &ScreeningRequest) -> Result<(ScreeningVerdict, bool), ConnectorError> {
        let mut state = lock(&self.state);
        if let Some((first, verdict)) = state.verdicts.get(key) {
            if first != request {
                return Err(ConnectorError::Rejected("idempotency key reused with a different request".into()));
            }
            return Ok((verdict.clone(), false));
        }
        let verdict = self.judge(&mut state, request);
        state.verdicts.insert(key.to_string(), (request.clone(), verdict.clone()));
        Ok((verdict, true))
    }

    /// Applies the rules in order: sanctions, limits, review threshold,
    /// high-risk country. Orders not rejected count toward the limits.
    fn judge(&self, state: &mut State, request: &ScreeningRequest) -> ScreeningVerdict {
        if self.is_sanctioned(&request.sender_name) || self.is_sanctioned(&request.recipient_name) {
            return reject("sanctions_match");
        }
        let limits = self.limits.get(&request.asset).cloned().unwrap_or_default();
        let now_secs = self.core.now_unix_nanos() / NANOS_PER_SEC;
        let (day, month) = (now_secs / SECS_PER_DAY, month_index(now_secs / SECS_PER_DAY));
        let usage = state.usage.entry((request.customer_id, request.asset.clone())).or_default();
        usage.roll(day, month);
        if exceeds(usage.day_total, request.amount, limits.daily_limit) {
            return reject("daily_limit_exceeded");
        }
        if exceeds(usage.month_total, request.amount, limits.monthly_limit) {
            return reject("monthly_limit_exceeded");
        }
        usage.day_total = usage.day_total.saturating_add(request.amount);
        usage.month_total = usage.month_total.saturating_add(request.amount);
        if limits.review_threshold.is_some_and(|threshold| request.amount >= threshold) {
            return review("amount_review");
        }
        if self.high_risk.contains(&request.sender_country.to_ascii_uppercase()) {
            return review("high_risk_country");
        }
        ScreeningVerdict::Pass
    }

    fn is_sanctioned(&self, name: &str) -> bool {
        self.sanctioned.contains(&normalize_name(name))
    }
}

impl Screening for ScreeningSimulator {
    fn screen<'a>(
        &'a self,
        key: &'a str,
        request: &'a ScreeningRequest,
    ) -> BoxFuture<'a, Result<ScreeningVerdict, ConnectorError>> {
        Box::pin(self.core.call("screen", key, move || self.screen_once(key, request)))
    }
}

fn reject(reason: &str) -> ScreeningVerdict {
    ScreeningVerdict::Reject { reason: reason.into() }
}

fn review(reason: &str) -> ScreeningVerdict {
    ScreeningVerdict::Review { reason: reason.into() }
}

/// Whether adding `amount` to `used` would go over `limit`.
fn exceeds(used: u128, amount: u128, limit: Option<u128>) -> bool {
    limit.is_some_and(|limit| used.checked_add(amount).is_none_or(|total| total > limit))
}

/// Months since January 1970 (year * 12 + month - 1, offset by 1970 * 12)
/// for a day count since the Unix epoch, by the proleptic Gregorian
/// calendar in UTC.
fn month_index(days_since_epoch: u64) -> u64 {
    // Count from 0000-03-01 so the leap day ends each 4/100/400-year cycle.
    let z = days_since_epoch + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Month counted from March: 0 = March ... 11 = February.
    let march_month = (5 * day_of_year + 2) / 153;
    let (year, month0) = if march_month < 10 {
        (era * 400 + year_of_era, march_month + 2)
    } else {
        (era * 400 + year_of_era + 1, march_month - 10)
    };
    (year * 12 + month0) - 1970 * 12
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_follow_the_calendar() {
        let day = |secs: u64| secs / SECS_PER_DAY;
        assert_eq!(month_index(0), 0); // 1970-01-01
        assert_eq!(month_index(day(1_706_745_599)), 54 * 12); // 2024-01-31
        assert_eq!(month_index(day(1_706_745_600)), 54 * 12 + 1); // 2024-02-01
        assert_eq!(month_index(day(1_709_164_800)), 54 * 12 + 1); // 2024-02-29
        assert_eq!(month_index(day(1_709_251_200)), 54 * 12 + 2); // 2024-03-01
        assert_eq!(month_index(day(1_735_689_599)), 54 * 12 + 11); // 2024-12-31
        assert_eq!(month_index(day(1_735_689_600)), 55 * 12); // 2025-01-01
    }

    #[test]
    fn names_normalize() {
        assert_eq!(normalize_name("  Ivan \t  PETROV\n"), "ivan petrov");
    }

    #[test]
    fn limit_arithmetic() {
        assert!(!exceeds(0, 100, None));
        assert!(!exceeds(50, 50, Some(100)));
        assert!(exceeds(50, 51, Some(100)));
        assert!(exceeds(u128::MAX, 1, Some(u128::MAX)));
    }
}
