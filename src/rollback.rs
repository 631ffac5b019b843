//! `plumb rollback RUN`: placeholder replaced below.
use std::path::Path;

use plumb_engine::saved::SavedPlan;

use crate::Common;

pub(crate) async fn review(_run: &str, _out: Option<&Path>, _common: &Common, _color: bool) -> i32 {
    1
}

pub(crate) async fn apply_saved(_file: &Path, _saved: &SavedPlan, _common: &Common, _color: bool) -> i32 {
    1
}
