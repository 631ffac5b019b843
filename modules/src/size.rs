//! Sizes as plans write them, and the arithmetic the storage modules do
//! with them.
//!
//! Units are binary, as LVM's are: `1G` is 1024³ bytes, whether written
//! `1G`, `1g`, `1GB` or `1GiB`. A size is always absolute: `+20G` would grow
//! a volume by 20 GiB on *every* run, so it is refused at plan load with a
//! diagnostic that says why. Logical volumes also take `100%FREE` (all the
//! free space of the group) and `N%VG` (a share of the group's size).

use std::fmt;

use serde::{Deserialize, Deserializer};

/// Binary unit suffixes, smallest first (`K` = 1024¹).
const UNITS: [char; 6] = ['K', 'M', 'G', 'T', 'P', 'E'];

/// A size in bytes, written with a binary unit in plans (`150G`, `1.5T`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

/// The size of a logical volume as a plan asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LvSize {
    /// An absolute size.
    Bytes(u64),
    /// `100%FREE`: every free extent of the group.
    AllFree,
    /// `N%VG`: N percent of the group's extents (1 to 100).
    PercentVg(u32),
}

/// Why a size cannot be read: a message and, where a fix is known, a help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizeError {
    /// What is wrong, naming the text as written.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

impl SizeError {
    fn new(message: String, help: Option<String>) -> Self {
        Self { message, help }
    }
}

impl fmt::Display for SizeError {
    /// The message, then `help: …` on its own line: the engine turns that
    /// line into the diagnostic's help.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.help {
            write!(f, "\nhelp: {h}")?;
        }
        Ok(())
    }
}

const EXPECTED: &str = "a number and a binary unit, like `150G`, `512M` or `1.5T`";

/// Parse an absolute size (`150G`, `1.5T`, `512MiB`, `4096B`).
///
/// # Errors
/// The text is not a size (the error says why and how to write it).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix(['+', '-']) {
        return Err(relative(text, rest));
    }
    if t.contains('%') {
        return Err(SizeError::new(
            format!("invalid size `{text}`: a percentage is not a size here"),
            Some(format!("write {EXPECTED}")),
        ));
    }
    parse_bytes(text, t)
}

/// Parse the size of a logical volume: an absolute size, `100%FREE` or `N%VG`.
///
/// # Errors
/// As [`parse_size`], and for percentages that are out of range or of an
/// unknown base.
pub fn parse_lv_size(text: &str) -> Result<LvSize, SizeError> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix(['+', '-']) {
        return Err(relative(text, rest));
    }
    let Some((num, base)) = t.split_once('%') else {
        return parse_bytes(text, t).map(LvSize::Bytes);
    };
    let bases = ["FREE", "VG"];
    let upper = base.to_ascii_uppercase();
    if !bases.contains(&upper.as_str()) {
        let near = plumb_engine::diag::nearest(&upper, bases);
        let help = match near {
            Some(b) => format!("did you mean `{num}%{b}`?"),
            None => "use `100%FREE` (all free space of the group) or `N%VG` (a share of the group)".into(),
        };
        return Err(SizeError::new(
            format!("invalid size `{text}`: unknown percentage base `{base}`, expected `FREE` or `VG`"),
            Some(help),
        ));
    }
    let pct: u32 = match num.parse() {
        Ok(n) if (1..=100).contains(&n) => n,
        _ => {
            return Err(SizeError::new(
                format!("invalid size `{text}`: the percentage must be a whole number from 1 to 100"),
                None,
            ))
        }
    };
    if upper == "FREE" {
        if pct != 100 {
            return Err(SizeError::new(
                format!("invalid size `{text}`: only `100%FREE` converges"),
                Some(format!(
                    "`{pct}%FREE` would take a share of what is free on every run; use `N%VG` for a share of the group, or an absolute size"
                )),
            ));
        }
        return Ok(LvSize::AllFree);
    }
    Ok(LvSize::PercentVg(pct))
}

fn relative(text: &str, rest: &str) -> SizeError {
    let example = if parse_bytes(rest, rest.trim()).is_ok() {
        format!(", for example `{}` or more", rest.trim())
    } else {
        String::new()
    };
    SizeError::new(
        format!("invalid size `{text}`: relative sizes are not supported"),
        Some(format!(
            "sizes are absolute so that re-runs converge: write the size the volume must have{example}"
        )),
    )
}

