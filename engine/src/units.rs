//! Figures for people: sizes, durations and rates.

use std::time::Duration;

/// A size for people: the largest binary unit that keeps it readable, with
/// up to two decimals (`400 GiB`, `1.5 GiB`, `4 MiB`, `1000 B`).
#[must_use]
pub fn human(bytes: u64) -> String {
    let names = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    while unit + 1 < names.len() && bytes >= 1u64 << (10 * (unit + 1)) {
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes} B");
    }
    let div = 1u128 << (10 * unit);
    let hundredths = (u128::from(bytes) * 100 + div / 2) / div;
    let (whole, frac) = (hundredths / 100, hundredths % 100);
    match frac {
        0 => format!("{whole} {}", names[unit]),
        f if f % 10 == 0 => format!("{whole}.{} {}", f / 10, names[unit]),
        f => format!("{whole}.{f:02} {}", names[unit]),
    }
}

/// A duration for people, to the second (`42 s`, `3 min 05 s`, `1 h 02 min`).
#[must_use]
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

/// A duration given in seconds, for people: under a minute with one
/// decimal (`0.4 s`, `12.5 s`), else as [`duration`].
#[must_use]
pub fn duration_f(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        duration(Duration::from_secs_f64(secs.max(0.0)))
    }
}

/// A rate for people: `bytes` in `d` (`28.5 MiB/s`); `None` under a second.
#[must_use]
pub fn rate(bytes: u64, d: Duration) -> Option<String> {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    (ms >= 1000).then(|| format!("{}/s", human(bytes.saturating_mul(1000) / ms)))
}

/// `n` and the noun for it: `1 entry`, `3 entries`.
#[must_use]
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rates_read_as_people_say_them() {
        assert_eq!(duration(Duration::from_secs(42)), "42 s");
        assert_eq!(duration(Duration::from_secs(185)), "3 min 05 s");
        assert_eq!(duration(Duration::from_secs(3720)), "1 h 02 min");
        assert_eq!(duration_f(0.42), "0.4 s");
        assert_eq!(duration_f(185.2), "3 min 05 s");
        assert_eq!(rate(3 << 20, Duration::from_secs(2)).as_deref(), Some("1.5 MiB/s"));
        assert_eq!(rate(1, Duration::from_millis(10)), None);
    }
}
