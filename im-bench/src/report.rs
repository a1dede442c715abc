//! Figures and how they are printed: one JSON object per line (`--json`), or a table for
//! humans at the end of a run.
//!
//! Every figure names its `target` (the server measured), `scenario`, `variant` (the size or
//! mode) and `metric`, and carries a `value` in one of four units. A figure measured beside a
//! bound (signatures per second for handshakes, the store's append rate for acknowledged
//! messages, the raw-send floor for room fan-out) also carries `bound` and `ratio` = value /
//! bound. These names are stable: BENCHMARKS.md and scripts read them.

use std::io::Write;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Bytes,
    Ms,
    PerS,
    Count,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::Bytes => "B",
            Unit::Ms => "ms",
            Unit::PerS => "/s",
            Unit::Count => "",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    pub target: String,
    pub scenario: String,
    pub variant: String,
    pub metric: String,
    pub value: f64,
    pub unit: Unit,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

impl Figure {
    /// One JSON object, no newline. Values are rounded to what the measurement can tell
    /// (three decimals), so the lines stay short and diffable.
    pub fn to_json_line(&self) -> String {
        let mut f = self.clone();
        f.value = round3(f.value);
        f.bound = f.bound.map(round3);
        f.ratio = f.ratio.map(round3);
        serde_json::to_string(&f).expect("a figure always serializes")
    }
}

fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        x
    }
}

/// Collects the figures of one run; prints each as a JSON line at once with `--json`, or all
/// of them as a table at the end.
pub struct Report {
    json: bool,
    target: String,
    scenario: String,
    figures: Vec<Figure>,
}

impl Report {
    pub fn new(json: bool, target: &str, scenario: &str) -> Self {
        Report {
            json,
            target: target.to_owned(),
            scenario: scenario.to_owned(),
            figures: Vec::new(),
        }
    }

    pub fn figures(&self) -> &[Figure] {
        &self.figures
    }

    /// Adds a plain figure.
    pub fn add(&mut self, variant: &str, metric: &str, value: f64, unit: Unit) {
        self.push(variant, metric, value, unit, None);
    }

    /// Adds a figure measured beside a bound; `ratio` is value / bound.
    pub fn add_bounded(&mut self, variant: &str, metric: &str, value: f64, unit: Unit, bound: f64) {
        self.push(variant, metric, value, unit, Some(bound));
    }

    fn push(&mut self, variant: &str, metric: &str, value: f64, unit: Unit, bound: Option<f64>) {
        let ratio = bound.and_then(|b| (b != 0.0 && b.is_finite()).then(|| value / b));
        let f = Figure {
            target: self.target.clone(),
            scenario: self.scenario.clone(),
            variant: variant.to_owned(),
            metric: metric.to_owned(),
            value,
            unit,
            bound,
            ratio,
        };
        if self.json {
            let mut out = std::io::stdout().lock();
            // A closed stdout (`| head`) is not an error worth a panic.
            let _ = writeln!(out, "{}", f.to_json_line());
            let _ = out.flush();
        } else {
            eprintln!("  {}", human_line(&f));
        }
        self.figures.push(f);
    }

    /// The table for humans (nothing with `--json`: the lines are already out).
    pub fn finish(&self) {
        if self.json {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{} {} ({} figures)",
            self.target,
            self.scenario,
            self.figures.len()
        );
        let _ = writeln!(
            out,
            "| variant | metric | value | bound | ratio |\n|---|---|---:|---:|---:|"
        );
        for f in &self.figures {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                f.variant,
                f.metric,
                fmt_value(f.value, f.unit),
                f.bound.map_or(String::new(), |b| fmt_value(b, f.unit)),
                f.ratio.map_or(String::new(), |r| format!("{r:.2}")),
            );
        }
    }
}

fn human_line(f: &Figure) -> String {
    let mut s = format!("{:<18} {:<28} {:>14}", f.variant, f.metric, fmt_value(f.value, f.unit));
    if let (Some(b), Some(r)) = (f.bound, f.ratio) {
        s.push_str(&format!("   bound {} ratio {r:.2}", fmt_value(b, f.unit)));
    }
    s
}

/// A value with its unit, at a precision that suits its size.
pub fn fmt_value(v: f64, unit: Unit) -> String {
    let num = match unit {
        Unit::Ms if v < 10.0 => format!("{v:.2}"),
        Unit::Ms if v < 100.0 => format!("{v:.1}"),
        _ if v.abs() >= 100.0 || v == v.trunc() => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    };
    let suffix = unit.suffix();
    if suffix.is_empty() {
        num
    } else {
        format!("{num} {suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_figure_is_one_flat_json_object_without_bound() {
        let mut r = Report::new(true, "im", "idle");
        r.add("conns=5000", "rss_per_conn", 2048.4567, Unit::Bytes);
        let line = r.figures()[0].to_json_line();
        assert_eq!(
            line,
            r#"{"target":"im","scenario":"idle","variant":"conns=5000","metric":"rss_per_conn","value":2048.457,"unit":"bytes"}"#
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_bounded_figure_carries_bound_and_ratio() {
        let mut r = Report::new(true, "im", "handshake");
        r.add_bounded("full", "handshakes", 180.0, Unit::PerS, 200.0);
        let v: serde_json::Value = serde_json::from_str(&r.figures()[0].to_json_line()).unwrap();
        assert_eq!(v["unit"], "per_s");
        assert_eq!(v["bound"], 200.0);
        assert_eq!(v["ratio"], 0.9);
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        for k in [
            "target", "scenario", "variant", "metric", "value", "unit", "bound", "ratio",
        ] {
            assert!(keys.iter().any(|x| x == k), "missing {k}");
        }
    }

    #[test]
    fn a_zero_bound_gives_no_ratio() {
        let mut r = Report::new(true, "im", "dm");
        r.add_bounded("max", "acked", 5.0, Unit::PerS, 0.0);
        assert_eq!(r.figures()[0].ratio, None);
        assert!(!r.figures()[0].to_json_line().contains("ratio"));
    }

    #[test]
    fn units_print_in_their_json_names() {
        for (u, name) in [
            (Unit::Bytes, "bytes"),
            (Unit::Ms, "ms"),
            (Unit::PerS, "per_s"),
            (Unit::Count, "count"),
        ] {
            assert_eq!(serde_json::to_value(u).unwrap(), name);
        }
    }
}