fn parse_bytes(text: &str, t: &str) -> Result<u64, SizeError> {
    match bytes_of(t) {
        Ok(n) => Ok(n),
        Err(why) => {
            // Letters that look like digits are the usual typo (`15OG`).
            let fixed: String = t
                .chars()
                .map(|c| match c {
                    'O' | 'o' => '0',
                    'l' | 'I' => '1',
                    c => c,
                })
                .collect();
            let help = if fixed != t && bytes_of(&fixed).is_ok() {
                format!("did you mean `{fixed}`?")
            } else {
                format!("write {EXPECTED}")
            };
            Err(SizeError::new(format!("invalid size `{text}`: {why}"), Some(help)))
        }
    }
}

/// The bytes of `t`, or what is wrong with it.
fn bytes_of(t: &str) -> Result<u64, String> {
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim_start();
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.matches('.').count() > 1 {
        return Err(format!("expected {EXPECTED}"));
    }
    let shift = match unit_shift(unit) {
        Some(s) => s,
        None if unit.is_empty() => return Err("a size needs a unit (`K`, `M`, `G`, `T`, or `B` for bytes)".into()),
        None => {
            return Err(format!(
                "unknown unit `{unit}`, expected one of `K`, `M`, `G`, `T`, `P`, `E` or `B`"
            ))
        }
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let too_large = || "too large".to_string();
    let int: u128 = int.parse().map_err(|_| too_large())?;
    if frac.len() > 18 {
        return Err("too many decimals".into());
    }
    let frac_digits: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| too_large())?
    };
    let scale = 10u128.pow(u32::try_from(frac.len()).expect("at most 18 decimals"));
    let unit_bytes = 1u128 << shift;
    let whole = int.checked_mul(unit_bytes).ok_or_else(too_large)?;
    let part = frac_digits * unit_bytes;
    if part % scale != 0 {
        return Err("not a whole number of bytes".into());
    }
    let total = whole + part / scale;
    if total == 0 {
        return Err("a size must be more than zero".into());
    }
    u64::try_from(total).map_err(|_| too_large())
}

/// The power of two of a unit suffix (`G`, `g`, `GB`, `GiB`, `B`).
fn unit_shift(unit: &str) -> Option<u32> {
    let mut chars = unit.chars();
    let first = chars.next()?;
    let rest: String = chars.collect();
    if first.eq_ignore_ascii_case(&'b') && rest.is_empty() {
        return Some(0);
    }
    let idx = UNITS.iter().position(|u| u.eq_ignore_ascii_case(&first))?;
    match rest.as_str() {
        "" | "B" | "b" | "iB" | "ib" | "IB" => Some(10 * (u32::try_from(idx).expect("six units") + 1)),
        _ => None,
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_size(&s).map(Size).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for LvSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_lv_size(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for LvSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LvSize::Bytes(b) => f.write_str(&human(*b)),
            LvSize::AllFree => f.write_str("100%FREE"),
            LvSize::PercentVg(p) => write!(f, "{p}%VG"),
        }
    }
}

pub use plumb_engine::units::human;

