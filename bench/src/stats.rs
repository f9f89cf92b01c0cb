//! Medians, spreads and paired ratios.
//!
//! Every comparison is measured as pairs: repetition `i` runs both sides
//! back to back (the side that goes first alternates), and its ratio is
//! `a_i / b_i`. The report gives the median of those ratios with their
//! [min, max], and the median of each side's absolute figures.

use std::fmt;

/// Several measurements of one quantity.
#[derive(Clone, Debug, Default)]
pub struct Sample(pub Vec<f64>);

impl Sample {
    pub fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        v
    }

    pub fn median(&self) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Two sides measured in alternation, and the ratio of each pair.
#[derive(Clone, Debug, Default)]
pub struct Paired {
    pub a: Sample,
    pub b: Sample,
    pub ratio: Sample,
}

impl Paired {
    /// Runs `reps` pairs; even repetitions run `a` first, odd ones `b`.
    pub fn measure(reps: usize, mut a: impl FnMut() -> f64, mut b: impl FnMut() -> f64) -> Paired {
        let mut p = Paired::default();
        for i in 0..reps {
            let (x, y) = if i % 2 == 0 {
                let x = a();
                (x, b())
            } else {
                let y = b();
                (a(), y)
            };
            p.a.push(x);
            p.b.push(y);
            p.ratio.push(x / y);
        }
        p
    }

    /// The ratio as `1.003 [0.991, 1.010]`.
    pub fn ratio_text(&self) -> String {
        Spread(&self.ratio, 3).to_string()
    }
}

/// A sample printed as `median [min, max]` with `decimals` digits.
pub struct Spread<'a>(pub &'a Sample, pub usize);

impl fmt::Display for Spread<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.1;
        if self.0.len() <= 1 {
            write!(f, "{:.d$}", self.0.median())
        } else {
            write!(f, "{:.d$} [{:.d$}, {:.d$}]", self.0.median(), self.0.min(), self.0.max())
        }
    }
}

/// Milliseconds with a sensible number of digits.
pub fn ms(seconds: f64) -> String {
    let ms = seconds * 1e3;
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1e3)
    } else if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1e3)
    }
}

/// A time sample in seconds as `median [min, max]` in ms.
pub fn ms_spread(s: &Sample) -> String {
    if s.len() <= 1 {
        ms(s.median())
    } else {
        format!("{} [{}, {}]", ms(s.median()), ms(s.min()), ms(s.max()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_pairs() {
        let s = Sample(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.median(), s.min(), s.max()), (2.0, 1.0, 3.0));
        assert_eq!(Sample(vec![1.0, 2.0, 3.0, 4.0]).median(), 2.5);
        let mut order = Vec::new();
        let order_cell = std::cell::RefCell::new(&mut order);
        let p = Paired::measure(
            2,
            || {
                order_cell.borrow_mut().push('a');
                2.0
            },
            || {
                order_cell.borrow_mut().push('b');
                1.0
            },
        );
        assert_eq!(order, vec!['a', 'b', 'b', 'a']);
        assert_eq!(p.ratio.median(), 2.0);
    }
}
