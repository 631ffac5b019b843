//! The JSON report: one document on stdout, described by the JSON Schema
//! `docs/report.schema.json` (a test validates real reports against it).

use super::RunReport;

/// The report as pretty JSON.
#[must_use]
pub fn render(r: &RunReport) -> String {
    let mut s = serde_json::to_string_pretty(r).expect("a report serializes");
    s.push('\n');
    s
}