/// The shortest exact plan spelling of `bytes` (`3G`, `1536M`, `1000B`):
/// what LVM is given, so that no rounding happens on the way.
#[must_use]
pub fn exact(bytes: u64) -> String {
    for (i, u) in UNITS.iter().enumerate().rev() {
        let shift = 10 * (u32::try_from(i).expect("six units") + 1);
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{u}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// How many extents of `extent` bytes hold `bytes` (rounded up, as LVM does).
#[must_use]
pub fn extents_for(bytes: u64, extent: u64) -> u64 {
    bytes.div_ceil(extent.max(1))
}

/// Whether two sizes are the same to within one extent: the tolerance that
/// keeps a volume whose size was rounded by LVM from being "changed" forever.
#[must_use]
pub fn within_one_extent(a: u64, b: u64, extent: u64) -> bool {
    a.abs_diff(b) < extent.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn binary_units_in_every_spelling() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5T"), Ok(3 << 39));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("10 G"), Ok(10 << 30));
    }

    #[test]
    fn typos_get_a_suggestion() {
        let e = parse_size("15OG").unwrap_err();
        assert_eq!(
            e.message,
            "invalid size `15OG`: unknown unit `OG`, expected one of `K`, `M`, `G`, `T`, `P`, `E` or `B`"
        );
        assert_eq!(e.help.as_deref(), Some("did you mean `150G`?"));
        let e = parse_lv_size("100%FREEE").unwrap_err();
        assert!(e.message.contains("unknown percentage base `FREEE`"), "{}", e.message);
        assert_eq!(e.help.as_deref(), Some("did you mean `100%FREE`?"));
    }

    #[test]
    fn relative_sizes_are_refused_with_the_reason() {
        for t in ["+20G", "-5G"] {
            let e = parse_lv_size(t).unwrap_err();
            assert!(e.message.contains("relative sizes are not supported"), "{}", e.message);
            assert!(e
                .help
                .unwrap()
                .starts_with("sizes are absolute so that re-runs converge"));
        }
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_lv_size("100%FREE"), Ok(LvSize::AllFree));
        assert_eq!(parse_lv_size("100%free"), Ok(LvSize::AllFree));
        assert_eq!(parse_lv_size("80%VG"), Ok(LvSize::PercentVg(80)));
        assert!(parse_lv_size("50%FREE")
            .unwrap_err()
            .message
            .contains("only `100%FREE` converges"));
        assert!(parse_lv_size("150%VG").is_err());
        assert!(parse_lv_size("0%VG").is_err());
        assert!(parse_size("100%FREE").is_err());
    }

    #[test]
    fn nonsense_is_refused() {
        for t in [
            "",
            "G",
            "0G",
            "1.G",
            ".5G",
            "1..5G",
            "100",
            "1X",
            "0.1K",
            "99999999999E",
            "1 2G",
        ] {
            assert!(parse_size(t).is_err(), "{t}");
        }
        assert!(parse_size("100").unwrap_err().message.contains("needs a unit"));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(400 << 30), "400 GiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(1000), "1000 B");
        assert_eq!(human((1 << 30) + (1 << 20) * 10), "1.01 GiB");
    }

    proptest! {
        #[test]
        fn a_number_and_unit_is_that_many_binary_units(n in 1u64..(1 << 20), u in 0usize..4) {
            let unit = ['K', 'M', 'G', 'T'][u];
            let want = n << (10 * (u + 1));
            prop_assert_eq!(parse_size(&format!("{n}{unit}")), Ok(want));
            prop_assert_eq!(parse_size(&format!("{n}{unit}iB")), Ok(want));
            prop_assert_eq!(parse_size(&format!("{n}{}", unit.to_ascii_lowercase())), Ok(want));
        }

        #[test]
        fn the_exact_spelling_reads_back(b in 1u64..u64::MAX) {
            prop_assert_eq!(parse_size(&exact(b)), Ok(b));
        }

        #[test]
        fn relative_sizes_are_always_refused(n in 1u64..100_000, u in 0usize..4, sign in prop::bool::ANY) {
            let t = format!("{}{n}{}", if sign { '+' } else { '-' }, ['K', 'M', 'G', 'T'][u]);
            let e = parse_lv_size(&t).unwrap_err();
            prop_assert!(e.help.unwrap().contains("absolute"));
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,12}") {
            let _ = parse_size(&s);
            let _ = parse_lv_size(&s);
        }

        #[test]
        fn extents_cover_the_size_by_less_than_one_extent(b in 1u64..(1 << 50), e in 20u32..27) {
            let ext = 1u64 << e;
            let n = extents_for(b, ext);
            prop_assert!(n * ext >= b);
            prop_assert!(n * ext - b < ext);
            prop_assert!(within_one_extent(n * ext, b, ext));
        }

        #[test]
        fn within_one_extent_is_symmetric_and_tight(a in 0u64..(1 << 40), d in 0u64..(1 << 24), e in 20u32..24) {
            let ext = 1u64 << e;
            prop_assert_eq!(within_one_extent(a, a + d, ext), within_one_extent(a + d, a, ext));
            prop_assert_eq!(within_one_extent(a, a + d, ext), d < ext);
        }

        #[test]
        fn human_is_close_to_the_value(b in 1u64..(1 << 60)) {
            let h = human(b);
            let (num, unit) = h.split_once(' ').unwrap();
            let shift = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"].iter().position(|u| *u == unit).unwrap();
            let v: f64 = num.parse().unwrap();
            #[allow(clippy::cast_precision_loss)]
            let back = v * (1u64 << (10 * shift)) as f64;
            #[allow(clippy::cast_precision_loss)]
            let err = (back - b as f64).abs() / b as f64;
            prop_assert!(err < 0.01, "{} for {}", h, b);
        }
    }
}
