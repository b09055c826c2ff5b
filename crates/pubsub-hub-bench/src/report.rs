//! Result rows, the targets, and the three renderings (text, Markdown, JSON).

use serde::{Deserialize, Serialize};

use crate::progress::thousands;
use pubsub_hub_cli::table::Table;

/// A target on a row's ratio (`value / baseline`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "ratio", rename_all = "snake_case")]
pub enum Target {
    /// Met when the ratio is at least this.
    AtLeast(f64),
    /// Met when the ratio is at most this.
    AtMost(f64),
}

impl Target {
    /// Whether `ratio` meets the target.
    pub fn is_met(self, ratio: f64) -> bool {
        match self {
            Target::AtLeast(t) => ratio >= t,
            Target::AtMost(t) => ratio <= t,
        }
    }

    /// `>= 1.00x` or `<= 1.10x`.
    pub fn label(self) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {t:.2}x"),
            Target::AtMost(t) => format!("<= {t:.2}x"),
        }
    }
}

/// One measured number, with the baseline it is compared against.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// `publish`, `fanout`, `latency`, `ceiling`, `memory`, `dashboard`.
    pub scenario: String,
    /// What was varied: `16 in flight`, `100 subscribers`.
    pub case: String,
    /// What was measured: `hub (dedicated)`, `hub (shared x4)`, `redis-benchmark`.
    pub variant: String,
    /// The quantity and its unit: `msg/s`, `p99 us`, `RSS KiB/sub`.
    pub metric: String,
    /// The measured value.
    pub value: f64,
    /// What the value is compared with (`raw redis-rs`, `3 subscribers`), if anything.
    pub baseline_label: Option<String>,
    /// The baseline's value.
    pub baseline: Option<f64>,
    /// `value / baseline`.
    pub ratio: Option<f64>,
    /// The target on the ratio, where there is one.
    pub target: Option<Target>,
    /// Whether the target was met.
    pub met: Option<bool>,
    /// Anything the reader needs to interpret the row (drops, bounds).
    pub note: Option<String>,
}

impl Row {
    /// A row without a baseline.
    pub fn plain(scenario: &str, case: &str, variant: &str, metric: &str, value: f64) -> Row {
        Row {
            scenario: scenario.into(),
            case: case.into(),
            variant: variant.into(),
            metric: metric.into(),
            value,
            baseline_label: None,
            baseline: None,
            ratio: None,
            target: None,
            met: None,
            note: None,
        }
    }

    /// Adds a baseline and computes the ratio.
    pub fn against(mut self, label: &str, baseline: f64) -> Row {
        self.baseline_label = Some(label.into());
        self.baseline = Some(baseline);
        self.ratio = (baseline > 0.0).then(|| self.value / baseline);
        self.met = match (self.target, self.ratio) {
            (Some(t), Some(r)) => Some(t.is_met(r)),
            _ => None,
        };
        self
    }

    /// Sets the target (and whether it is met, if there is a ratio).
    pub fn target(mut self, target: Target) -> Row {
        self.target = Some(target);
        self.met = self.ratio.map(|r| target.is_met(r));
        self
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Row {
        let note = note.into();
        self.note = Some(match self.note.take() {
            Some(old) => format!("{old}; {note}"),
            None => note,
        });
        self
    }
}

/// One latency distribution, for the chart and the JSON output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatencyCurve {
    /// Subscribers on the channel.
    pub subscribers: usize,
    /// `raw redis-rs`, `hub (dedicated)`, `hub (shared x4)`.
    pub variant: String,
    /// `(quantile, microseconds)` pairs, quantile from 0.5 to 1.0 (the maximum).
    pub points: Vec<(f64, f64)>,
    /// Deliveries recorded.
    pub samples: u64,
}

/// What the machine and the run were.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    /// UTC date and time of the run.
    pub date: String,
    /// The command line.
    pub command: String,
    /// `--quick`.
    pub quick: bool,
    /// Logical CPUs.
    pub cpus: usize,
    /// `/proc/cpuinfo`'s model name.
    pub cpu_model: String,
    /// The private redis-server's version.
    pub redis_version: String,
    /// `/proc/loadavg`'s 1-minute load at the start of the run: above the CPU count, other
    /// processes were competing for the machine.
    pub load_at_start: f64,
    /// The same at the end (set by [`Report::finish`]).
    pub load_at_end: f64,
}

