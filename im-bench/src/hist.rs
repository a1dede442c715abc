//! Latency histograms (HDR, microseconds, 3 significant digits) and their transport between
//! processes: a worker serializes its histogram (V2 format, deflated, base64 on one line), the
//! parent deserializes and adds them up, so percentiles of a run split over processes are
//! exact, not averages of percentiles.

use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

/// Longest latency a histogram holds; anything longer is clamped to it (and is a failure by
/// any goal here anyway).
const MAX_US: u64 = 600_000_000;

#[derive(Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Latency(n={}, p50={:.3} ms)", self.count(), self.quantile_ms(0.5))
    }
}

impl Latency {
    pub fn new() -> Self {
        Latency(Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"))
    }

    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, MAX_US);
        self.0.record(us).expect("value within bounds");
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at quantile `q` (0.5, 0.99, 0.999) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn merge(&mut self, other: &Latency) {
        self.0.add(&other.0).expect("histograms with the same bounds");
    }

    /// One line of base64: the V2 deflate encoding of the histogram.
    pub fn serialize(&self) -> String {
        let mut buf = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&self.0, &mut buf)
            .expect("serializing into memory");
        STANDARD.encode(buf)
    }

    pub fn deserialize(s: &str) -> Result<Self> {
        let bytes = STANDARD.decode(s.trim()).context("histogram: not base64")?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(|e| anyhow::anyhow!("histogram: {e:?}"))?;
        // Re-home it into our bounds, so that merging never fails on a narrower range.
        let mut l = Latency::new();
        l.0.add(&h).map_err(|e| anyhow::anyhow!("histogram: {e:?}"))?;
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn merging_serialized_histograms_equals_recording_into_one() {
        let (mut a, mut b, mut all) = (Latency::new(), Latency::new(), Latency::new());
        for i in 1..=900 {
            a.record(ms(i));
            all.record(ms(i));
        }
        for i in 0..100 {
            b.record(ms(5_000 + i));
            all.record(ms(5_000 + i));
        }
        let mut merged = Latency::deserialize(&a.serialize()).unwrap();
        merged.merge(&Latency::deserialize(&b.serialize()).unwrap());
        assert_eq!(merged.count(), 1000);
        for q in [0.5, 0.9, 0.99, 0.999] {
            assert_eq!(merged.quantile_ms(q), all.quantile_ms(q), "q={q}");
        }
        // The slow tail of one worker shows in the merged p99, as it must.
        assert!(merged.quantile_ms(0.99) >= 5_000.0);
    }

    #[test]
    fn the_serialized_form_is_one_line() {
        let mut a = Latency::new();
        a.record(ms(3));
        let s = a.serialize();
        assert!(!s.contains('\n') && !s.is_empty());
        assert!(Latency::deserialize("not base64!").is_err());
    }

    #[test]
    fn empty_and_out_of_range_values() {
        let mut a = Latency::new();
        assert_eq!(a.quantile_ms(0.99), 0.0);
        a.record(Duration::ZERO);
        a.record(Duration::from_secs(10_000));
        assert_eq!(a.count(), 2);
        assert!(a.quantile_ms(1.0) >= 599_000.0);
    }
}
