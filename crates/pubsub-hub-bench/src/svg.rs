//! The latency chart: one panel per subscriber count, latency (log scale) against
//! percentile (log scale of 1 / (1 - q), so 90%, 99%, 99.9% are evenly spaced), one line
//! per variant. Hand-written SVG: no plotting dependency, and the file diffs as text.

use std::fmt::Write;

use crate::report::LatencyCurve;

const PANEL_W: f64 = 320.0;
const PANEL_H: f64 = 260.0;
const MARGIN_L: f64 = 58.0;
const MARGIN_R: f64 = 14.0;
const MARGIN_T: f64 = 64.0;
const MARGIN_B: f64 = 46.0;

/// Colour per variant label.
fn colour(variant: &str) -> &'static str {
    match variant {
        "raw redis-rs" => "#4d4d4d",
        "hub (dedicated)" => "#1f77b4",
        "hub (shared x4)" => "#e6750a",
        "fred" => "#9467bd",
        _ => "#2ca02c",
    }
}

/// x position of quantile `q` in "nines": 0.9 → 1, 0.99 → 2; the maximum is drawn at 5.
fn nines(q: f64) -> f64 {
    if q >= 1.0 {
        5.0
    } else {
        (-(1.0 - q).log10()).min(5.0)
    }
}

/// The SVG document for `curves` (empty panels if there are none).
pub fn latency_chart(curves: &[LatencyCurve]) -> String {
    let mut counts: Vec<usize> = curves.iter().map(|c| c.subscribers).collect();
    counts.sort_unstable();
    counts.dedup();
    let mut variants: Vec<&str> = Vec::new();
    for c in curves {
        if !variants.contains(&c.variant.as_str()) {
            variants.push(&c.variant);
        }
    }
    let max_us = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .fold(10.0_f64, f64::max);
    let min_us = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .fold(f64::MAX, f64::min)
        .clamp(1.0, max_us);
    let y_lo = 10f64.powf(min_us.log10().floor());
    let y_hi = 10f64.powf(max_us.log10().ceil()).max(y_lo * 10.0);

    let panels = counts.len().max(1);
    let width = panels as f64 * PANEL_W;
    let height = PANEL_H + 30.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{}" y="18" text-anchor="middle" font-size="14" font-weight="bold">Publish-to-receive latency at 5,000 msg/s (lower is better)</text>"##,
        width / 2.0
    );
    // Legend.
    let mut lx = 12.0;
    for v in &variants {
        let _ = writeln!(
            s,
            r##"<line x1="{lx}" y1="36" x2="{}" y2="36" stroke="{}" stroke-width="2.5"/><text x="{}" y="40">{}</text>"##,
            lx + 22.0,
            colour(v),
            lx + 27.0,
            escape(v)
        );
        lx += 40.0 + v.len() as f64 * 6.2;
    }

    let plot_w = PANEL_W - MARGIN_L - MARGIN_R;
    let plot_h = PANEL_H - MARGIN_T - MARGIN_B + 30.0;
    let y_of = |us: f64| {
        let t = (us.max(y_lo).log10() - y_lo.log10()) / (y_hi.log10() - y_lo.log10());
        MARGIN_T + plot_h * (1.0 - t)
    };
    let x_of = |q: f64| MARGIN_L + plot_w * (nines(q) - nines(0.5)) / (5.0 - nines(0.5));
    for (i, &n) in counts.iter().enumerate() {
        let ox = i as f64 * PANEL_W;
        let _ = writeln!(s, r##"<g transform="translate({ox},0)">"##);
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{n} subscriber{}</text>"##,
            MARGIN_L + plot_w / 2.0,
            MARGIN_T - 8.0,
            if n == 1 { "" } else { "s" }
        );
        // Horizontal grid: powers of ten.
        let mut decade = y_lo;
        while decade <= y_hi * 1.001 {
            let y = y_of(decade);
            let _ = writeln!(
                s,
                r##"<line x1="{MARGIN_L}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#dddddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                MARGIN_L + plot_w,
                MARGIN_L - 4.0,
                y + 4.0,
                micros_label(decade)
            );
            decade *= 10.0;
        }
        // Vertical grid: percentiles.
        for (q, label) in [
            (0.5, "50%"),
            (0.9, "90%"),
            (0.99, "99%"),
            (0.999, "99.9%"),
            (0.9999, "99.99%"),
            (1.0, "max"),
        ] {
            let x = x_of(q);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{MARGIN_T}" x2="{x:.1}" y2="{:.1}" stroke="#eeeeee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
                MARGIN_T + plot_h,
                MARGIN_T + plot_h + 14.0
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{MARGIN_L}" y="{MARGIN_T}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999999"/>"##
        );
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{:.1}" text-anchor="middle" fill="#555555">percentile</text>"##,
            MARGIN_L + plot_w / 2.0,
            MARGIN_T + plot_h + 30.0
        );
        if i == 0 {
            let _ = writeln!(
                s,
                r##"<text x="14" y="{:.1}" text-anchor="middle" fill="#555555" transform="rotate(-90 14 {:.1})">latency</text>"##,
                MARGIN_T + plot_h / 2.0,
                MARGIN_T + plot_h / 2.0
            );
        }
        for c in curves.iter().filter(|c| c.subscribers == n) {
            let points: Vec<String> = c
                .points
                .iter()
                .map(|&(q, us)| format!("{:.1},{:.1}", x_of(q), y_of(us)))
                .collect();
            let _ = writeln!(
                s,
                r##"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"##,
                points.join(" "),
                colour(&c.variant)
            );
        }
        let _ = writeln!(s, "</g>");
    }
    let _ = writeln!(s, "</svg>");
    s
}

fn micros_label(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{} s", us / 1_000_000.0)
    } else if us >= 1_000.0 {
        format!("{} ms", us / 1_000.0)
    } else {
        format!("{us} µs")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_a_panel_per_count_and_a_line_per_curve() {
        let curve = |n, v: &str| LatencyCurve {
            subscribers: n,
            variant: v.into(),
            points: vec![(0.5, 80.0), (0.99, 200.0), (0.999, 900.0), (1.0, 3000.0)],
            samples: 100,
        };
        let svg = latency_chart(&[
            curve(1, "raw redis-rs"),
            curve(1, "hub (dedicated)"),
            curve(10, "raw redis-rs"),
        ]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("10 subscribers"));
        assert!(latency_chart(&[]).contains("</svg>"));
    }
}