/// Every row of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// The machine and the run.
    pub meta: Meta,
    /// Results, in the order measured.
    pub rows: Vec<Row>,
    /// Latency distributions.
    pub latency_curves: Vec<LatencyCurve>,
    /// Remarks about the run as a whole.
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report stamped with the machine and the time.
    pub fn new(quick: bool, redis_version: String) -> Report {
        Report {
            meta: Meta {
                date: utc_now(),
                command: std::env::args()
                    .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
                    .collect::<Vec<_>>()
                    .join(" "),
                quick,
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
                cpu_model: cpu_model(),
                redis_version,
                load_at_start: load_average(),
                load_at_end: 0.0,
            },
            rows: Vec::new(),
            latency_curves: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Stamps the end of the run.
    pub fn finish(&mut self) {
        self.meta.load_at_end = load_average();
    }

    /// Adds a row.
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// The value of the first row matching scenario, case and variant.
    pub fn value(&self, scenario: &str, case: &str, variant: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.case == case && r.variant == variant)
            .map(|r| r.value)
    }

    fn table(&self) -> Table {
        let mut t = Table::new([
            "SCENARIO", "CASE", "VARIANT", "METRIC", "VALUE", "BASELINE", "RATIO", "TARGET", "NOTE",
        ]);
        t.right_align(4);
        t.right_align(5);
        t.right_align(6);
        for r in &self.rows {
            let baseline = match (&r.baseline_label, r.baseline) {
                (Some(l), Some(b)) => format!("{} ({l})", format_value(&r.metric, b)),
                _ => String::new(),
            };
            let ratio = r.ratio.map(|x| format!("{x:.2}x")).unwrap_or_default();
            let target = match (r.target, r.met) {
                (Some(t), Some(true)) => format!("{} met", t.label()),
                (Some(t), Some(false)) => format!("{} MISSED", t.label()),
                (Some(t), None) => t.label(),
                (None, _) => String::new(),
            };
            t.row([
                r.scenario.clone(),
                r.case.clone(),
                r.variant.clone(),
                r.metric.clone(),
                format_value(&r.metric, r.value),
                baseline,
                ratio,
                target,
                r.note.clone().unwrap_or_default(),
            ]);
        }
        t
    }

    fn header(&self) -> String {
        let m = &self.meta;
        format!(
            "pubsub-hub-bench ({}) {} | {} CPUs, {} | redis-server {} | load {:.2} at start, {:.2} at end\n",
            if m.quick { "quick" } else { "full" },
            m.date,
            m.cpus,
            m.cpu_model,
            m.redis_version,
            m.load_at_start,
            m.load_at_end
        )
    }

    fn summary(&self) -> Vec<String> {
        let with_target: Vec<&Row> = self.rows.iter().filter(|r| r.met.is_some()).collect();
        let missed: Vec<String> = with_target
            .iter()
            .filter(|r| r.met == Some(false))
            .map(|r| format!("{} {} {} {}", r.scenario, r.case, r.variant, r.metric))
            .collect();
        let mut lines = vec![format!(
            "targets: {} of {} met",
            with_target.len() - missed.len(),
            with_target.len()
        )];
        if !missed.is_empty() {
            lines.push(format!("missed: {}", missed.join("; ")));
        }
        lines.extend(self.notes.iter().cloned());
        lines
    }

    /// The aligned text table with a header line and a summary.
    pub fn render_text(&self) -> String {
        let mut out = self.header();
        out.push('\n');
        out.push_str(&self.table().render());
        out.push('\n');
        for line in self.summary() {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// A Markdown table with the header and summary as text.
    pub fn render_markdown(&self) -> String {
        let mut out = self.header();
        out.push('\n');
        out.push_str(&self.table().render_markdown());
        out.push('\n');
        for line in self.summary() {
            out.push_str(&format!("- {line}\n"));
        }
        out
    }

    /// The whole report as pretty JSON.
    pub fn to_json_string(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }
}

/// A value formatted for its metric: rates with thousands separators, microseconds with
/// one decimal below 100, sizes with one decimal.
pub fn format_value(metric: &str, v: f64) -> String {
    if metric.ends_with("/s") {
        thousands(v)
    } else if metric.ends_with(" us") || metric.ends_with("KiB/sub") {
        if v < 100.0 {
            format!("{v:.1}")
        } else {
            thousands(v)
        }
    } else if metric.ends_with(" s") || metric == "s" {
        format!("{v:.2}")
    } else if v.fract() == 0.0 {
        thousands(v)
    } else {
        format!("{v:.2}")
    }
}

/// The 1-minute load average (0 if unknown).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }

    #[test]
    fn ratios_and_targets() {
        let r = Row::plain("publish", "1 in flight", "hub", "msg/s", 90.0)
            .target(Target::AtLeast(0.95))
            .against("raw redis-rs", 100.0);
        assert_eq!(r.ratio, Some(0.9));
        assert_eq!(r.met, Some(false));
        let r = Row::plain("latency", "1 subscriber", "hub", "p99 us", 105.0)
            .against("raw redis-rs", 100.0)
            .target(Target::AtMost(1.1));
        assert_eq!(r.met, Some(true));
    }

    #[test]
    fn formats() {
        assert_eq!(format_value("msg/s", 312_345.6), "312,346");
        assert_eq!(format_value("p99 us", 42.25), "42.2");
        assert_eq!(format_value("p99 us", 1234.0), "1,234");
    }
}
