//! The JSON report: one document on stdout, schema in docs/REPORT.md.

use super::RunReport;

/// The report as pretty JSON.
#[must_use]
pub fn render(r: &RunReport) -> String {
    let mut s = serde_json::to_string_pretty(r).expect("a report serializes");
    s.push('\n');
    s
}
