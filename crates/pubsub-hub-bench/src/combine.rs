//! Several runs read back from their `--json` output and summed up as one table: for every
//! row (scenario, case, variant, metric), each run's value and ratio, the median value and
//! the median ratio, and the target judged on the median ratio. This is how a target is
//! settled on this noisy machine:
//! `pubsub-hub-bench --combine run1.json --combine run2.json --combine run3.json`.
//!
//! A row missing from a run (a scenario that run skipped, a smaller file-descriptor limit)
//! is combined from the runs that have it, with a dash in the columns of the others.

use std::path::PathBuf;

use pubsub_hub_cli::table::Table;

use crate::error::BenchError;
use crate::median;
use crate::report::{Report, Row, Target, format_value};

/// Reads the reports at `paths` (each the `--json` output of one run).
pub fn read(paths: &[PathBuf]) -> Result<Vec<Report>, BenchError> {
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .map_err(|e| BenchError::new(format!("cannot read {}: {e}", path.display())))?;
            serde_json::from_str(&text).map_err(|e| {
                BenchError::new(format!(
                    "{} is not the --json output of a run: {e}",
                    path.display()
                ))
            })
        })
        .collect()
}

/// One row of the combined table: the same row of every run that has it.
struct Combined<'a> {
    rows: Vec<Option<&'a Row>>,
}

impl Combined<'_> {
    fn present(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().flatten().copied()
    }

    fn first(&self) -> &Row {
        self.present().next().expect("a combined row has a run")
    }

    fn median_value(&self) -> f64 {
        median(&self.present().map(|r| r.value).collect::<Vec<_>>())
    }

    fn median_ratio(&self) -> Option<f64> {
        let ratios: Vec<f64> = self.present().filter_map(|r| r.ratio).collect();
        (!ratios.is_empty()).then(|| median(&ratios))
    }

    fn target(&self) -> Option<Target> {
        self.present().find_map(|r| r.target)
    }
}

/// The rows of `reports` combined, in the order of first appearance.
fn combine(reports: &[Report]) -> Vec<Combined<'_>> {
    let mut combined: Vec<Combined<'_>> = Vec::new();
    let key = |r: &Row| {
        (
            r.scenario.clone(),
            r.case.clone(),
            r.variant.clone(),
            r.metric.clone(),
        )
    };
    for (i, report) in reports.iter().enumerate() {
        for row in &report.rows {
            let k = key(row);
            let index = match combined.iter().position(|c| key(c.first()) == k) {
                Some(index) => index,
                None => {
                    combined.push(Combined {
                        rows: vec![None; reports.len()],
                    });
                    combined.len() - 1
                }
            };
            // The first of equal rows in one run counts (a run repeats none).
            combined[index].rows[i].get_or_insert(row);
        }
    }
    combined
}

/// The combined table as Markdown, with one line per run and the targets' summary.
pub fn render_markdown(reports: &[Report]) -> String {
    let combined = combine(reports);
    let mut out = String::new();
    for (i, report) in reports.iter().enumerate() {
        let m = &report.meta;
        out.push_str(&format!(
            "- run {}: {} ({}), {} CPUs, redis-server {}, load {:.2} at start and {:.2} at end\n",
            i + 1,
            m.date,
            if m.quick { "quick" } else { "full" },
            m.cpus,
            m.redis_version,
            m.load_at_start,
            m.load_at_end
        ));
    }
    out.push('\n');
    let runs = reports.len();
    let mut headers = vec!["SCENARIO", "CASE", "VARIANT", "METRIC"];
    let value_names: Vec<String> = (1..=runs).map(|i| format!("RUN {i}")).collect();
    headers.extend(value_names.iter().map(String::as_str));
    headers.extend(["MEDIAN", "BASELINE", "RATIOS", "MEDIAN RATIO", "TARGET"]);
    let mut table = Table::new(headers);
    // The runs' values and their median; then the median ratio.
    for column in 4..=4 + runs {
        table.right_align(column);
    }
    table.right_align(4 + runs + 3);
    let (mut met, mut judged, mut missed) = (0, 0, Vec::new());
    for c in &combined {
        let first = c.first();
        let metric = &first.metric;
        let mut cells = vec![
            first.scenario.clone(),
            first.case.clone(),
            first.variant.clone(),
            metric.clone(),
        ];
        cells.extend(
            c.rows
                .iter()
                .map(|r| r.map_or_else(|| "-".into(), |r| format_value(metric, r.value))),
        );
        cells.push(format_value(metric, c.median_value()));
        cells.push(first.baseline_label.clone().unwrap_or_default());
        let ratio = c.median_ratio();
        cells.push(if ratio.is_some() {
            c.rows
                .iter()
                .map(|r| {
                    r.and_then(|r| r.ratio)
                        .map_or_else(|| "-".into(), |x| format!("{x:.2}"))
                })
                .collect::<Vec<_>>()
                .join(" / ")
        } else {
            String::new()
        });
        cells.push(ratio.map(|x| format!("{x:.2}x")).unwrap_or_default());
        cells.push(match (c.target(), ratio) {
            (Some(t), Some(r)) => {
                judged += 1;
                if t.is_met(r) {
                    met += 1;
                    format!("{} met", t.label())
                } else {
                    missed.push(format!(
                        "{} {} {}",
                        first.scenario, first.case, first.variant
                    ));
                    format!("{} MISSED", t.label())
                }
            }
            (Some(t), None) => t.label(),
            (None, _) => String::new(),
        });
        table.row(cells);
    }
    out.push_str(&table.render_markdown());
    out.push('\n');
    out.push_str(&format!(
        "- targets on the median ratio of {runs} runs: {met} of {judged} met\n"
    ));
    if !missed.is_empty() {
        out.push_str(&format!("- missed: {}\n", missed.join("; ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rows: Vec<Row>) -> Report {
        let mut r = Report::new(false, "7".into());
        r.rows = rows;
        r
    }

    #[test]
    fn the_median_ratio_decides_the_target() {
        let row = |value: f64| {
            Row::plain("fanout", "10", "hub", "deliveries/s", value)
                .target(Target::AtLeast(1.0))
                .against("raw", 100.0)
        };
        let runs = [
            report(vec![row(90.0)]),
            report(vec![row(120.0)]),
            report(vec![row(105.0), Row::plain("x", "y", "z", "bytes", 1.0)]),
        ];
        let json: Vec<Report> = runs
            .iter()
            .map(|r| serde_json::from_str(&r.to_json_string()).unwrap())
            .collect();
        let text = render_markdown(&json);
        assert!(text.contains("0.90 / 1.20 / 1.05"), "{text}");
        assert!(text.contains("1.05x"), "{text}");
        assert!(text.contains(">= 1.00x met"), "{text}");
        assert!(text.contains("1 of 1 met"), "{text}");
        // A row only the third run has is shown with dashes for the others.
        assert!(text.contains("| - | - | 1 |"), "{text}");
    }
}
