//! One metric's classification. (Being written.)

use super::{Classification, Direction, JudgeConfig, MetricConfig, MetricResult, Samples};

/// Classifies one metric. Until the statistics land, every metric is
/// `nodata` with the reason saying so — never `pass`.
pub fn classify(_config: &JudgeConfig, metric: &MetricConfig, _samples: &Samples) -> MetricResult {
    MetricResult {
        name: metric.name.clone(),
        classification: Classification::Nodata,
        direction: Direction::Increase,
        critical: metric.critical,
        weight: 0.0,
        test: "none".into(),
        canary_count: 0,
        control_count: 0,
        canary_center: None,
        control_center: None,
        effect_size: None,
        shift: None,
        interval: None,
        p_value: None,
        nan_handled: 0,
        outliers_removed: 0,
        reason: "not yet: the statistics are being written".into(),
    }
}
